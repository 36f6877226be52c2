package redirect

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Names of what the rules create. They are fixed so that Cleanup finds them again and an
// operator recognises them next to Istio's (ISTIO_INBOUND, istio-proxy-nat, …).
const (
	// NftTable is the nftables table (family inet) that holds every rule.
	NftTable = "meshguard"

	chainPrerouting = "PREROUTING"
	chainOutput     = "OUTPUT"
	chainInbound    = "MESHGUARD_INBOUND"
	chainInRedirect = "MESHGUARD_IN_REDIRECT"
	chainOutbound   = "MESHGUARD_OUTPUT"
	chainRedirect   = "MESHGUARD_REDIRECT"
)

// ownChains are the chains meshguard creates, in creation order.
var ownChains = []string{chainInbound, chainInRedirect, chainOutbound, chainRedirect}

var (
	loopback4    = netip.MustParsePrefix("127.0.0.1/32")
	loopback6    = netip.MustParsePrefix("::1/128")
	passthrough4 = netip.MustParsePrefix("127.0.0.6/32") // Istio's inbound passthrough source
	passthrough6 = netip.MustParsePrefix("::6/128")
)

// rule is one backend-neutral rule: all set matches must hold, then the verdict applies.
// Both renderers consume the same list, so the nftables and iptables programs cannot
// drift apart in meaning.
type rule struct {
	chain    string
	oifLo    bool
	saddr    netip.Prefix
	daddr    netip.Prefix
	daddrNot bool
	tcp      bool
	dports   []uint16
	uid      *owner
	gid      *owner
	// skipIPv6 matches every IPv6 packet. Only the nft program needs it: with IPv6 off
	// the inet table must let IPv6 through untouched, where iptables simply has no
	// ip6tables program.
	skipIPv6 bool

	jump     string // chain to jump to, or
	redirect uint16 // port to redirect to, or neither: return
}

type owner struct {
	id  uint32
	not bool
}

// family is 4, 6, or 0 when the rule matches both.
func (r rule) family() int {
	if r.skipIPv6 {
		return 6
	}
	for _, p := range []netip.Prefix{r.saddr, r.daddr} {
		if p.IsValid() {
			if p.Addr().Is4() {
				return 4
			}
			return 6
		}
	}
	return 0
}

// program builds the rule list Istio's istio-iptables/istio-nftables would for c,
// minus DNS capture and TPROXY, which meshguard does not do.
func program(c Config) []rule {
	var rs []rule
	add := func(r rule) {
		if f := r.family(); f == 6 && !c.IPv6 {
			return
		}
		rs = append(rs, r)
	}
	// Base hooks (priority -100 is dstnat; nft 1.0 rejects the name on the output hook).
	if !c.IPv6 {
		// Added directly: add() drops IPv6 rules when IPv6 is off, and this one is what
		// keeps IPv6 traffic (::1 included) out of the family-less rules below.
		rs = append(rs, rule{chain: chainPrerouting, skipIPv6: true}, rule{chain: chainOutput, skipIPv6: true})
	}
	if c.InboundPorts.All || len(c.InboundPorts.List) > 0 {
		add(rule{chain: chainPrerouting, tcp: true, jump: chainInbound})
	}
	add(rule{chain: chainOutput, tcp: true, jump: chainOutbound})

	// The two redirect chains.
	add(rule{chain: chainInRedirect, tcp: true, redirect: c.InboundPort})
	add(rule{chain: chainRedirect, tcp: true, redirect: c.OutboundPort})

	// Inbound: everything except the excluded ports, or only the listed ports.
	if c.InboundPorts.All {
		if len(c.ExcludeInboundPorts) > 0 {
			add(rule{chain: chainInbound, tcp: true, dports: c.ExcludeInboundPorts})
		}
		add(rule{chain: chainInbound, tcp: true, jump: chainInRedirect})
	} else if len(c.InboundPorts.List) > 0 {
		add(rule{chain: chainInbound, tcp: true, dports: c.InboundPorts.List, jump: chainInRedirect})
	}

	// Outbound, in Istio's order. Excluded ports first: they win over everything.
	if len(c.ExcludeOutboundPorts) > 0 {
		add(rule{chain: chainOutbound, tcp: true, dports: c.ExcludeOutboundPorts})
	}
	// Connections the proxy makes from the passthrough address to the app.
	add(rule{chain: chainOutbound, oifLo: true, saddr: passthrough4})
	add(rule{chain: chainOutbound, oifLo: true, saddr: passthrough6})
	loopbackIncluded := includesLoopback(c.OutboundIPRanges)
	for _, o := range []struct {
		uid bool
		id  uint32
	}{{true, c.ProxyUID}, {false, c.ProxyGID}} {
		who := func(not bool) (u, g *owner) {
			if o.uid {
				return &owner{o.id, not}, nil
			}
			return nil, &owner{o.id, not}
		}
		// The proxy calling this workload's own non-loopback address (app → own
		// service VIP → outbound proxy → here) goes through inbound processing.
		u, g := who(false)
		add(rule{chain: chainOutbound, oifLo: true, tcp: true, daddr: loopback4, daddrNot: true, uid: u, gid: g, jump: chainInRedirect})
		add(rule{chain: chainOutbound, oifLo: true, tcp: true, daddr: loopback6, daddrNot: true, uid: u, gid: g, jump: chainInRedirect})
		// The app calling itself over loopback stays local unless loopback was asked for.
		if !loopbackIncluded {
			nu, ng := who(true)
			add(rule{chain: chainOutbound, oifLo: true, uid: nu, gid: ng})
		}
		// The proxy's own outbound traffic is never captured: this breaks the loop.
		add(rule{chain: chainOutbound, uid: u, gid: g})
	}
	// Apps that talk to localhost on purpose (sidecar-aware clients, the admin port).
	add(rule{chain: chainOutbound, daddr: loopback4})
	add(rule{chain: chainOutbound, daddr: loopback6})
	for _, p := range c.ExcludeOutboundIPRanges {
		add(rule{chain: chainOutbound, daddr: p})
	}
	if len(c.OutboundPorts) > 0 {
		add(rule{chain: chainOutbound, tcp: true, dports: c.OutboundPorts, jump: chainRedirect})
	}
	if c.OutboundIPRanges.All {
		add(rule{chain: chainOutbound, jump: chainRedirect})
	} else {
		for _, p := range c.OutboundIPRanges.List {
			add(rule{chain: chainOutbound, daddr: p, jump: chainRedirect})
		}
	}
	return rs
}

func includesLoopback(r Ranges) bool {
	for _, p := range r.List {
		if p.Contains(loopback4.Addr()) || p.Contains(loopback6.Addr()) {
			return true
		}
	}
	return false
}

// Rules is the rendered program for one Config.
type Rules struct {
	Backend Backend
	// Nft is the complete `nft -f` input (Backend Nftables). It replaces the table in
	// one transaction, so applying it twice leaves the same ruleset.
	Nft string
	// IPv4 and IPv6 are the iptables programs (Backend Iptables); IPv6 is nil when
	// Config.IPv6 is false.
	IPv4, IPv6 *IptablesProgram
}

// IptablesProgram is the nat-table program for one IP family.
type IptablesProgram struct {
	// Jumps are the rules appended to the built-in chains PREROUTING and OUTPUT, as
	// iptables arguments without the -A/-C/-D verb ("PREROUTING", "-p", "tcp", …).
	// They are kept apart because applying must add each only if it is missing.
	Jumps [][]string
	// Restore is iptables-restore --noflush input that creates (or flushes) meshguard's
	// own chains and fills them; it does not touch the built-in chains.
	Restore string
}

// Render validates c and renders its rules for c.Backend. It is pure: it runs nothing.
func Render(c Config) (Rules, error) {
	if err := c.Validate(); err != nil {
		return Rules{}, err
	}
	prog := program(c)
	out := Rules{Backend: c.Backend}
	switch c.Backend {
	case Nftables:
		out.Nft = renderNft(prog)
	case Iptables:
		out.IPv4 = renderIptables(prog, 4)
		if c.IPv6 {
			out.IPv6 = renderIptables(prog, 6)
		}
	}
	return out, nil
}

// String is what --dry-run prints: the exact input each tool would receive.
func (r Rules) String() string {
	var b strings.Builder
	switch r.Backend {
	case Nftables:
		b.WriteString("# nft -f -\n")
		b.WriteString(r.Nft)
	case Iptables:
		for _, fam := range []struct {
			tool string
			p    *IptablesProgram
		}{{"iptables", r.IPv4}, {"ip6tables", r.IPv6}} {
			if fam.p == nil {
				continue
			}
			fmt.Fprintf(&b, "# %s-restore --noflush\n%s", fam.tool, fam.p.Restore)
			for _, j := range fam.p.Jumps {
				fmt.Fprintf(&b, "# %s -t nat -A %s   (unless already present)\n", fam.tool, strings.Join(j, " "))
			}
		}
	}
	return b.String()
}

// nftChain maps a chain name to the table's chain.
func nftChain(c string) string {
	switch c {
	case chainPrerouting:
		return "prerouting"
	case chainOutput:
		return "output"
	}
	return strings.ToLower(strings.ReplaceAll(c, "_", "-"))
}

func renderNft(prog []rule) string {
	var b strings.Builder
	// "add" then "delete" makes the delete succeed whether or not the table exists;
	// the whole file is one transaction, so there is no moment without rules.
	fmt.Fprintf(&b, "add table inet %s\ndelete table inet %s\n", NftTable, NftTable)
	fmt.Fprintf(&b, "table inet %s {\n", NftTable)
	chains := append([]string{chainPrerouting, chainOutput}, ownChains...)
	for _, ch := range chains {
		fmt.Fprintf(&b, "\tchain %s {\n", nftChain(ch))
		switch ch {
		case chainPrerouting:
			b.WriteString("\t\ttype nat hook prerouting priority -100; policy accept;\n")
		case chainOutput:
			b.WriteString("\t\ttype nat hook output priority -100; policy accept;\n")
		}
		for _, r := range prog {
			if r.chain == ch {
				fmt.Fprintf(&b, "\t\t%s\n", nftRule(r))
			}
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func nftRule(r rule) string {
	var f []string
	if r.skipIPv6 {
		f = append(f, "meta nfproto ipv6")
	}
	if r.oifLo {
		f = append(f, `oifname "lo"`)
	}
	ipFam := func(p netip.Prefix) string {
		if p.Addr().Is4() {
			return "ip"
		}
		return "ip6"
	}
	if r.saddr.IsValid() {
		f = append(f, ipFam(r.saddr), "saddr", r.saddr.String())
	}
	if r.daddr.IsValid() {
		f = append(f, ipFam(r.daddr), "daddr")
		if r.daddrNot {
			f = append(f, "!=")
		}
		f = append(f, r.daddr.String())
	}
	switch {
	case len(r.dports) == 1:
		f = append(f, "tcp dport", strconv.Itoa(int(r.dports[0])))
	case len(r.dports) > 1:
		f = append(f, "tcp dport {", strings.ReplaceAll(formatPorts(r.dports), ",", ", "), "}")
	case r.tcp:
		f = append(f, "meta l4proto tcp")
	}
	for _, o := range []struct {
		key string
		o   *owner
	}{{"meta skuid", r.uid}, {"meta skgid", r.gid}} {
		if o.o == nil {
			continue
		}
		f = append(f, o.key)
		if o.o.not {
			f = append(f, "!=")
		}
		f = append(f, strconv.FormatUint(uint64(o.o.id), 10))
	}
	f = append(f, "counter")
	switch {
	case r.jump != "":
		f = append(f, "jump", nftChain(r.jump))
	case r.redirect != 0:
		f = append(f, "redirect to", ":"+strconv.Itoa(int(r.redirect)))
	default:
		f = append(f, "return")
	}
	return strings.Join(f, " ")
}

func renderIptables(prog []rule, fam int) *IptablesProgram {
	p := &IptablesProgram{}
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, ch := range ownChains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", ch)
	}
	for _, r := range prog {
		if f := r.family(); f != 0 && f != fam {
			continue
		}
		// iptables has no port sets without multiport; one rule per port, as Istio does.
		ports := r.dports
		if len(ports) == 0 {
			ports = []uint16{0}
		}
		for _, port := range ports {
			args := iptablesArgs(r, port)
			if r.chain == chainPrerouting || r.chain == chainOutput {
				p.Jumps = append(p.Jumps, append([]string{r.chain}, args...))
				continue
			}
			fmt.Fprintf(&b, "-A %s %s\n", r.chain, strings.Join(args, " "))
		}
	}
	b.WriteString("COMMIT\n")
	p.Restore = b.String()
	return p
}

func iptablesArgs(r rule, port uint16) []string {
	var a []string
	if r.saddr.IsValid() {
		a = append(a, "-s", r.saddr.String())
	}
	if r.daddr.IsValid() {
		if r.daddrNot {
			a = append(a, "!")
		}
		a = append(a, "-d", r.daddr.String())
	}
	if r.oifLo {
		a = append(a, "-o", "lo")
	}
	if r.tcp || port != 0 {
		a = append(a, "-p", "tcp")
	}
	if port != 0 {
		a = append(a, "-m", "tcp", "--dport", strconv.Itoa(int(port)))
	}
	if r.uid != nil {
		a = append(a, ownerArgs("--uid-owner", r.uid)...)
	}
	if r.gid != nil {
		a = append(a, ownerArgs("--gid-owner", r.gid)...)
	}
	switch {
	case r.jump != "":
		a = append(a, "-j", r.jump)
	case r.redirect != 0:
		a = append(a, "-j", "REDIRECT", "--to-ports", strconv.Itoa(int(r.redirect)))
	default:
		a = append(a, "-j", "RETURN")
	}
	return a
}

func ownerArgs(flag string, o *owner) []string {
	a := []string{"-m", "owner"}
	if o.not {
		a = append(a, "!")
	}
	return append(a, flag, strconv.FormatUint(uint64(o.id), 10))
}
