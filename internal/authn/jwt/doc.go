// Package jwt owns end-user authentication with RequestAuthentication: it finds a JWT
// where the applicable JWT rules say (fromHeaders, fromParams, fromCookies, or the
// Authorization: Bearer header and access_token parameter by default), verifies it with
// go-jose against the rule's keys (inline jwks, jwksUri fetched over HTTP(S) with caching,
// refresh and a timeout, or OpenID discovery from the issuer), checks issuer, audiences,
// exp and nbf, and produces the request.auth.* attributes authorization matches on. It
// also performs the rule's request rewrites (forwardOriginalToken, outputPayloadToHeader,
// outputClaimToHeaders).
//
// Istio's semantics: a request with no token is unauthenticated and goes on (requiring a
// token is AuthorizationPolicy's job); a request with a token that fails any check is
// rejected (401). Only asymmetric algorithms are accepted, so "none" and HMAC tokens are
// rejected; keys that cannot be fetched make every token fail (fail closed).
//
// An Authenticator is safe for concurrent use. New starts no goroutines; JWKS fetches
// happen on the request path under the rule's timeout, at most one at a time per key set.
package jwt
