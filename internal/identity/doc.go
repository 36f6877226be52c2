// Package identity owns meshguard's workload identity: the SPIFFE ID
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account> and the Identity value
// type that names its three parts. It is pure (no I/O, no state) and imports nothing of
// meshguard; every other package speaks identity through it. Values are immutable and
// safe for concurrent use.
package identity
