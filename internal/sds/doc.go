// Package sds serves the workload's certificate and trust bundle to proxies over Envoy's
// Secret Discovery Service (envoy.service.secret.v3.SecretDiscoveryService) on a unix
// socket, the way Istio's agent does: resource "default" is the workload's
// tls_certificate (chain and key as inline bytes) and "ROOTCA" is the validation_context
// holding the trust bundle. Envoy, the meshguard proxy or any SDS client can consume it.
//
// It owns the socket (created 0600, never world-reachable even for an instant), the
// per-stream xDS state machine (versions, nonces, ACK/NACK, pushes on every change of the
// Source) and the mapping from go-spiffe SVIDs and bundles to Envoy Secret messages. It
// consumes a Source (the agent's CertSource) and must not import the CA, the control plane
// or Kubernetes client code.
//
// Concurrency: a Server is safe for concurrent use; every stream is served by one
// goroutine that owns all sends on it, plus one goroutine reading requests.
package sds
