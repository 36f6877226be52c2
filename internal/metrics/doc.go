// Package metrics owns meshguard's Prometheus collectors: the sidecar's Istio standard
// metrics (istio_requests_total, istio_request_duration_milliseconds,
// istio_request_bytes, istio_response_bytes and the istio_tcp_* counters, with Istio's
// names, labels and buckets), meshguard's own sidecar metrics (authorization denials by
// policy, TLS handshake failures by reason, certificate expiry computed at scrape time,
// rotations, access-log drops), and the control plane's (certificates issued and
// refused, connected sidecars, pushes and NACKs, config errors, CA certificate expiry).
//
// Collectors are registered on a registry the caller passes in, never the global one.
// It imports no other meshguard package; the proxy, agent, CA and xds server call it.
//
// Concurrency: every method is safe for concurrent use. The recording path resolves a
// connection's fixed labels once (Sidecar.Conn) and caches per-response children, so
// recording a request is a couple of map lookups and atomic adds.
package metrics
