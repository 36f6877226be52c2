package tlscheck_test

import (
	"fmt"

	"github.com/meshguard/meshguard/internal/proxy"
	"github.com/meshguard/meshguard/internal/tlscheck"
)

// Classify says what protects a connection from what the sidecar recorded about it.
func ExampleClassify() {
	for _, ci := range []proxy.ConnInfo{
		{Direction: "inbound", Mode: "STRICT", TLSVersion: "TLS 1.3", KeyExchange: "X25519MLKEM768", PeerSPIFFEID: "spiffe://cluster.local/ns/default/sa/sleep"},
		{Direction: "inbound", Mode: "PERMISSIVE"},
		// The sidecar's own session toward the destination.
		{Direction: "outbound", Upstream: true, Mode: "ISTIO_MUTUAL", TLSVersion: "TLS 1.3", KeyExchange: "X25519MLKEM768", PeerSPIFFEID: "spiffe://cluster.local/ns/default/sa/reviews"},
		{Direction: "outbound", Mode: "DISABLE"},
	} {
		c := tlscheck.Classify(ci)
		fmt.Println(c.Direction, c.Mode, c.Setting, c.PostQuantum)
	}
	// Output:
	// inbound mTLS STRICT true
	// inbound plaintext PERMISSIVE false
	// outbound mTLS ISTIO_MUTUAL true
	// outbound plaintext DISABLE false
}
