// Package ca owns meshguard's certificate authority: an Authority signs a CSR for an
// identity it is told (never the one the CSR asks for), caps lifetimes, and hands out the
// chain and the trust bundle (one or more roots, for rotation without outage). The signer
// is either a self-signed root kept in the data directory or an intermediate plugged in
// from an Istio cacerts directory. Signing policy is a list of small Validators.
//
// It imports identity and pki only, does no network I/O and does not log: callers
// (caservice, controlplane) decide what to record. An Authority is immutable after New
// and safe for concurrent use.
package ca
