// Package authn is the authentication vocabulary shared by the CA service and the xDS
// server: Credentials (what a caller presented: a bearer token, a verified client
// certificate chain, its address), Caller (who it was proven to be) and the
// Authenticator interface implemented by bootstrap (join tokens), peercert (mesh client
// certificates) and, later, a Kubernetes TokenReview authenticator. Chain combines them.
//
// It imports identity and gRPC's metadata/peer packages only; subpackages must not import
// each other. Everything here is stateless and safe for concurrent use.
package authn
