package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CreateCSR returns a PEM "CERTIFICATE REQUEST" signed by key asking for id as its only
// URI SAN. Like Istio's agent it leaves the subject empty: the CA decides the identity
// from the authenticated caller, and the CSR only proves possession of key.
func CreateCSR(key crypto.Signer, id spiffeid.ID) ([]byte, error) {
	tmpl := &x509.CertificateRequest{}
	if !id.IsZero() {
		tmpl.URIs = []*url.URL{id.URL()}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR for %q: %w", id, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}
