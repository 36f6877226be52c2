package redirect_test

import (
	"fmt"

	"github.com/meshguard/meshguard/internal/redirect"
)

// Capture only ports 8080 and 9080 inbound, and outbound traffic to the service range
// only, with iptables for IPv4.
func ExampleRender() {
	c := redirect.DefaultConfig()
	c.Backend = redirect.Iptables
	c.IPv6 = false
	c.InboundPorts, _ = redirect.ParsePorts("8080,9080")
	c.OutboundIPRanges, _ = redirect.ParseRanges("10.96.0.0/12")
	rules, err := redirect.Render(c)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(rules.IPv4.Restore)
	fmt.Println(rules.IPv4.Jumps)
	// Output:
	// *nat
	// :MESHGUARD_INBOUND - [0:0]
	// :MESHGUARD_IN_REDIRECT - [0:0]
	// :MESHGUARD_OUTPUT - [0:0]
	// :MESHGUARD_REDIRECT - [0:0]
	// -A MESHGUARD_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
	// -A MESHGUARD_REDIRECT -p tcp -j REDIRECT --to-ports 15001
	// -A MESHGUARD_INBOUND -p tcp -m tcp --dport 8080 -j MESHGUARD_IN_REDIRECT
	// -A MESHGUARD_INBOUND -p tcp -m tcp --dport 9080 -j MESHGUARD_IN_REDIRECT
	// -A MESHGUARD_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
	// -A MESHGUARD_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MESHGUARD_IN_REDIRECT
	// -A MESHGUARD_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
	// -A MESHGUARD_OUTPUT -m owner --uid-owner 1337 -j RETURN
	// -A MESHGUARD_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --gid-owner 1337 -j MESHGUARD_IN_REDIRECT
	// -A MESHGUARD_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
	// -A MESHGUARD_OUTPUT -m owner --gid-owner 1337 -j RETURN
	// -A MESHGUARD_OUTPUT -d 127.0.0.1/32 -j RETURN
	// -A MESHGUARD_OUTPUT -d 10.96.0.0/12 -j MESHGUARD_REDIRECT
	// COMMIT
	// [[PREROUTING -p tcp -j MESHGUARD_INBOUND] [OUTPUT -p tcp -j MESHGUARD_OUTPUT]]
}

func ExampleParsePorts() {
	for _, s := range []string{"*", "443,80,80", "", "80,http"} {
		p, err := redirect.ParsePorts(s)
		fmt.Printf("%q -> %q %v\n", s, p, err)
	}
	// Output:
	// "*" -> "*" <nil>
	// "443,80,80" -> "80,443" <nil>
	// "" -> "" <nil>
	// "80,http" -> "" element 2 "http" is not a port between 1 and 65535
}
