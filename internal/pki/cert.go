package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Backdate is how far before "now" new certificates start, so that peers whose clocks run
// a little behind accept them at once.
const Backdate = 5 * time.Minute

// SPIFFEIDFromCert returns the SPIFFE ID carried by cert, which must have exactly one URI
// SAN and that SAN must be a SPIFFE ID (the X.509-SVID rule).
func SPIFFEIDFromCert(cert *x509.Certificate) (spiffeid.ID, error) {
	switch len(cert.URIs) {
	case 0:
		return spiffeid.ID{}, errors.New("certificate has no URI SAN, want exactly one SPIFFE ID")
	case 1:
	default:
		return spiffeid.ID{}, fmt.Errorf("certificate has %d URI SANs, want exactly one SPIFFE ID", len(cert.URIs))
	}
	id, err := spiffeid.FromURI(cert.URIs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("certificate URI SAN %q: %w", cert.URIs[0], err)
	}
	return id, nil
}

// NewSerial returns a random positive 128-bit serial number (RFC 5280 allows up to 20 octets).
func NewSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil // never zero
}

// CAOptions describe a CA certificate to create.
type CAOptions struct {
	// CommonName and Organization form the subject.
	CommonName   string
	Organization string
	// TrustDomain, when set, adds the SPIFFE ID spiffe://<TrustDomain> as URI SAN, as the
	// X.509-SVID spec suggests for signing certificates.
	TrustDomain string
	// TTL is the lifetime; for intermediates it is capped at the parent's expiry.
	TTL time.Duration
	// Now is the issuance time; NotBefore is Now-Backdate.
	Now time.Time
}

func caTemplate(pub crypto.PublicKey, o CAOptions) (*x509.Certificate, error) {
	if o.TTL <= 0 {
		return nil, fmt.Errorf("CA certificate TTL %v: must be positive", o.TTL)
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	t := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.CommonName},
		NotBefore:             o.Now.Add(-Backdate),
		NotAfter:              o.Now.Add(o.TTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          ski,
	}
	if o.Organization != "" {
		t.Subject.Organization = []string{o.Organization}
	}
	if o.TrustDomain != "" {
		td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("CA certificate trust domain %q: %w", o.TrustDomain, err)
		}
		t.URIs = []*url.URL{td.ID().URL()}
	}
	return t, nil
}

// subjectKeyID is the SHA-256 of the public key, truncated to 160 bits (RFC 7093 method 1).
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

// CreateRoot returns a self-signed CA certificate for key.
func CreateRoot(key crypto.Signer, o CAOptions) (*x509.Certificate, error) {
	t, err := caTemplate(key.Public(), o)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, t, t, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// CreateIntermediate returns a CA certificate for pub signed by parent/parentKey. Its
// lifetime never outlasts the parent's.
func CreateIntermediate(parent *x509.Certificate, parentKey crypto.Signer, pub crypto.PublicKey, o CAOptions) (*x509.Certificate, error) {
	if !parent.IsCA {
		return nil, fmt.Errorf("create intermediate: parent %q is not a CA certificate", parent.Subject)
	}
	if !KeyMatchesCert(parentKey, parent) {
		return nil, fmt.Errorf("create intermediate: parent key does not match parent certificate %q", parent.Subject)
	}
	t, err := caTemplate(pub, o)
	if err != nil {
		return nil, err
	}
	if t.NotAfter.After(parent.NotAfter) {
		t.NotAfter = parent.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, t, parent, pub, parentKey)
	if err != nil {
		return nil, fmt.Errorf("create intermediate certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// VerifyChain verifies leaf up to one of roots through intermediates at time now, for any
// extended key usage, and returns the verified chains (leaf first, root last).
func VerifyChain(leaf *x509.Certificate, intermediates, roots []*x509.Certificate, now time.Time) ([][]*x509.Certificate, error) {
	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	for _, c := range intermediates {
		opts.Intermediates.AddCert(c)
	}
	return leaf.Verify(opts)
}

// CheckCA reports why cert cannot sign certificates, or nil when it can.
func CheckCA(cert *x509.Certificate) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return fmt.Errorf("certificate %q is not a CA (basic constraints CA:FALSE or missing)", cert.Subject)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("certificate %q lacks the certificate-signing key usage", cert.Subject)
	}
	return nil
}
