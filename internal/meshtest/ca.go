package meshtest

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/pki"
)

// CA is a test certificate authority built on the real ca.Authority. Its root is
// back-dated a year so that it can also issue certificates that are already expired. Two
// CAs from NewCA never trust each other: use a second one for "foreign CA" cases.
type CA struct {
	TrustDomain string
	Root        *x509.Certificate
	Signer      ca.Signer
}

// NewCA returns a fresh self-signed test CA for trustDomain (e.g. "cluster.local").
func NewCA(tb testing.TB, trustDomain string) *CA {
	tb.Helper()
	root, s, err := ca.NewRoot(trustDomain, 20*365*24*time.Hour, time.Now().Add(-365*24*time.Hour))
	if err != nil {
		tb.Fatalf("meshtest.NewCA(%q): %v", trustDomain, err)
	}
	return &CA{TrustDomain: trustDomain, Root: root, Signer: s}
}

// ID returns the identity for namespace ns and service account sa in the CA's trust domain.
func (c *CA) ID(ns, sa string) identity.Identity {
	return identity.Identity{TrustDomain: c.TrustDomain, Namespace: ns, ServiceAccount: sa}
}

// Authority returns a real ca.Authority over this CA whose clock reads now.
func (c *CA) Authority(tb testing.TB, now time.Time) *ca.Authority {
	tb.Helper()
	a, err := ca.New(ca.Config{
		TrustDomain: c.TrustDomain,
		Signer:      c.Signer,
		Bundle:      []*x509.Certificate{c.Root},
		MaxTTL:      10 * 365 * 24 * time.Hour,
		Now:         func() time.Time { return now },
	})
	if err != nil {
		tb.Fatalf("meshtest: CA authority: %v", err)
	}
	return a
}

// Cert is an issued workload certificate with its key.
type Cert struct {
	Key   crypto.Signer
	Leaf  *x509.Certificate
	Chain []*x509.Certificate // Leaf first, no root
	// CertPEM is Chain in PEM; KeyPEM is the PKCS#8 key.
	CertPEM, KeyPEM []byte
}

// TLSCertificate returns c for a tls.Config.
func (c *Cert) TLSCertificate() tls.Certificate {
	t := tls.Certificate{PrivateKey: c.Key, Leaf: c.Leaf}
	for _, x := range c.Chain {
		t.Certificate = append(t.Certificate, x.Raw)
	}
	return t
}

// WriteFiles writes cert.pem and key.pem (0600) into dir and returns their paths.
func (c *Cert) WriteFiles(tb testing.TB, dir string) (certPath, keyPath string) {
	tb.Helper()
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, c.CertPEM, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(keyPath, c.KeyPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	return certPath, keyPath
}

// IssueOptions tune IssueWith. The zero value issues a P-256 certificate valid from now
// for ca.DefaultWorkloadTTL.
type IssueOptions struct {
	KeyType  pki.KeyType   // default pki.KeyECP256
	Now      time.Time     // issuance time; default time.Now()
	TTL      time.Duration // default 24h
	DNSNames []string
}

// Issue returns a certificate for id valid from now for ttl (24h when zero).
func (c *CA) Issue(tb testing.TB, id identity.Identity, ttl time.Duration) *Cert {
	tb.Helper()
	return c.IssueWith(tb, id, IssueOptions{TTL: ttl})
}

// IssueExpired returns a certificate for id that expired an hour ago.
func (c *CA) IssueExpired(tb testing.TB, id identity.Identity) *Cert {
	tb.Helper()
	return c.IssueWith(tb, id, IssueOptions{Now: time.Now().Add(-2 * time.Hour), TTL: time.Hour})
}

// IssueWith issues a certificate for id as opts describe.
func (c *CA) IssueWith(tb testing.TB, id identity.Identity, opts IssueOptions) *Cert {
	tb.Helper()
	if opts.KeyType == 0 {
		opts.KeyType = pki.KeyECP256
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	key, err := pki.GenerateKey(opts.KeyType)
	if err != nil {
		tb.Fatal(err)
	}
	chain, err := c.Authority(tb, opts.Now).Sign(context.Background(), ca.Request{
		PublicKey: key.Public(), Identity: id, TTL: opts.TTL, DNSNames: opts.DNSNames,
	})
	if err != nil {
		tb.Fatalf("meshtest: issue %s: %v", id, err)
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		tb.Fatal(err)
	}
	return &Cert{Key: key, Leaf: chain[0], Chain: chain, CertPEM: pki.EncodeCertsPEM(chain...), KeyPEM: keyPEM}
}

// Pool returns a pool holding the CA's root.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Root)
	return p
}

// RootPEM returns the root certificate in PEM.
func (c *CA) RootPEM() []byte { return pki.EncodeCertsPEM(c.Root) }

// WriteRoot writes root-cert.pem into dir and returns its path.
func (c *CA) WriteRoot(tb testing.TB, dir string) string {
	tb.Helper()
	p := filepath.Join(dir, pki.RootCertFile)
	if err := os.WriteFile(p, c.RootPEM(), 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// WriteIntermediateDir creates an intermediate CA under this root and writes it as an
// Istio plug-in CA directory (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem) in a
// new temporary directory, whose path it returns.
func (c *CA) WriteIntermediateDir(tb testing.TB) string {
	tb.Helper()
	key, err := pki.GenerateKey(pki.KeyECP256)
	if err != nil {
		tb.Fatal(err)
	}
	inter, err := pki.CreateIntermediate(c.Root, c.Signer.Key, key.Public(), pki.CAOptions{
		CommonName: "meshtest intermediate", Organization: c.TrustDomain, TTL: 365 * 24 * time.Hour, Now: time.Now(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	d := &pki.CADir{Cert: inter, Key: key, Chain: []*x509.Certificate{inter, c.Root}, Roots: []*x509.Certificate{c.Root}}
	if err := pki.WriteCADir(dir, d); err != nil {
		tb.Fatal(err)
	}
	return dir
}
