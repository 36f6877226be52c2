package peercert

import (
	"context"
	"fmt"
	"time"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/pki"
)

// Method is the authn.Caller method for this authenticator.
const Method = "peer-certificate"

// Authenticator yields the identity of a verified mesh client certificate.
type Authenticator struct {
	trustDomain string
	now         func() time.Time
}

var _ authn.Authenticator = (*Authenticator)(nil)

// New returns an Authenticator accepting identities in trustDomain. now defaults to time.Now.
func New(trustDomain string, now func() time.Time) *Authenticator {
	if now == nil {
		now = time.Now
	}
	return &Authenticator{trustDomain: trustDomain, now: now}
}

// Authenticate implements authn.Authenticator. Only chains verified by the TLS stack
// count; a certificate that merely appears in the handshake does not.
func (a *Authenticator) Authenticate(_ context.Context, cred authn.Credentials) (authn.Caller, error) {
	if len(cred.VerifiedChains) == 0 || len(cred.VerifiedChains[0]) == 0 {
		return authn.Caller{}, authn.ErrNoCredentials
	}
	leaf := cred.VerifiedChains[0][0]
	// The handshake checked validity when the connection opened; a long-lived connection
	// can outlast the certificate, so check again for every call.
	if now := a.now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return authn.Caller{}, fmt.Errorf("client certificate (serial %x) expired at %s: bootstrap again with a token", leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	sid, err := pki.SPIFFEIDFromCert(leaf)
	if err != nil {
		return authn.Caller{}, fmt.Errorf("client certificate: %w", err)
	}
	id, err := identity.FromSPIFFEID(sid)
	if err != nil {
		return authn.Caller{}, fmt.Errorf("client certificate: %w", err)
	}
	if id.TrustDomain != a.trustDomain {
		return authn.Caller{}, fmt.Errorf("client certificate identity %s is outside trust domain %q", id, a.trustDomain)
	}
	return authn.Caller{Identity: id, Method: Method}, nil
}
