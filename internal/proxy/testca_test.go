package proxy_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// testCA is a throwaway SPIFFE CA for these tests (until the shared test CA lands):
// a self-signed ECDSA root issuing leaf SVIDs for any ID, valid or expired.
type testCA struct {
	td     spiffeid.TrustDomain
	cert   *x509.Certificate
	key    crypto.Signer
	serial int64
	mu     sync.Mutex
}

func newTestCA(tb testing.TB, td string) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{td}, CommonName: "test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: td}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &testCA{td: spiffeid.RequireTrustDomainFromString(td), cert: cert, key: key, serial: 1}
}

func (ca *testCA) bundle() *x509bundle.Bundle { return ca.bundleFor(ca.td) }

// bundleFor is the CA's root as the bundle of trust domain td: one root may sign
// several trust domains (a mesh renaming its trust domain keeps its root).
func (ca *testCA) bundleFor(td spiffeid.TrustDomain) *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.cert})
}

func (ca *testCA) id(path string) spiffeid.ID {
	return spiffeid.RequireFromPath(ca.td, path)
}

// svid issues a leaf for td+path valid from notBefore to notAfter (zero: now±1h).
func (ca *testCA) svid(tb testing.TB, path string, notBefore, notAfter time.Time) *x509svid.SVID {
	tb.Helper()
	return ca.svidFor(tb, ca.id(path), notBefore, notAfter)
}

// svidFor issues a leaf for id, in any trust domain, valid from notBefore to notAfter
// (zero: now±1h).
func (ca *testCA) svidFor(tb testing.TB, id spiffeid.ID, notBefore, notAfter time.Time) *x509svid.SVID {
	tb.Helper()
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(time.Hour)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

// certSource is a CertSource holding one SVID and bundle; set rotates.
type certSource struct {
	mu      sync.Mutex
	svid    *x509svid.SVID
	bundle  *x509bundle.Bundle
	updated chan struct{}
}

func newCertSource(svid *x509svid.SVID, b *x509bundle.Bundle) *certSource {
	return &certSource{svid: svid, bundle: b, updated: make(chan struct{}, 1)}
}

func (s *certSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svid, nil
}

func (s *certSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bundle.GetX509BundleForTrustDomain(td)
}

func (s *certSource) Updated() <-chan struct{} { return s.updated }

func (s *certSource) set(svid *x509svid.SVID) {
	s.mu.Lock()
	s.svid = svid
	s.mu.Unlock()
	select {
	case s.updated <- struct{}{}:
	default:
	}
}
