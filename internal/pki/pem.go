package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// EncodeCertsPEM encodes certs as consecutive "CERTIFICATE" PEM blocks, in order.
func EncodeCertsPEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// Encoding to a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// ParseCertsPEM parses every PEM block in b as a certificate. It fails on the first block
// that is not a CERTIFICATE or does not parse, naming the block ("PEM block 2: …"), and
// when b holds no PEM at all. Text between blocks (openssl's human-readable dumps) is
// ignored.
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := b
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d: type %q, want CERTIFICATE", n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("parse certificates: %w", ErrNoPEM)
	}
	return certs, nil
}

// ParseCSRPEM parses a single "CERTIFICATE REQUEST" PEM block (Istio agents send exactly
// one) and checks its self-signature, so a returned CSR proves possession of its key.
// Trailing data after the block is refused rather than silently ignored.
func ParseCSRPEM(b []byte) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("parse CSR: %w", ErrNoPEM)
	}
	// Some tools write the legacy "NEW CERTIFICATE REQUEST" header.
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("parse CSR: PEM block 1: type %q, want CERTIFICATE REQUEST", block.Type)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("parse CSR: unexpected data after the CERTIFICATE REQUEST block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature does not verify: %w", err)
	}
	return csr, nil
}
