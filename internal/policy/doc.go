// Package policy owns "what applies to which workload": from a config.Snapshot it builds
// an Index, once per snapshot, that selects the AuthorizationPolicies,
// RequestAuthentications and PeerAuthentications of a workload (root namespace, the
// workload's namespace, selector.matchLabels) without scanning unrelated objects; it
// resolves the effective PeerAuthentication mTLS mode per port with Istio's precedence,
// and finds the DestinationRule that applies to a client calling a host.
//
// policy is pure: no I/O, no goroutines. An Index is immutable after NewIndex and safe
// for concurrent use; returned slices and objects must not be modified.
package policy
