// Package authz owns the authorization decision: it compiles the AuthorizationPolicies
// that apply to one workload into an Engine and evaluates request attributes against it
// with Istio's semantics — CUSTOM (an external HTTP authorizer from MeshConfig's
// extensionProviders), then DENY, then ALLOW, with AUDIT marks and dry-run shadow results
// that are recorded but never enforced. It also owns request validation and path
// normalization per meshConfig.pathNormalization, because matching and forwarding must see
// the same path.
//
// authz is data plane: it must not import ca, caservice, config/kubestore or any
// Kubernetes client. An Engine is immutable after New and safe for concurrent use; a new
// configuration builds a new Engine that the caller swaps in atomically.
package authz
