package redirect

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// goldenCases are the configurations whose rendered rules are checked byte for byte.
func goldenCases() []struct {
	name string
	cfg  func(*Config)
} {
	return []struct {
		name string
		cfg  func(*Config)
	}{
		{"default", func(*Config) {}},
		{"ipv4-only", func(c *Config) { c.IPv6 = false }},
		{"inbound-port-list", func(c *Config) {
			c.InboundPorts = Ports{List: []uint16{8080, 9080}}
		}},
		{"no-inbound-capture", func(c *Config) { c.InboundPorts = Ports{} }},
		{"exclusions", func(c *Config) {
			c.ExcludeInboundPorts = []uint16{22, 15020}
			c.ExcludeOutboundPorts = []uint16{5432}
			c.ExcludeOutboundIPRanges = []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("fd00:ec2::/64")}
		}},
		{"outbound-include-lists", func(c *Config) {
			c.OutboundIPRanges = Ranges{List: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd10::/108")}}
			c.OutboundPorts = []uint16{443}
		}},
		{"loopback-included", func(c *Config) {
			c.OutboundIPRanges = Ranges{List: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
		}},
		{"custom-ports-and-owner", func(c *Config) {
			c.InboundPort, c.OutboundPort = 16006, 16001
			c.ProxyUID, c.ProxyGID = 2000, 3000
		}},
	}
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		for _, backend := range []Backend{Nftables, Iptables} {
			name := tc.name + "." + map[Backend]string{Nftables: "nft", Iptables: "iptables"}[backend]
			t.Run(name, func(t *testing.T) {
				c := DefaultConfig()
				c.Backend = backend
				tc.cfg(&c)
				r, err := Render(c)
				if err != nil {
					t.Fatalf("Render(%s) error: %v", tc.name, err)
				}
				got := r.String()
				path := filepath.Join("testdata", name+".golden")
				if *update {
					if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("read golden file (run with -update to create): %v", err)
				}
				if diff := cmp.Diff(string(want), got); diff != "" {
					t.Errorf("Render(%s) mismatch (-%s +got):\n%s", tc.name, path, diff)
				}
			})
		}
	}
}

// TestRenderBackendsAgree checks that both backends render the same abstract program:
// every iptables rule has a counterpart in the nft table and the counts per chain match
// once port lists are expanded.
func TestRenderBackendsAgree(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.cfg(&c)
			prog := program(c)
			var want4, want6 int
			for _, r := range prog {
				n := max(len(r.dports), 1)
				switch r.family() {
				case 4:
					want4 += n
				case 6:
					want6 += n
				default:
					want4 += n
					want6 += n
				}
			}
			c.Backend = Iptables
			r, err := Render(c)
			if err != nil {
				t.Fatal(err)
			}
			count := func(p *IptablesProgram) int {
				if p == nil {
					return 0
				}
				return strings.Count(p.Restore, "\n-A ") + len(p.Jumps)
			}
			if got := count(r.IPv4); got != want4 {
				t.Errorf("iptables rules = %d, want %d", got, want4)
			}
			if !c.IPv6 {
				want6 = 0
			}
			if got := count(r.IPv6); got != want6 {
				t.Errorf("ip6tables rules = %d, want %d", got, want6)
			}
			c.Backend = Nftables
			r, err = Render(c)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Count(r.Nft, "counter "); got != len(prog) {
				t.Errorf("nft rules = %d, want %d", got, len(prog))
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // substring; empty means valid
	}{
		{name: "default", mutate: func(*Config) {}},
		{name: "iptables", mutate: func(c *Config) { c.Backend = Iptables }},
		{name: "unknown backend", mutate: func(c *Config) { c.Backend = "ebpf" }, wantErr: `--mode: "ebpf" is not a backend`},
		{name: "zero inbound port", mutate: func(c *Config) { c.InboundPort = 0 }, wantErr: "--inbound-port: must be a port"},
		{name: "zero outbound port", mutate: func(c *Config) { c.OutboundPort = 0 }, wantErr: "--outbound-port: must be a port"},
		{name: "same ports", mutate: func(c *Config) { c.OutboundPort = c.InboundPort }, wantErr: "--outbound-port: 15006 is also the inbound port"},
		{name: "port 0 in list", mutate: func(c *Config) { c.ExcludeOutboundPorts = []uint16{0} }, wantErr: "--exclude-outbound-ports: port 0"},
		{name: "all plus list", mutate: func(c *Config) { c.InboundPorts = Ports{All: true, List: []uint16{80}} }, wantErr: "--inbound-ports"},
		{name: "ranges all plus list", mutate: func(c *Config) {
			c.OutboundIPRanges = Ranges{All: true, List: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
		}, wantErr: "--outbound-ip-ranges"},
		{name: "host bits", mutate: func(c *Config) {
			c.ExcludeOutboundIPRanges = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}
		}, wantErr: "--exclude-outbound-ip-ranges: 10.1.2.3/8 has host bits set; write 10.0.0.0/8"},
		{name: "ipv6 range without ipv6", mutate: func(c *Config) {
			c.IPv6 = false
			c.OutboundIPRanges = Ranges{List: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}}
		}, wantErr: "--outbound-ip-ranges: IPv6 range fd00::/8 given but IPv6 rules are off"},
		{name: "invalid prefix", mutate: func(c *Config) { c.ExcludeOutboundIPRanges = []netip.Prefix{{}} }, wantErr: "invalid CIDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
			if _, rerr := Render(c); rerr == nil {
				t.Errorf("Render accepted a config Validate rejects")
			}
		})
	}
}

var portCases = []struct {
	in      string
	want    string
	wantErr string
}{
	{in: "*", want: "*"},
	{in: " * ", want: "*"},
	{in: "", want: ""},
	{in: "80", want: "80"},
	{in: "443, 80,80", want: "80,443"},
	{in: "65535,1", want: "1,65535"},
	{in: "0", wantErr: `element 1 "0" is not a port`},
	{in: "80,65536", wantErr: `element 2 "65536" is not a port`},
	{in: "80,", wantErr: `element 2 "" is not a port`},
	{in: "http", wantErr: `element 1 "http"`},
	{in: "*,80", wantErr: `element 1 "*"`},
	{in: "-1", wantErr: `"-1"`},
	{in: "8080-8090", wantErr: `"8080-8090"`},
}

func TestParsePorts(t *testing.T) {
	for _, tt := range portCases {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePorts(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePorts(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePorts(%q) error: %v", tt.in, err)
			}
			if got.String() != tt.want {
				t.Errorf("ParsePorts(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

var cidrCases = []struct {
	in      string
	want    string
	wantErr string
}{
	{in: "*", want: "*"},
	{in: "", want: ""},
	{in: "10.0.0.0/8", want: "10.0.0.0/8"},
	{in: "10.1.2.3", want: "10.1.2.3/32"},
	{in: "fd00::/8, 10.0.0.0/8 ,10.0.0.0/8", want: "10.0.0.0/8,fd00::/8"},
	{in: "::1", want: "::1/128"},
	{in: "10.0.0.0/33", wantErr: `element 1 "10.0.0.0/33" is not a CIDR`},
	{in: "10.1.0.0/8", wantErr: "host bits set; write 10.0.0.0/8"},
	{in: "fe80::1%eth0/128", wantErr: "not a CIDR"},
	{in: "fe80::1%eth0", wantErr: "zoned"},
	{in: "::ffff:10.0.0.0/104", wantErr: "IPv4-mapped"},
	{in: "10.0.0.0/8,bogus", wantErr: `element 2 "bogus"`},
	{in: "*,10.0.0.0/8", wantErr: `element 1 "*"`},
}

func TestParseRanges(t *testing.T) {
	for _, tt := range cidrCases {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRanges(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseRanges(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRanges(%q) error: %v", tt.in, err)
			}
			if got.String() != tt.want {
				t.Errorf("ParseRanges(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzParsePorts: accepted input round-trips through String, and its ports are valid,
// sorted and unique; rejected input yields the zero value.
func FuzzParsePorts(f *testing.F) {
	for _, tc := range portCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePorts(s)
		if err != nil {
			if p.All || p.List != nil {
				t.Fatalf("ParsePorts(%q) = %+v with error %v: partial value", s, p, err)
			}
			return
		}
		for i, v := range p.List {
			if v == 0 || i > 0 && p.List[i-1] >= v {
				t.Fatalf("ParsePorts(%q) = %v: not sorted, unique, non-zero", s, p.List)
			}
		}
		again, err := ParsePorts(p.String())
		if err != nil || again.String() != p.String() {
			t.Fatalf("ParsePorts(%q) = %q does not round-trip: %q, %v", s, p, again, err)
		}
	})
}

// FuzzParseRanges: accepted input round-trips, every prefix is canonical and renders
// into rules that validate; rejected input yields the zero value.
func FuzzParseRanges(f *testing.F) {
	for _, tc := range cidrCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRanges(s)
		if err != nil {
			if r.All || r.List != nil {
				t.Fatalf("ParseRanges(%q) = %+v with error %v: partial value", s, r, err)
			}
			return
		}
		for _, p := range r.List {
			if !p.IsValid() || p != p.Masked() || p.Addr().Zone() != "" {
				t.Fatalf("ParseRanges(%q) yielded non-canonical prefix %v", s, p)
			}
		}
		again, err := ParseRanges(r.String())
		if err != nil || again.String() != r.String() {
			t.Fatalf("ParseRanges(%q) = %q does not round-trip: %q, %v", s, r, again, err)
		}
		c := DefaultConfig()
		c.OutboundIPRanges = r
		c.ExcludeOutboundIPRanges = r.List
		for _, b := range []Backend{Nftables, Iptables} {
			c.Backend = b
			if _, err := Render(c); err != nil {
				t.Fatalf("Render with ranges %q: %v", r, err)
			}
		}
	})
}
