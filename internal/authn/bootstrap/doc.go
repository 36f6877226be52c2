// Package bootstrap owns meshguard's join tokens: JWTs signed (ES256) by a key kept in the
// control plane's data directory, with audience "istio-ca", bound to one namespace and
// service account, and expiring. Mint creates them for `meshguard ctl token create`;
// Authenticator verifies them for the CA service as an authn.Authenticator.
//
// It imports identity, pki and authn only. Authenticator is safe for concurrent use; it
// remembers verified tokens (by hash, until they expire) to skip repeated signature checks.
package bootstrap
