package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The file names of Istio's plug-in CA directory (the "cacerts" secret).
const (
	CACertFile    = "ca-cert.pem"    // the signing (intermediate) certificate
	CAKeyFile     = "ca-key.pem"     // its private key
	CertChainFile = "cert-chain.pem" // ca-cert, then intermediates up to the root
	RootCertFile  = "root-cert.pem"  // the trust bundle: one or more roots
)

// CADir is the content of a plug-in CA directory, checked by LoadCADir.
type CADir struct {
	Cert *x509.Certificate // from ca-cert.pem
	Key  crypto.Signer     // from ca-key.pem
	// Chain is the verified path from Cert to its root: Cert first, the root last. When Cert
	// is itself the root, Chain is just Cert.
	Chain []*x509.Certificate
	// Roots is root-cert.pem: every root in the trust bundle, the one Chain ends with among them.
	Roots []*x509.Certificate
}

// LoadCADir reads and validates an Istio plug-in CA directory at time now: every file
// parses, the key matches ca-cert.pem, ca-cert.pem is a CA, and it chains through
// cert-chain.pem to a root in root-cert.pem. Errors name the file and the problem.
func LoadCADir(dir string, now time.Time) (*CADir, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("CA directory %s: %s is missing (want %s, %s, %s, %s)", dir, name, CACertFile, CAKeyFile, CertChainFile, RootCertFile)
		}
		if err != nil {
			return nil, fmt.Errorf("CA directory %s: %w", dir, err)
		}
		return b, nil
	}
	certs := func(name string) ([]*x509.Certificate, error) {
		b, err := read(name)
		if err != nil {
			return nil, err
		}
		c, err := ParseCertsPEM(b)
		if err != nil {
			return nil, fmt.Errorf("CA directory %s: %s: %w", dir, name, err)
		}
		return c, nil
	}

	caCerts, err := certs(CACertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(CAKeyFile)
	if err != nil {
		return nil, err
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA directory %s: %s: %w", dir, CAKeyFile, err)
	}
	chain, err := certs(CertChainFile)
	if err != nil {
		return nil, err
	}
	roots, err := certs(RootCertFile)
	if err != nil {
		return nil, err
	}
	d := &CADir{Cert: caCerts[0], Key: key, Roots: roots}
	if err := d.validate(chain, now); err != nil {
		return nil, fmt.Errorf("CA directory %s: %w", dir, err)
	}
	return d, nil
}

func (d *CADir) validate(chain []*x509.Certificate, now time.Time) error {
	if !KeyMatchesCert(d.Key, d.Cert) {
		return fmt.Errorf("%s does not match the public key of %s (%q)", CAKeyFile, CACertFile, d.Cert.Subject)
	}
	if err := CheckCA(d.Cert); err != nil {
		return fmt.Errorf("%s: %w", CACertFile, err)
	}
	for i, r := range d.Roots {
		if err := CheckCA(r); err != nil {
			return fmt.Errorf("%s: certificate %d: %w", RootCertFile, i+1, err)
		}
	}
	if now.Before(d.Cert.NotBefore) || now.After(d.Cert.NotAfter) {
		return fmt.Errorf("%s (%q) is valid from %s to %s, not now (%s)", CACertFile, d.Cert.Subject,
			d.Cert.NotBefore.UTC().Format(time.RFC3339), d.Cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	verified, err := VerifyChain(d.Cert, chain, d.Roots, now)
	if err != nil {
		return fmt.Errorf("%s does not chain through %s to a root in %s: %w", CACertFile, CertChainFile, RootCertFile, err)
	}
	d.Chain = verified[0]
	return nil
}

// Intermediates returns the certificates strictly between Cert and the root.
func (d *CADir) Intermediates() []*x509.Certificate {
	if len(d.Chain) <= 2 {
		return nil
	}
	return d.Chain[1 : len(d.Chain)-1]
}

// WriteCADir writes d to dir with Istio's file names: the key 0600 and every file
// atomically. cert-chain.pem is Chain (Cert first, root last).
func WriteCADir(dir string, d *CADir) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create CA directory: %w", err)
	}
	keyPEM, err := EncodeKeyPEM(d.Key)
	if err != nil {
		return err
	}
	chain := d.Chain
	if len(chain) == 0 {
		chain = []*x509.Certificate{d.Cert}
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{CAKeyFile, keyPEM, 0o600},
		{CACertFile, EncodeCertsPEM(d.Cert), 0o644},
		{CertChainFile, EncodeCertsPEM(chain...), 0o644},
		{RootCertFile, EncodeCertsPEM(d.Roots...), 0o644},
	}
	for _, f := range files {
		if err := WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	return nil
}
