package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/meshguard/meshguard/internal/pki"
)

// Files of the self-signed root in a data directory's "ca" subdirectory.
const (
	SelfSignedDir      = "ca"
	SelfSignedCertFile = "root-cert.pem"
	SelfSignedKeyFile  = "root-key.pem"
	// RootTTL is the lifetime of a self-signed root: ten years, like Istio's.
	RootTTL = 10 * 365 * 24 * time.Hour
)

// NewRoot creates a self-signed ECDSA P-256 root for trustDomain valid for ttl.
func NewRoot(trustDomain string, ttl time.Duration, now time.Time) (*x509.Certificate, Signer, error) {
	key, err := pki.GenerateKey(pki.KeyECP256)
	if err != nil {
		return nil, Signer{}, err
	}
	cert, err := pki.CreateRoot(key, pki.CAOptions{
		CommonName:   "meshguard root CA",
		Organization: trustDomain,
		TrustDomain:  trustDomain,
		TTL:          ttl,
		Now:          now,
	})
	if err != nil {
		return nil, Signer{}, err
	}
	return cert, Signer{Cert: cert, Key: key}, nil
}

// LoadOrCreateRoot returns the self-signed root kept under dataDir/ca, creating it on
// first use (key 0600, written before the certificate so that a crash never leaves a
// published certificate without its key). created reports whether it was made now. A
// certificate without its key, a key that does not match, or an expired root is an error:
// silently replacing a root would break every workload that trusts it.
func LoadOrCreateRoot(dataDir, trustDomain string, now time.Time) (s Signer, created bool, err error) {
	dir := filepath.Join(dataDir, SelfSignedDir)
	certPath := filepath.Join(dir, SelfSignedCertFile)
	keyPath := filepath.Join(dir, SelfSignedKeyFile)

	certPEM, certErr := os.ReadFile(certPath)
	if errors.Is(certErr, fs.ErrNotExist) {
		// No certificate was ever published: a lone key from an interrupted first start is
		// safe to replace.
		return createRoot(dir, certPath, keyPath, trustDomain, now)
	}
	if certErr != nil {
		return Signer{}, false, fmt.Errorf("read CA root: %w", certErr)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return Signer{}, false, fmt.Errorf("read CA root key (the root certificate %s exists, so its key must too): %w", certPath, err)
	}
	certs, err := pki.ParseCertsPEM(certPEM)
	if err != nil {
		return Signer{}, false, fmt.Errorf("CA root %s: %w", certPath, err)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return Signer{}, false, fmt.Errorf("CA root key %s: %w", keyPath, err)
	}
	cert := certs[0]
	switch {
	case !pki.KeyMatchesCert(key, cert):
		return Signer{}, false, fmt.Errorf("CA root key %s does not match %s", keyPath, certPath)
	case pki.CheckCA(cert) != nil:
		return Signer{}, false, fmt.Errorf("CA root %s: %w", certPath, pki.CheckCA(cert))
	case now.After(cert.NotAfter):
		return Signer{}, false, fmt.Errorf("CA root %s expired at %s: plug in a new CA with --cacerts or move %s away to create a new root (every workload must then trust it)",
			certPath, cert.NotAfter.UTC().Format(time.RFC3339), dir)
	}
	return Signer{Cert: cert, Key: key}, false, nil
}

func createRoot(dir, certPath, keyPath, trustDomain string, now time.Time) (Signer, bool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Signer{}, false, fmt.Errorf("create CA directory: %w", err)
	}
	cert, s, err := NewRoot(trustDomain, RootTTL, now)
	if err != nil {
		return Signer{}, false, err
	}
	keyPEM, err := pki.EncodeKeyPEM(s.Key)
	if err != nil {
		return Signer{}, false, err
	}
	if err := pki.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return Signer{}, false, err
	}
	if err := pki.WriteFileAtomic(certPath, pki.EncodeCertsPEM(cert), 0o644); err != nil {
		return Signer{}, false, err
	}
	return s, true, nil
}

// SignerFromCADir returns the signer and trust bundle of a validated plug-in CA directory.
func SignerFromCADir(d *pki.CADir) (Signer, []*x509.Certificate) {
	return Signer{Cert: d.Cert, Key: d.Key, Intermediates: d.Intermediates()}, d.Roots
}
