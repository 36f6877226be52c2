package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/pki"
)

// Default lifetimes, as in Istio.
const (
	DefaultWorkloadTTL = 24 * time.Hour
	DefaultMaxTTL      = 90 * 24 * time.Hour
)

// Signer is the CA's own certificate and key.
type Signer struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Intermediates are the certificates between Cert and its root, Cert's issuer first.
	// Empty when Cert is the root itself or is signed directly by it.
	Intermediates []*x509.Certificate
}

// Config configures an Authority.
type Config struct {
	// TrustDomain is the only trust domain the Authority issues identities in.
	TrustDomain string
	// Signer signs every certificate.
	Signer Signer
	// Bundle is the trust bundle: every root workloads should trust. The root Signer
	// chains to must be one of them; the others are kept for root rotation.
	Bundle []*x509.Certificate
	// DefaultTTL applies when a request asks for none; MaxTTL caps what a request asks for.
	DefaultTTL, MaxTTL time.Duration
	// Validators run after the built-in key and identity policies.
	Validators []Validator
	// Now defaults to time.Now.
	Now func() time.Time
}

// Authority issues workload certificates. Build it with New.
type Authority struct {
	td         string
	signer     Signer
	chain      []*x509.Certificate // what follows a leaf: Signer.Cert and intermediates, never the root
	root       *x509.Certificate
	bundle     []*x509.Certificate
	defaultTTL time.Duration
	maxTTL     time.Duration
	validators []Validator
	now        func() time.Time
}

// New checks cfg and returns an Authority: the signer's key must match its certificate,
// the certificate must be a CA, and it must chain through Intermediates to a root in
// Bundle now.
func New(cfg Config) (*Authority, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = DefaultWorkloadTTL
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	switch {
	case cfg.DefaultTTL < 0 || cfg.MaxTTL < 0:
		return nil, fmt.Errorf("ca: workload TTLs must be positive (default %v, max %v)", cfg.DefaultTTL, cfg.MaxTTL)
	case cfg.DefaultTTL > cfg.MaxTTL:
		return nil, fmt.Errorf("ca: default workload TTL %v exceeds the maximum %v", cfg.DefaultTTL, cfg.MaxTTL)
	}
	if _, err := identity.New(cfg.TrustDomain, "x", "x"); err != nil {
		return nil, fmt.Errorf("ca: trust domain %q is not valid: %w", cfg.TrustDomain, err)
	}
	s := cfg.Signer
	if s.Cert == nil || s.Key == nil {
		return nil, errors.New("ca: signer certificate and key are required")
	}
	if !pki.KeyMatchesCert(s.Key, s.Cert) {
		return nil, fmt.Errorf("ca: signer key does not match signer certificate %q", s.Cert.Subject)
	}
	if err := pki.CheckCA(s.Cert); err != nil {
		return nil, fmt.Errorf("ca: signer: %w", err)
	}
	if len(cfg.Bundle) == 0 {
		return nil, errors.New("ca: the trust bundle is empty")
	}
	chains, err := pki.VerifyChain(s.Cert, s.Intermediates, cfg.Bundle, cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("ca: signer certificate %q does not chain to the trust bundle: %w", s.Cert.Subject, err)
	}
	verified := chains[0]
	chain := verified[:len(verified)-1] // empty when the signer is the root itself
	a := &Authority{
		td:         cfg.TrustDomain,
		signer:     s,
		chain:      append([]*x509.Certificate(nil), chain...),
		root:       verified[len(verified)-1],
		bundle:     append([]*x509.Certificate(nil), cfg.Bundle...),
		defaultTTL: cfg.DefaultTTL,
		maxTTL:     cfg.MaxTTL,
		now:        cfg.Now,
	}
	a.validators = append([]Validator{KeyPolicy, IdentityPolicy(cfg.TrustDomain)}, cfg.Validators...)
	return a, nil
}

// Request is what the Authority signs.
type Request struct {
	// PublicKey goes into the certificate. For CSRs, SignCSR has already checked that the
	// requester holds the private key.
	PublicKey crypto.PublicKey
	// Identity becomes the only URI SAN. It comes from the authenticated caller.
	Identity identity.Identity
	// TTL is the requested lifetime; zero means the default, and it is capped at the maximum.
	TTL time.Duration
	// DNSNames and IPAddresses are for the control plane's own serving certificate only;
	// the CSR path never sets them.
	DNSNames    []string
	IPAddresses []net.IP
}

// TrustDomain returns the trust domain the Authority issues in.
func (a *Authority) TrustDomain() string { return a.td }

// TrustBundle returns every trusted root. The slice must not be modified.
func (a *Authority) TrustBundle() []*x509.Certificate { return a.bundle }

// Root returns the root the signer chains to.
func (a *Authority) Root() *x509.Certificate { return a.root }

// SignCSR issues a certificate for id with the public key of csrPEM, a PEM "CERTIFICATE
// REQUEST" as Istio's agents send it. Whatever names the CSR asks for are ignored: the
// identity is id. The CSR is parsed and its signature checked here, once, so that no
// caller can skip proof of possession; a CSR that does not parse or verify wraps
// ErrBadRequest.
func (a *Authority) SignCSR(ctx context.Context, csrPEM []byte, id identity.Identity, ttl time.Duration) ([]*x509.Certificate, error) {
	csr, err := pki.ParseCSRPEM(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return a.Sign(ctx, Request{PublicKey: csr.PublicKey, Identity: id, TTL: ttl})
}

// Sign issues a certificate for r and returns the chain a workload presents: the new leaf
// first, then the signer and its intermediates, never the root (roots are in TrustBundle;
// when the signer is the root, the result is the leaf alone). Refusals wrap ErrBadRequest
// or ErrNotPermitted.
func (a *Authority) Sign(ctx context.Context, r Request) ([]*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, v := range a.validators {
		if err := v.Validate(&r); err != nil {
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrNotPermitted) {
				err = fmt.Errorf("%w: %w", ErrNotPermitted, err)
			}
			return nil, err
		}
	}
	now := a.now()
	ttl := r.TTL
	if ttl <= 0 {
		ttl = a.defaultTTL
	}
	ttl = min(ttl, a.maxTTL)
	serial, err := pki.NewSerial()
	if err != nil {
		return nil, err
	}
	notBefore := now.Add(-pki.Backdate)
	if notBefore.Before(a.signer.Cert.NotBefore) {
		notBefore = a.signer.Cert.NotBefore
	}
	// A leaf never outlives its signer: clients would reject the chain early anyway.
	notAfter := now.Add(ttl)
	if notAfter.After(a.signer.Cert.NotAfter) {
		notAfter = a.signer.Cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("ca: signer certificate %q expired at %s", a.signer.Cert.Subject, a.signer.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		URIs:                  []*url.URL{r.Identity.SPIFFEID().URL()},
		DNSNames:              r.DNSNames,
		IPAddresses:           r.IPAddresses,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.signer.Cert, r.PublicKey, a.signer.Key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign certificate for %s: %w", r.Identity, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse issued certificate for %s: %w", r.Identity, err)
	}
	out := make([]*x509.Certificate, 0, 1+len(a.chain))
	return append(append(out, leaf), a.chain...), nil
}
