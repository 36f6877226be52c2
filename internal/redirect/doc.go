// Package redirect owns transparent traffic capture for `meshguard init`: it generates
// Istio-style redirect rules (nftables or the iptables nat table) that send a workload's
// inbound TCP to the sidecar's inbound port and the app's outbound TCP to the sidecar's
// outbound port, excluding the sidecar's own traffic by uid, and applies or removes them
// inside a network namespace. It also recovers a redirected connection's original
// destination (SO_ORIGINAL_DST) for the proxy.
//
// Rule generation (Rules, Config.Validate) is pure and safe for concurrent use. Apply and
// Cleanup run the nft or iptables-restore tools and must not run concurrently for the
// same namespace; both are idempotent. The package imports nothing of meshguard's
// control plane or data plane: the proxy imports it for OriginalDst, not the reverse.
package redirect
