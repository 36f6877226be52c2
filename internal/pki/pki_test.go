package pki_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/pki"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustKey(t testing.TB, kt pki.KeyType) *ecdsa.PrivateKey {
	t.Helper()
	k, err := pki.GenerateKey(kt)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ecdsa.PrivateKey)
}

func mustRoot(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k := mustKey(t, pki.KeyECP256)
	c, err := pki.CreateRoot(k, pki.CAOptions{CommonName: "test root", Organization: "meshguard", TrustDomain: "cluster.local", TTL: 24 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func TestKeyTypes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want pki.KeyType
		desc string
	}{
		{"ec-p256", pki.KeyECP256, "ECDSA P-256"},
		{"ec-p384", pki.KeyECP384, "ECDSA P-384"},
		{"rsa-2048", pki.KeyRSA2048, "RSA 2048"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			kt, err := pki.ParseKeyType(tc.in)
			if err != nil || kt != tc.want || kt.String() != tc.in {
				t.Fatalf("ParseKeyType(%q) = %v, %v; want %v", tc.in, kt, err, tc.want)
			}
			key, err := pki.GenerateKey(kt)
			if err != nil {
				t.Fatal(err)
			}
			if got := pki.DescribePublicKey(key.Public()); got != tc.desc {
				t.Errorf("DescribePublicKey = %q, want %q", got, tc.desc)
			}
			if err := pki.CheckPublicKey(key.Public()); err != nil {
				t.Errorf("CheckPublicKey(%s) = %v", tc.desc, err)
			}
			pemKey, err := pki.EncodeKeyPEM(key)
			if err != nil {
				t.Fatal(err)
			}
			back, err := pki.ParseKeyPEM(pemKey)
			if err != nil {
				t.Fatalf("ParseKeyPEM(EncodeKeyPEM(%s)) = %v", tc.desc, err)
			}
			if !back.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Errorf("key round trip changed the key")
			}
		})
	}
	if _, err := pki.ParseKeyType("ed25519"); err == nil || !strings.Contains(err.Error(), "ec-p256") {
		t.Errorf("ParseKeyType(ed25519) = %v, want error listing the choices", err)
	}
}

func TestCheckPublicKeyRefuses(t *testing.T) {
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	for name, pub := range map[string]any{"P-224": p224.Public(), "RSA 1024": rsa1024.Public(), "nil": nil} {
		if err := pki.CheckPublicKey(pub); !errors.Is(err, pki.ErrUnsupportedKey) {
			t.Errorf("CheckPublicKey(%s) = %v, want ErrUnsupportedKey", name, err)
		}
	}
}

func TestParseKeyPEMLegacyFormats(t *testing.T) {
	ec := mustKey(t, pki.KeyECP256)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, tc := range []struct {
		name, in, wantErr string
	}{
		{"sec1 with params", "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" + string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})), ""},
		{"pkcs1", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})), ""},
		{"empty", "", "no PEM"},
		{"certificate instead", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", `PEM block 1: type "CERTIFICATE"`},
		{"garbage der", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PEM block 1 (PRIVATE KEY)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := pki.ParseKeyPEM([]byte(tc.in))
			if tc.wantErr == "" {
				if err != nil || k == nil {
					t.Fatalf("ParseKeyPEM = %v, %v", k, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseKeyPEM = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseCertsPEM(t *testing.T) {
	root, _ := mustRoot(t)
	one := pki.EncodeCertsPEM(root)
	for _, tc := range []struct {
		name    string
		in      string
		n       int
		wantErr string
	}{
		{"one", string(one), 1, ""},
		{"two with text between", "subject=foo\n" + string(one) + "junk\n" + string(one), 2, ""},
		{"empty", "", 0, "no PEM"},
		{"key block", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})), 0, `PEM block 1: type "PRIVATE KEY"`},
		{"bad second", string(one) + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}})), 0, "PEM block 2:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pki.ParseCertsPEM([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || got != nil {
					t.Fatalf("ParseCertsPEM = %d certs, %v; want error containing %q and no certs", len(got), err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != tc.n {
				t.Fatalf("ParseCertsPEM = %d certs, %v; want %d", len(got), err, tc.n)
			}
		})
	}
}

func TestCreateCSRAndParse(t *testing.T) {
	key := mustKey(t, pki.KeyECP256)
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/web")
	csrPEM, err := pki.CreateCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.ParseCSRPEM(csrPEM)
	if err != nil {
		t.Fatalf("ParseCSRPEM(CreateCSR) = %v", err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != id.String() {
		t.Errorf("CSR URIs = %v, want [%s]", csr.URIs, id)
	}

	// A CSR whose signature does not match its key must be refused.
	block, _ := pem.Decode(csrPEM)
	der := append([]byte(nil), block.Bytes...)
	der[len(der)-5] ^= 0xff // inside the signature
	tampered := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	for _, tc := range []struct{ name, in, wantErr string }{
		{"tampered signature", string(tampered), "CSR"},
		{"empty", "", "no PEM"},
		{"certificate", string(pki.EncodeCertsPEM(mustRootCert(t))), `type "CERTIFICATE"`},
		{"trailing data", string(csrPEM) + string(csrPEM), "unexpected data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := pki.ParseCSRPEM([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseCSRPEM = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func mustRootCert(t testing.TB) *x509.Certificate { c, _ := mustRoot(t); return c }

func TestSPIFFEIDFromCert(t *testing.T) {
	u := func(s string) *url.URL { p, _ := url.Parse(s); return p }
	for _, tc := range []struct {
		name    string
		uris    []*url.URL
		want    string
		wantErr string
	}{
		{"one", []*url.URL{u("spiffe://td/ns/a/sa/b")}, "spiffe://td/ns/a/sa/b", ""},
		{"none", nil, "", "no URI SAN"},
		{"two", []*url.URL{u("spiffe://td/ns/a/sa/b"), u("spiffe://td/ns/a/sa/c")}, "", "2 URI SANs"},
		{"not spiffe", []*url.URL{u("https://td/x")}, "", "URI SAN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pki.SPIFFEIDFromCert(&x509.Certificate{URIs: tc.uris})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("SPIFFEIDFromCert = %v, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("SPIFFEIDFromCert = %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFileAtomic(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "new" || fi.Mode().Perm() != 0o600 {
		t.Errorf("after WriteFileAtomic: content %q mode %v, want \"new\" 0600", b, fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only key.pem (no temp files left)", len(entries))
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil {
		t.Error("WriteFileAtomic into a missing directory = nil, want error")
	}
}

// caDirFixture writes a root -> intermediate plug-in directory and returns its path.
func caDirFixture(t *testing.T) (string, *pki.CADir) {
	t.Helper()
	root, rootKey := mustRoot(t)
	ik := mustKey(t, pki.KeyECP256)
	inter, err := pki.CreateIntermediate(root, rootKey, ik.Public(), pki.CAOptions{CommonName: "inter", TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	d := &pki.CADir{Cert: inter, Key: ik, Chain: []*x509.Certificate{inter, root}, Roots: []*x509.Certificate{root}}
	dir := t.TempDir()
	if err := pki.WriteCADir(dir, d); err != nil {
		t.Fatal(err)
	}
	return dir, d
}

func TestLoadCADir(t *testing.T) {
	otherRoot, otherKey := mustRoot(t)
	leafTmpl := &x509.Certificate{SerialNumber: otherRoot.SerialNumber, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	leafDER, _ := x509.CreateCertificate(rand.Reader, leafTmpl, otherRoot, otherKey.Public(), otherKey)
	leaf, _ := x509.ParseCertificate(leafDER)

	for _, tc := range []struct {
		name    string
		mutate  func(t *testing.T, dir string, d *pki.CADir)
		at      time.Time
		wantErr string
	}{
		{"valid", func(*testing.T, string, *pki.CADir) {}, now, ""},
		{"missing key", func(t *testing.T, dir string, _ *pki.CADir) { os.Remove(filepath.Join(dir, pki.CAKeyFile)) }, now, "ca-key.pem is missing"},
		{"key mismatch", func(t *testing.T, dir string, _ *pki.CADir) {
			b, _ := pki.EncodeKeyPEM(mustKey(t, pki.KeyECP256))
			os.WriteFile(filepath.Join(dir, pki.CAKeyFile), b, 0o600)
		}, now, "ca-key.pem does not match"},
		{"not a CA", func(t *testing.T, dir string, _ *pki.CADir) {
			os.WriteFile(filepath.Join(dir, pki.CACertFile), pki.EncodeCertsPEM(leaf), 0o644)
			b, _ := pki.EncodeKeyPEM(otherKey)
			os.WriteFile(filepath.Join(dir, pki.CAKeyFile), b, 0o600)
		}, now, "is not a CA"},
		{"foreign root", func(t *testing.T, dir string, _ *pki.CADir) {
			os.WriteFile(filepath.Join(dir, pki.RootCertFile), pki.EncodeCertsPEM(otherRoot), 0o644)
		}, now, "does not chain"},
		{"garbage chain", func(t *testing.T, dir string, _ *pki.CADir) {
			os.WriteFile(filepath.Join(dir, pki.CertChainFile), []byte("nope"), 0o644)
		}, now, "cert-chain.pem"},
		{"expired", func(*testing.T, string, *pki.CADir) {}, now.Add(2 * time.Hour), "not now"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, want := caDirFixture(t)
			tc.mutate(t, dir, want)
			got, err := pki.LoadCADir(dir, tc.at)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), dir) {
					t.Fatalf("LoadCADir = %v, want error naming %s and containing %q", err, dir, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadCADir = %v", err)
			}
			if len(got.Chain) != 2 || !got.Chain[0].Equal(want.Cert) || !got.Chain[1].Equal(want.Roots[0]) {
				t.Errorf("Chain = %d certs, want [intermediate, root]", len(got.Chain))
			}
			fi, _ := os.Stat(filepath.Join(dir, pki.CAKeyFile))
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("ca-key.pem mode %v, want 0600", fi.Mode().Perm())
			}
		})
	}
}

// FuzzParseCSRPEM checks that arbitrary bytes either fail to parse with no CSR, or yield a
// CSR whose signature verifies (the function's promise).
func FuzzParseCSRPEM(f *testing.F) {
	key, _ := pki.GenerateKey(pki.KeyECP256)
	good, _ := pki.CreateCSR(key, spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b"))
	f.Add(good)
	f.Add([]byte(""))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add(append(append([]byte{}, good...), good...))
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, err := pki.ParseCSRPEM(b)
		if err != nil {
			if csr != nil {
				t.Fatalf("ParseCSRPEM returned a CSR with error %v", err)
			}
			return
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("ParseCSRPEM accepted a CSR whose signature fails: %v", err)
		}
	})
}

// FuzzParseCertsPEM checks that accepted input re-encodes to PEM that parses to the same
// certificates, and that rejected input yields nothing.
func FuzzParseCertsPEM(f *testing.F) {
	root, _ := mustRoot(f)
	one := pki.EncodeCertsPEM(root)
	f.Add(one)
	f.Add(append([]byte("text\n"), one...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := pki.ParseCertsPEM(b)
		if err != nil {
			if certs != nil {
				t.Fatalf("ParseCertsPEM returned %d certs with error %v", len(certs), err)
			}
			return
		}
		again, err := pki.ParseCertsPEM(pki.EncodeCertsPEM(certs...))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-parse = %d, %v; want %d", len(again), err, len(certs))
		}
		for i := range certs {
			if !certs[i].Equal(again[i]) {
				t.Fatalf("certificate %d changed on round trip", i)
			}
		}
	})
}

// FuzzParseKeyPEM checks that an accepted key is a supported type and round-trips.
func FuzzParseKeyPEM(f *testing.F) {
	key, _ := pki.GenerateKey(pki.KeyECP256)
	b, _ := pki.EncodeKeyPEM(key)
	f.Add(b)
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		k, err := pki.ParseKeyPEM(in)
		if err != nil {
			return
		}
		if err := pki.CheckPublicKey(k.Public()); err != nil {
			t.Fatalf("accepted unsupported key: %v", err)
		}
		enc, err := pki.EncodeKeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pki.ParseKeyPEM(enc); err != nil {
			t.Fatalf("re-parse of accepted key: %v", err)
		}
	})
}
