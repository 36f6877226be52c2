package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Backend selects the tool that programs the rules.
type Backend string

const (
	// Nftables writes one `inet` table (IPv4 and IPv6 together) with `nft -f`, replaced
	// atomically in a single transaction. The default.
	Nftables Backend = "nftables"
	// Iptables writes chains in the nat table with iptables-restore and ip6tables-restore,
	// as istio-iptables does.
	Iptables Backend = "iptables"
)

// Defaults matching Istio's sidecar: Envoy's outbound port 15001, inbound capture port
// 15006 and the proxy user 1337.
const (
	DefaultInboundPort  = 15006
	DefaultOutboundPort = 15001
	DefaultProxyUID     = 1337
)

// Config is what `meshguard init` programs. The zero value is not valid; start from
// DefaultConfig. Field semantics follow istio-iptables and the
// traffic.sidecar.istio.io/* annotations.
type Config struct {
	Backend Backend
	// InboundPort receives captured inbound TCP (Istio's inbound capture port).
	InboundPort uint16
	// OutboundPort receives captured outbound TCP (Envoy's port in Istio).
	OutboundPort uint16
	// ProxyUID and ProxyGID own the sidecar process: its traffic is never captured,
	// which is what stops the proxy from looping into itself.
	ProxyUID uint32
	ProxyGID uint32
	// InboundPorts are the destination ports captured inbound: All ("*"), a list, or
	// none (empty: no inbound capture at all).
	InboundPorts Ports
	// ExcludeInboundPorts are left alone when InboundPorts is All.
	ExcludeInboundPorts []uint16
	// OutboundIPRanges are the destinations captured outbound: All ("*"), a list of
	// CIDRs, or none.
	OutboundIPRanges Ranges
	// ExcludeOutboundIPRanges are never captured; they win over the include lists.
	ExcludeOutboundIPRanges []netip.Prefix
	// OutboundPorts are captured whatever the destination address (after the
	// exclusions), like includeOutboundPorts.
	OutboundPorts []uint16
	// ExcludeOutboundPorts are never captured outbound, checked before anything else.
	ExcludeOutboundPorts []uint16
	// IPv6 also programs IPv6 rules (ip6tables, or the ip6 half of the inet table).
	IPv6 bool
}

// DefaultConfig captures all inbound and outbound TCP, like Istio's default sidecar.
func DefaultConfig() Config {
	return Config{
		Backend:          Nftables,
		InboundPort:      DefaultInboundPort,
		OutboundPort:     DefaultOutboundPort,
		ProxyUID:         DefaultProxyUID,
		ProxyGID:         DefaultProxyUID,
		InboundPorts:     Ports{All: true},
		OutboundIPRanges: Ranges{All: true},
		IPv6:             true,
	}
}

// Validate reports every problem in c, each naming the `meshguard init` flag it comes
// from.
func (c Config) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	switch c.Backend {
	case Nftables, Iptables:
	default:
		bad("mode", "%q is not a backend; want nftables or iptables", c.Backend)
	}
	if c.InboundPort == 0 {
		bad("inbound-port", "must be a port between 1 and 65535")
	}
	if c.OutboundPort == 0 {
		bad("outbound-port", "must be a port between 1 and 65535")
	}
	if c.InboundPort != 0 && c.InboundPort == c.OutboundPort {
		bad("outbound-port", "%d is also the inbound port; inbound and outbound capture need different ports", c.OutboundPort)
	}
	checkPorts := func(flag string, ps []uint16) {
		if slices.Contains(ps, 0) {
			bad(flag, "port 0 is not a port")
		}
	}
	checkPorts("inbound-ports", c.InboundPorts.List)
	checkPorts("exclude-inbound-ports", c.ExcludeInboundPorts)
	checkPorts("outbound-ports", c.OutboundPorts)
	checkPorts("exclude-outbound-ports", c.ExcludeOutboundPorts)
	if c.InboundPorts.All && len(c.InboundPorts.List) > 0 {
		bad("inbound-ports", "\"*\" cannot be combined with a port list")
	}
	if c.OutboundIPRanges.All && len(c.OutboundIPRanges.List) > 0 {
		bad("outbound-ip-ranges", "\"*\" cannot be combined with a CIDR list")
	}
	checkRanges := func(flag string, rs []netip.Prefix) {
		for _, p := range rs {
			switch {
			case !p.IsValid():
				bad(flag, "invalid CIDR")
			case p != p.Masked():
				bad(flag, "%s has host bits set; write %s", p, p.Masked())
			case p.Addr().Is6() && !c.IPv6:
				bad(flag, "IPv6 range %s given but IPv6 rules are off (--ipv6=false)", p)
			}
		}
	}
	checkRanges("outbound-ip-ranges", c.OutboundIPRanges.List)
	checkRanges("exclude-outbound-ip-ranges", c.ExcludeOutboundIPRanges)
	return errors.Join(errs...)
}

// Ports selects TCP ports: every port (All), an explicit list, or none.
type Ports struct {
	All  bool
	List []uint16
}

// ParsePorts reads "*" (all ports), "" (none) or a comma-separated list of ports
// ("80,443"). Duplicates are dropped and the list is sorted, so equal selections compare
// and render equal.
func ParsePorts(s string) (Ports, error) {
	s = strings.TrimSpace(s)
	if s == "*" {
		return Ports{All: true}, nil
	}
	list, err := ParsePortList(s)
	if err != nil {
		return Ports{}, err
	}
	return Ports{List: list}, nil
}

// ParsePortList reads "" or a comma-separated list of ports between 1 and 65535. It
// never returns a partial list: any bad element fails the whole value.
func ParsePortList(s string) ([]uint16, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []uint16
	for i, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("element %d %q is not a port between 1 and 65535", i+1, f)
		}
		out = append(out, uint16(n))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// String renders p in the form ParsePorts reads.
func (p Ports) String() string {
	if p.All {
		return "*"
	}
	return formatPorts(p.List)
}

func formatPorts(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// Ranges selects destination addresses: all (All), a list of CIDRs, or none.
type Ranges struct {
	All  bool
	List []netip.Prefix
}

// ParseRanges reads "*" (everything), "" (nothing) or a comma-separated list of CIDRs.
func ParseRanges(s string) (Ranges, error) {
	s = strings.TrimSpace(s)
	if s == "*" {
		return Ranges{All: true}, nil
	}
	list, err := ParseCIDRList(s)
	if err != nil {
		return Ranges{}, err
	}
	return Ranges{List: list}, nil
}

// ParseCIDRList reads "" or a comma-separated list of CIDRs ("10.0.0.0/8,fd00::/8").
// A bare address means a single host (/32 or /128). Host bits are an error rather than
// silently masked, because "10.1.2.3/8" usually means the author meant something else.
// It never returns a partial list.
func ParseCIDRList(s string) ([]netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for i, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		var p netip.Prefix
		var err error
		if strings.Contains(f, "/") {
			p, err = netip.ParsePrefix(f)
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(f)
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			return nil, fmt.Errorf("element %d %q is not a CIDR: %w", i+1, f, err)
		}
		if strings.Contains(f, "%") {
			return nil, fmt.Errorf("element %d %q: zoned addresses cannot be matched by rules", i+1, f)
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("element %d %q: write IPv4-mapped ranges as IPv4", i+1, f)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("element %d %q has host bits set; write %s", i+1, f, p.Masked())
		}
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out), nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// String renders r in the form ParseRanges reads.
func (r Ranges) String() string {
	if r.All {
		return "*"
	}
	return formatPrefixes(r.List)
}

func formatPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
