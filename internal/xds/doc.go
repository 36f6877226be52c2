// Package xds is the push protocol between the control plane and sidecars, both ends:
// the Aggregated Discovery Service envelope from go-control-plane (DiscoveryRequest and
// DiscoveryResponse with version_info, nonces, ACK, and NACK with error_detail), carrying
// Istio's objects as istio.io/api mcp/v1alpha1 Resources (metadata name
// "namespace/name", body an Any of the Istio spec), one type URL per kind named as
// Istio's MCP-over-xDS names them ("security.istio.io/v1/AuthorizationPolicy",
// "core/v1alpha1/MeshConfig").
//
// Server: each stream is authenticated by the sidecar's verified mesh certificate, which
// alone decides its namespace and service account (a node that claims others is
// refused). The sidecar gets the view of its workload: the MeshConfig; the
// AuthorizationPolicies, RequestAuthentications and PeerAuthentications of its namespace
// and the root namespace whose selectors match its labels; and the DestinationRules,
// ServiceEntries and WorkloadEntries exported to its namespace. The labels it claims
// can only choose among those, never widen them. Views are computed once per snapshot
// and (namespace, labels), hashed, and pushed only to streams whose view hash changed;
// every push sends all subscribed types with the view's version, so a sidecar applies
// a change spanning kinds at once. Per stream it tracks the version the sidecar reports
// having applied (the version_info of any request, an ACK whose nonce a newer push made
// stale included) and the last NACK per type, and the certificate's expiry (the stream
// ends when it expires; every stream ends with Unavailable when Run returns, so that a
// graceful stop is not held up and sidecars reconnect), and it
// serves that to operators as Istio's debug types over the same service:
// istio.io/debug/syncz (CSDS ClientConfigs) and istio.io/debug/config_dump (the view a
// workload's sidecar has ACKed). Only identities in ServerConfig.Operators may ask.
//
// Client: subscribes to every type, collects a push (all types at one version),
// decodes it and validates it as the control plane's loader does (config.ValidateObjects
// on the objects, the loader on a changed mesh config), then ACKs and publishes it as a
// config.Snapshot, or NACKs it with the validation message and changes nothing. Only
// resources whose bytes changed since the last accepted push are decoded and validated
// again (all of them when the mesh config changed), so a mesh-wide change costs each
// sidecar the changed object, not its whole view. It reconnects with jittered exponential backoff and keeps the last
// ACKed config meanwhile. It implements config.ConfigStore for the sidecar.
//
// Concurrency: NewServer and NewClient start nothing; Server.Run and Client.Run work
// until their context ends. Views are immutable and shared between streams.
package xds
