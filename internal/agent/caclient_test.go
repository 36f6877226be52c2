package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/pki"
)

func pemOf(certs ...*x509.Certificate) string { return string(pki.EncodeCertsPEM(certs...)) }

// chainFixture issues a certificate for default/web with a fresh key, directly under
// the root and under an intermediate.
type chainFixture struct {
	root, other  *testRoot
	key          crypto.Signer
	leaf         *x509.Certificate // signed by the root
	interLeaf    *x509.Certificate // signed by inter
	inter        *x509.Certificate
	noSPIFFELeaf *x509.Certificate
}

func newChainFixture(t testing.TB) *chainFixture {
	t.Helper()
	f := &chainFixture{root: newTestRoot(t, "cluster.local"), other: newTestRoot(t, "cluster.local")}
	key, err := pki.GenerateKey(pki.KeyECP256)
	if err != nil {
		t.Fatal(err)
	}
	f.key = key
	id := identity.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
	sign := func(s ca.Signer) []*x509.Certificate {
		a, err := ca.New(ca.Config{TrustDomain: "cluster.local", Signer: s, Bundle: []*x509.Certificate{f.root.cert}})
		if err != nil {
			t.Fatal(err)
		}
		chain, err := a.Sign(context.Background(), ca.Request{PublicKey: key.Public(), Identity: id, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return chain
	}
	f.leaf = sign(f.root.signer)[0]

	interKey, err := pki.GenerateKey(pki.KeyECP256)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := pki.CreateIntermediate(f.root.cert, f.root.signer.Key, interKey.Public(), pki.CAOptions{
		CommonName: "test intermediate", Organization: "cluster.local", TTL: 24 * time.Hour, Now: time.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	chain := sign(ca.Signer{Cert: inter, Key: interKey})
	f.interLeaf, f.inter = chain[0], chain[1]

	// A CA certificate stands in for a leaf without a SPIFFE ID.
	f.noSPIFFELeaf = f.inter
	return f
}

func TestParseCertChain(t *testing.T) {
	f := newChainFixture(t)
	otherKey, _ := pki.GenerateKey(pki.KeyECP256)
	now := time.Now()
	for _, tc := range []struct {
		name      string
		chain     []string
		key       crypto.Signer
		wantErr   string
		wantPath  int
		wantRoots int
	}{
		{"leaf and root", []string{pemOf(f.leaf), pemOf(f.root.cert)}, f.key, "", 1, 1},
		{"leaf, intermediate, root", []string{pemOf(f.interLeaf), pemOf(f.inter), pemOf(f.root.cert)}, f.key, "", 2, 1},
		{"several roots in the last entry", []string{pemOf(f.leaf), pemOf(f.root.cert, f.other.cert)}, f.key, "", 1, 2},
		{"several roots as separate entries", []string{pemOf(f.leaf), pemOf(f.other.cert), pemOf(f.root.cert)}, f.key, "", 1, 2},
		{"leaf alone", []string{pemOf(f.leaf)}, f.key, "1 entries", 0, 0},
		{"empty", nil, f.key, "0 entries", 0, 0},
		{"garbage", []string{pemOf(f.leaf), "not PEM"}, f.key, "cert_chain[1]", 0, 0},
		{"no root", []string{pemOf(f.interLeaf), pemOf(f.inter)}, f.key, "no self-signed root", 0, 0},
		{"foreign root", []string{pemOf(f.leaf), pemOf(f.other.cert)}, f.key, "unknown authority", 0, 0},
		{"missing intermediate", []string{pemOf(f.interLeaf), pemOf(f.root.cert)}, f.key, "unknown authority", 0, 0},
		{"not our key", []string{pemOf(f.leaf), pemOf(f.root.cert)}, otherKey, "not for the key", 0, 0},
		{"leaf without SPIFFE ID", []string{pemOf(f.noSPIFFELeaf), pemOf(f.root.cert)}, f.key, "leaf certificate", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svid, bundle, err := parseCertChain(tc.chain, tc.key, now)
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseCertChain(%s) = %v, want ErrBadResponse containing %q", tc.name, err, tc.wantErr)
				}
				if svid != nil || bundle != nil {
					t.Fatalf("parseCertChain(%s) returned values with an error", tc.name)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseCertChain(%s) = %v", tc.name, err)
			}
			if len(svid.Certificates) != tc.wantPath || len(bundle.X509Authorities()) != tc.wantRoots {
				t.Errorf("parseCertChain(%s): %d chain certs and %d roots, want %d and %d", tc.name, len(svid.Certificates), len(bundle.X509Authorities()), tc.wantPath, tc.wantRoots)
			}
			if svid.ID.String() != "spiffe://cluster.local/ns/default/sa/web" || bundle.TrustDomain().String() != "cluster.local" {
				t.Errorf("parseCertChain(%s) = %s in %s", tc.name, svid.ID, bundle.TrustDomain())
			}
			if svid.PrivateKey != tc.key {
				t.Error("the SVID does not carry the agent's own Signer")
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		_, _, err := parseCertChain([]string{pemOf(f.leaf), pemOf(f.root.cert)}, f.key, f.leaf.NotAfter.Add(time.Second))
		if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("parseCertChain after NotAfter = %v, want an expiry error", err)
		}
	})
}

// FuzzParseCertChain: whatever the CA sends, an accepted answer is an SVID for the
// agent's key that verifies against the bundle returned with it; a refused one is
// ErrBadResponse and yields nothing.
func FuzzParseCertChain(f *testing.F) {
	fx := newChainFixture(f)
	now := time.Now()
	sep := "\x00"
	for _, seed := range [][]string{
		{pemOf(fx.leaf), pemOf(fx.root.cert)},
		{pemOf(fx.interLeaf), pemOf(fx.inter), pemOf(fx.root.cert)},
		{pemOf(fx.leaf), pemOf(fx.root.cert, fx.other.cert)},
		{pemOf(fx.leaf), pemOf(fx.other.cert)},
		{pemOf(fx.leaf)},
		{"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", ""},
	} {
		f.Add(strings.Join(seed, sep))
	}
	f.Fuzz(func(t *testing.T, joined string) {
		chain := strings.Split(joined, sep)
		svid, bundle, err := parseCertChain(chain, fx.key, now)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) || svid != nil || bundle != nil {
				t.Fatalf("refusal %v: not ErrBadResponse or returned values", err)
			}
			return
		}
		leaf := svid.Certificates[0]
		if !pki.KeyMatchesCert(fx.key, leaf) {
			t.Fatal("accepted a certificate for another key")
		}
		if _, err := pki.VerifyChain(leaf, svid.Certificates[1:], bundle.X509Authorities(), now); err != nil {
			t.Fatalf("accepted a chain that does not verify against its bundle: %v", err)
		}
		if id, err := pki.SPIFFEIDFromCert(leaf); err != nil || id != svid.ID || id.TrustDomain() != bundle.TrustDomain() {
			t.Fatalf("accepted ID %v (err %v) does not match the SVID %s / bundle %s", id, err, svid.ID, bundle.TrustDomain())
		}
	})
}

func TestCAServerName(t *testing.T) {
	for _, tc := range []struct{ addr, want, wantErr string }{
		{"127.0.0.1:15012", "127.0.0.1", ""},
		{"[::1]:15012", "::1", ""},
		{"localhost:15012", "istiod.istio-system.svc", ""},
		{"cp.mesh.internal:15012", "cp.mesh.internal", ""},
		{"cp.mesh.internal", "", "HOST:PORT"},
	} {
		got, err := caServerName(tc.addr)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("caServerName(%q) = %q, %v, want error containing %q", tc.addr, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("caServerName(%q) = %q, %v, want %q", tc.addr, got, err, tc.want)
		}
	}
}

// BenchmarkParseCertChain measures checking a CA answer (leaf, intermediate, root).
func BenchmarkParseCertChain(b *testing.B) {
	f := newChainFixture(b)
	chain := []string{pemOf(f.interLeaf), pemOf(f.inter), pemOf(f.root.cert)}
	now := time.Now()
	for b.Loop() {
		if _, _, err := parseCertChain(chain, f.key, now); err != nil {
			b.Fatal(err)
		}
	}
}
