package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/pki"
)

var (
	t0  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	web = identity.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
)

func newRootAuthority(t testing.TB, mut func(*ca.Config)) (*ca.Authority, *x509.Certificate, ca.Signer) {
	t.Helper()
	root, s, err := ca.NewRoot("cluster.local", 48*time.Hour, t0.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cfg := ca.Config{TrustDomain: "cluster.local", Signer: s, Bundle: []*x509.Certificate{root}, Now: func() time.Time { return t0 }}
	if mut != nil {
		mut(&cfg)
	}
	a, err := ca.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, root, s
}

func mustCSR(t testing.TB, kt pki.KeyType, asks string) []byte {
	t.Helper()
	key, err := pki.GenerateKey(kt)
	if err != nil {
		t.Fatal(err)
	}
	var id spiffeid.ID
	if asks != "" {
		id = spiffeid.RequireFromString(asks)
	}
	b, err := pki.CreateCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignCSR(t *testing.T) {
	a, root, _ := newRootAuthority(t, func(c *ca.Config) { c.MaxTTL = 36 * time.Hour })
	for _, tc := range []struct {
		name         string
		kt           pki.KeyType
		asks         string
		ttl          time.Duration
		wantLifetime time.Duration // NotAfter - now
	}{
		{"default ttl", pki.KeyECP256, "", 0, ca.DefaultWorkloadTTL},
		{"requested ttl honoured", pki.KeyECP384, "", time.Hour, time.Hour},
		{"ttl capped at max", pki.KeyRSA2048, "", 100 * time.Hour, 36 * time.Hour},
		{"csr asks for another identity", pki.KeyECP256, "spiffe://cluster.local/ns/kube-system/sa/admin", time.Hour, time.Hour},
		{"csr asks for another trust domain", pki.KeyECP256, "spiffe://evil.example/ns/default/sa/web", time.Hour, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := a.SignCSR(context.Background(), mustCSR(t, tc.kt, tc.asks), web, tc.ttl)
			if err != nil {
				t.Fatalf("SignCSR = %v", err)
			}
			if len(chain) != 1 {
				t.Fatalf("chain has %d certs, want only the leaf (the signer is the root)", len(chain))
			}
			leaf := chain[0]
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != web.String() {
				t.Errorf("URIs = %v, want only %s", leaf.URIs, web)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.Subject.CommonName != "" {
				t.Errorf("leaf carries names the CSR asked for: %v %v %q", leaf.DNSNames, leaf.IPAddresses, leaf.Subject)
			}
			if got := leaf.NotAfter.Sub(t0); got != tc.wantLifetime {
				t.Errorf("lifetime = %v, want %v", got, tc.wantLifetime)
			}
			if got := t0.Sub(leaf.NotBefore); got != pki.Backdate {
				t.Errorf("NotBefore back-dated by %v, want %v", got, pki.Backdate)
			}
			if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
				t.Errorf("leaf IsCA=%v KeyUsage=%v", leaf.IsCA, leaf.KeyUsage)
			}
			for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := pki.VerifyChain(leaf, nil, []*x509.Certificate{root}, t0); err != nil {
					t.Fatalf("leaf does not verify: %v", err)
				}
				opts := x509.VerifyOptions{Roots: x509.NewCertPool(), CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{eku}}
				opts.Roots.AddCert(root)
				if _, err := leaf.Verify(opts); err != nil {
					t.Errorf("leaf not valid for %v: %v", eku, err)
				}
			}
		})
	}
}

func TestSignRefusals(t *testing.T) {
	a, _, _ := newRootAuthority(t, func(c *ca.Config) {
		c.Validators = []ca.Validator{ca.ValidatorFunc(func(r *ca.Request) error {
			if r.Identity.Namespace == "quarantine" {
				return errors.New("namespace quarantine may not get certificates")
			}
			return nil
		})}
	})
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	good := mustCSR(t, pki.KeyECP256, "")
	block, _ := pem.Decode(good)
	block.Bytes[len(block.Bytes)-1] ^= 1 // inside the signature
	forged := pem.EncodeToMemory(block)
	for _, tc := range []struct {
		name string
		sign func() error
		want error
	}{
		{"P-224 key", func() error {
			_, err := a.Sign(context.Background(), ca.Request{PublicKey: p224.Public(), Identity: web})
			return err
		}, ca.ErrBadRequest},
		{"RSA 1024 key", func() error {
			_, err := a.Sign(context.Background(), ca.Request{PublicKey: rsa1024.Public(), Identity: web})
			return err
		}, ca.ErrBadRequest},
		{"forged CSR signature", func() error {
			_, err := a.SignCSR(context.Background(), forged, web, 0)
			return err
		}, ca.ErrBadRequest},
		{"foreign trust domain", func() error {
			_, err := a.SignCSR(context.Background(), good, identity.Identity{TrustDomain: "other.example", Namespace: "a", ServiceAccount: "b"}, 0)
			return err
		}, ca.ErrNotPermitted},
		{"not a CSR", func() error {
			_, err := a.SignCSR(context.Background(), []byte("hello"), web, 0)
			return err
		}, ca.ErrBadRequest},
		{"invalid identity", func() error {
			_, err := a.SignCSR(context.Background(), good, identity.Identity{TrustDomain: "cluster.local"}, 0)
			return err
		}, ca.ErrNotPermitted},
		{"custom validator fails closed", func() error {
			_, err := a.SignCSR(context.Background(), good, identity.Identity{TrustDomain: "cluster.local", Namespace: "quarantine", ServiceAccount: "x"}, 0)
			return err
		}, ca.ErrNotPermitted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.sign(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestIntermediateSignerAndMultiRootBundle(t *testing.T) {
	root, rs, err := ca.NewRoot("cluster.local", 48*time.Hour, t0.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	nextRoot, _, _ := ca.NewRoot("cluster.local", 48*time.Hour, t0.Add(-time.Hour))
	ik, _ := pki.GenerateKey(pki.KeyECP256)
	inter, err := pki.CreateIntermediate(root, rs.Key, ik.Public(), pki.CAOptions{CommonName: "inter", TTL: 2 * time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.New(ca.Config{
		TrustDomain: "cluster.local",
		Signer:      ca.Signer{Cert: inter, Key: ik},
		Bundle:      []*x509.Certificate{nextRoot, root},
		Now:         func() time.Time { return t0 },
	})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.SignCSR(context.Background(), mustCSR(t, pki.KeyECP256, ""), web, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || !chain[1].Equal(inter) {
		t.Fatalf("chain = %d certs, want [leaf, intermediate]", len(chain))
	}
	// Lifetime capped at the intermediate's expiry, not the 24h default.
	if !chain[0].NotAfter.Equal(inter.NotAfter) {
		t.Errorf("leaf NotAfter %v, want the signer's %v", chain[0].NotAfter, inter.NotAfter)
	}
	if _, err := pki.VerifyChain(chain[0], chain[1:], a.TrustBundle(), t0); err != nil {
		t.Errorf("chain does not verify against the bundle: %v", err)
	}
	if len(a.TrustBundle()) != 2 || !a.Root().Equal(root) {
		t.Errorf("bundle has %d roots, Root()=%q; want 2 and the signing root", len(a.TrustBundle()), a.Root().Subject)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	root, s, _ := ca.NewRoot("cluster.local", 48*time.Hour, t0.Add(-time.Hour))
	other, os2, _ := ca.NewRoot("cluster.local", 48*time.Hour, t0.Add(-time.Hour))
	now := func() time.Time { return t0 }
	for _, tc := range []struct {
		name string
		cfg  ca.Config
		want string
	}{
		{"key mismatch", ca.Config{TrustDomain: "cluster.local", Signer: ca.Signer{Cert: root, Key: os2.Key}, Bundle: []*x509.Certificate{root}, Now: now}, "does not match"},
		{"signer outside bundle", ca.Config{TrustDomain: "cluster.local", Signer: s, Bundle: []*x509.Certificate{other}, Now: now}, "does not chain"},
		{"empty bundle", ca.Config{TrustDomain: "cluster.local", Signer: s, Now: now}, "bundle is empty"},
		{"bad trust domain", ca.Config{TrustDomain: "Bad Domain", Signer: s, Bundle: []*x509.Certificate{root}, Now: now}, "trust domain"},
		{"default above max", ca.Config{TrustDomain: "cluster.local", Signer: s, Bundle: []*x509.Certificate{root}, DefaultTTL: 2 * time.Hour, MaxTTL: time.Hour, Now: now}, "exceeds"},
		{"expired signer", ca.Config{TrustDomain: "cluster.local", Signer: s, Bundle: []*x509.Certificate{root}, Now: func() time.Time { return t0.Add(100 * time.Hour) }}, "does not chain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ca.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadOrCreateRoot(t *testing.T) {
	dir := t.TempDir()
	s1, created, err := ca.LoadOrCreateRoot(dir, "cluster.local", t0)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateRoot = created %v, %v; want created", created, err)
	}
	keyPath := filepath.Join(dir, ca.SelfSignedDir, ca.SelfSignedKeyFile)
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("root key %s: %v, mode %v; want 0600", keyPath, err, fi.Mode().Perm())
	}
	if s1.Cert.NotAfter.Sub(t0) != ca.RootTTL || len(s1.Cert.URIs) != 1 || s1.Cert.URIs[0].String() != "spiffe://cluster.local" {
		t.Errorf("root lifetime %v URIs %v", s1.Cert.NotAfter.Sub(t0), s1.Cert.URIs)
	}
	s2, created, err := ca.LoadOrCreateRoot(dir, "cluster.local", t0.Add(time.Hour))
	if err != nil || created || !s2.Cert.Equal(s1.Cert) {
		t.Fatalf("second LoadOrCreateRoot = created %v, %v, same root %v; want the same root reused", created, err, s2.Cert != nil && s2.Cert.Equal(s1.Cert))
	}
	if _, _, err := ca.LoadOrCreateRoot(dir, "cluster.local", t0.Add(ca.RootTTL+time.Hour)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired root: %v, want error mentioning expiry", err)
	}
	os.Remove(keyPath)
	if _, _, err := ca.LoadOrCreateRoot(dir, "cluster.local", t0); err == nil || !strings.Contains(err.Error(), "key") {
		t.Errorf("certificate without key: %v, want error", err)
	}
	// A lone key (crash before the certificate was written) is replaced.
	dir2 := t.TempDir()
	os.MkdirAll(filepath.Join(dir2, ca.SelfSignedDir), 0o700)
	os.WriteFile(filepath.Join(dir2, ca.SelfSignedDir, ca.SelfSignedKeyFile), []byte("half"), 0o600)
	if _, created, err := ca.LoadOrCreateRoot(dir2, "cluster.local", t0); err != nil || !created {
		t.Errorf("lone key: created %v, %v; want a new root", created, err)
	}
}

// BenchmarkSignCSR measures in-process signing throughput for P-256 workload keys
// (includes the CSR signature check, as the service does).
func BenchmarkSignCSR(b *testing.B) {
	root, s, err := ca.NewRoot("cluster.local", ca.RootTTL, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	a, err := ca.New(ca.Config{TrustDomain: "cluster.local", Signer: s, Bundle: []*x509.Certificate{root}})
	if err != nil {
		b.Fatal(err)
	}
	csr := mustCSR(b, pki.KeyECP256, "")
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.SignCSR(ctx, csr, web, time.Hour); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "certs/s")
}
