package authn

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/meshguard/meshguard/internal/identity"
)

// Credentials is what a caller presented, independent of the transport.
type Credentials struct {
	// BearerToken is the token from "authorization: Bearer <token>", or "".
	BearerToken string
	// VerifiedChains are the caller's client certificate chains as verified by the TLS
	// handshake against the mesh trust bundle (leaf first). Empty without a client cert.
	VerifiedChains [][]*x509.Certificate
	// RemoteAddr is the caller's address, for logs.
	RemoteAddr string
}

// Caller is an authenticated caller.
type Caller struct {
	// Identity is who the caller proved to be; the CA issues for exactly this identity.
	Identity identity.Identity
	// Method names how it was proven, e.g. "bootstrap-token" or "peer-certificate".
	Method string
}

// Authenticator turns presented credentials into a Caller. It returns an error wrapping
// ErrNoCredentials when the credentials it handles are absent, and another error when
// they are present but invalid; that error's text is safe to return to the caller and
// should say what to fix. A Kubernetes TokenReview authenticator implements it too.
type Authenticator interface {
	Authenticate(ctx context.Context, cred Credentials) (Caller, error)
}

// Chain tries each authenticator in order and returns the first success. When all fail
// it returns every refusal joined, or ErrNoCredentials when nothing was presented at all.
// It fails closed: an empty Chain authenticates nobody.
type Chain []Authenticator

// Authenticate implements Authenticator.
func (c Chain) Authenticate(ctx context.Context, cred Credentials) (Caller, error) {
	var refusals []error
	for _, a := range c {
		caller, err := a.Authenticate(ctx, cred)
		if err == nil {
			return caller, nil
		}
		if !errors.Is(err, ErrNoCredentials) {
			refusals = append(refusals, err)
		}
	}
	if len(refusals) == 0 {
		return Caller{}, fmt.Errorf("%w: send \"authorization: Bearer <token>\" metadata or present a mesh client certificate", ErrNoCredentials)
	}
	return Caller{}, errors.Join(refusals...)
}

// CredentialsFromGRPC extracts credentials from a gRPC server call's context: the
// "authorization" metadata (case-insensitive "Bearer " prefix, as Istio's agents send
// it), the verified TLS chains and the peer address.
func CredentialsFromGRPC(ctx context.Context) Credentials {
	var c Credentials
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, v := range md.Get("authorization") {
			if len(v) > len("bearer ") && strings.EqualFold(v[:len("bearer ")], "bearer ") {
				c.BearerToken = strings.TrimSpace(v[len("bearer "):])
				break
			}
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			c.RemoteAddr = p.Addr.String()
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			c.VerifiedChains = ti.State.VerifiedChains
		}
	}
	return c
}
