package meshtest_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/pki"
)

func TestCAIssues(t *testing.T) {
	c := meshtest.NewCA(t, "cluster.local")
	foreign := meshtest.NewCA(t, "cluster.local")
	id := c.ID("default", "web")
	for _, tc := range []struct {
		name      string
		cert      *meshtest.Cert
		pool      *x509.CertPool
		wantValid bool
	}{
		{"valid", c.Issue(t, id, time.Hour), c.Pool(), true},
		{"rsa", c.IssueWith(t, id, meshtest.IssueOptions{KeyType: pki.KeyRSA2048}), c.Pool(), true},
		{"expired", c.IssueExpired(t, id), c.Pool(), false},
		{"foreign CA", foreign.Issue(t, id, time.Hour), c.Pool(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cert.Leaf.Verify(x509.VerifyOptions{Roots: tc.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if (err == nil) != tc.wantValid {
				t.Fatalf("Verify = %v, want valid=%v", err, tc.wantValid)
			}
			got, err := pki.SPIFFEIDFromCert(tc.cert.Leaf)
			if err != nil || got != id.SPIFFEID() {
				t.Errorf("SPIFFE ID = %v, %v; want %v", got, err, id)
			}
			if tc.cert.TLSCertificate().PrivateKey == nil {
				t.Error("TLSCertificate has no key")
			}
		})
	}
	if _, err := pki.LoadCADir(c.WriteIntermediateDir(t), time.Now()); err != nil {
		t.Errorf("WriteIntermediateDir wrote a directory that does not load: %v", err)
	}
}
