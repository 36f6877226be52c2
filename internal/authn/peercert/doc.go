// Package peercert authenticates a caller by its mesh client certificate: the TLS
// handshake has already verified the chain against the trust bundle; this package takes
// the identity from the leaf's single SPIFFE ID URI SAN, checks it is in the expected
// trust domain and still valid now. It is how workloads renew their certificates.
//
// It imports identity, pki and authn only, and is safe for concurrent use.
package peercert
