// Package certreport is the inventory of every certificate the mesh depends on — the
// trust bundle's roots, the CA's signing (intermediate) certificate, the control plane's
// serving certificate and each connected sidecar's current certificate — and the expiry
// report `meshguard ctl certs` prints from it: sorted by time left, flagging what
// expires inside a window, as a table or JSON.
//
// Server serves the inventory to operators over the control plane's gRPC port
// (meshguard.operator.v1.CertificateInventory/List), authenticated exactly as the
// control plane's other operator status is: a verified mesh client certificate for one
// of the configured operator identities, never a bearer token; anyone else is refused
// (fail closed, also when no operator is configured). Fetch is the client.
//
// It imports only vocabulary packages (authn, identity); the control plane supplies the
// certificates through the Source interface. Report values are immutable; Server is
// safe for concurrent use.
package certreport
