package ca

import (
	"fmt"

	"github.com/meshguard/meshguard/internal/pki"
)

// Validator is one signing-policy rule. It sees the request before signing and refuses it
// by returning an error; errors that wrap neither ErrBadRequest nor ErrNotPermitted are
// treated as ErrNotPermitted (fail closed).
type Validator interface {
	Validate(r *Request) error
}

// ValidatorFunc adapts a function to Validator.
type ValidatorFunc func(r *Request) error

// Validate calls f.
func (f ValidatorFunc) Validate(r *Request) error { return f(r) }

// KeyPolicy accepts ECDSA P-256/P-384 and RSA >= 2048 public keys only.
var KeyPolicy Validator = ValidatorFunc(func(r *Request) error {
	if err := pki.CheckPublicKey(r.PublicKey); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return nil
})

// IdentityPolicy requires a valid identity in trustDomain.
func IdentityPolicy(trustDomain string) Validator {
	return ValidatorFunc(func(r *Request) error {
		if err := r.Identity.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrNotPermitted, err)
		}
		if r.Identity.TrustDomain != trustDomain {
			return fmt.Errorf("%w: identity %s is outside trust domain %q", ErrNotPermitted, r.Identity, trustDomain)
		}
		return nil
	})
}
