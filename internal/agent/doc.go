// Package agent is the workload side of meshguard's PKI, the pilot-agent analogue: it
// creates the workload's private key in memory, sends a CSR to the control plane's CA over
// Istio's IstioCertificateService protocol (bootstrap token first, the current
// certificate as a TLS client certificate afterwards), rotates the certificate when
// grace-ratio of its lifetime is left (with jitter), retries with exponential backoff and
// jitter while the CA is unreachable, and never serves an expired certificate.
//
// It owns the Source — DESIGN's CertSource: go-spiffe's x509svid.Source and
// x509bundle.Source plus Updated() — that the SDS server and the proxy consume, the
// optional output directory (cert-chain.pem, key.pem 0600, root-cert.pem, written
// atomically), the readiness and metrics endpoints of `meshguard agent`, and the
// standalone wiring of agent, SDS server and admin endpoint. It must not import the CA,
// the CA service, the control plane or Kubernetes client code.
//
// Concurrency: an Agent's Run loop is one goroutine; its Source is safe for concurrent
// use and holds immutable values behind a lock, swapped whole on each rotation.
package agent
