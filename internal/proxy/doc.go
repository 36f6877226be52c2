// Package proxy is the sidecar's data path: the inbound listener (PeerAuthentication
// STRICT/PERMISSIVE/DISABLE with first-byte sniffing, peer SPIFFE identity, JWT, then
// authorization, then the app on loopback, with x-forwarded-client-cert set from the
// verified peer) and the outbound listeners (explicit per-service local ports or
// transparent capture; DestinationRule TLS modes ISTIO_MUTUAL with secure naming,
// MUTUAL, SIMPLE, DISABLE; pooled upstream connections). It carries HTTP/1.1 on a lean
// byte-level path, HTTP/2 and gRPC through x/net/http2, and anything else as opaque TCP,
// detected per connection.
//
// It defines what it consumes as small interfaces (Authorizer, RequestAuthenticator,
// PeerAuthn, DestinationRules, CertSource, Observer) and never imports the CA, the
// control plane or Kubernetes client code.
//
// Concurrency: a Proxy's hot state (compiled Policy, cached certificate) is immutable
// and swapped whole through atomic.Pointer; SetPolicy may be called at any time from
// any goroutine. New starts nothing; Run serves until its context ends, then drains.
package proxy
