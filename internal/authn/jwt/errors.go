package jwt

import "errors"

// ErrInvalidToken is wrapped by every rejection of a presented token: malformed, bad
// signature, disallowed algorithm, unknown issuer or key, expired, not yet valid, wrong
// audience, or a token where a configured header prefix is missing. Proxies answer 401.
var ErrInvalidToken = errors.New("invalid JWT")

// ErrJWKSUnavailable is wrapped when the keys to verify a token cannot be obtained
// (fetch failed, bad document, no usable key). The token is rejected: fail closed.
var ErrJWKSUnavailable = errors.New("JWKS unavailable")
