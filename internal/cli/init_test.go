package cli

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/redirect"
)

// TestInitDryRun checks that every flag reaches the rules: the dry-run output must equal
// the rendering of the Config the flags describe.
func TestInitDryRun(t *testing.T) {
	tests := []struct {
		name string
		args []string
		cfg  func(*redirect.Config)
	}{
		{name: "defaults", cfg: func(*redirect.Config) {}},
		{
			name: "every flag",
			args: []string{"--mode", "iptables", "--inbound-port", "16006", "--outbound-port", "16001",
				"--proxy-uid", "2000", "--proxy-gid", "3000", "--inbound-ports", "9080,8080",
				"--outbound-ip-ranges", "10.96.0.0/12,fd10::/108", "--exclude-outbound-ip-ranges", "10.96.0.1",
				"--outbound-ports", "443", "--exclude-outbound-ports", "5432,53"},
			cfg: func(c *redirect.Config) {
				c.Backend = redirect.Iptables
				c.InboundPort, c.OutboundPort = 16006, 16001
				c.ProxyUID, c.ProxyGID = 2000, 3000
				c.InboundPorts = redirect.Ports{List: []uint16{8080, 9080}}
				c.OutboundIPRanges = redirect.Ranges{List: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd10::/108")}}
				c.ExcludeOutboundIPRanges = []netip.Prefix{netip.MustParsePrefix("10.96.0.1/32")}
				c.OutboundPorts = []uint16{443}
				c.ExcludeOutboundPorts = []uint16{53, 5432}
			},
		},
		{
			name: "no inbound, ipv4 only, excluded inbound",
			args: []string{"--inbound-ports", "", "--ipv6=false", "--exclude-inbound-ports", "22"},
			cfg: func(c *redirect.Config) {
				c.InboundPorts = redirect.Ports{}
				c.IPv6 = false
				c.ExcludeInboundPorts = []uint16{22}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"init", "--dry-run"}, tt.args...)
			if code := Run(context.Background(), args, &stdout, &stderr); code != 0 {
				t.Fatalf("meshguard %s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
			}
			c := redirect.DefaultConfig()
			tt.cfg(&c)
			want, err := redirect.Render(c)
			if err != nil {
				t.Fatal(err)
			}
			if stdout.String() != want.String() {
				t.Errorf("meshguard %s printed:\n%s\nwant:\n%s", strings.Join(args, " "), stdout.String(), want.String())
			}
		})
	}
}

func TestInitBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "ebpf"}, `--mode: "ebpf" is not a backend`},
		{[]string{"--inbound-ports", "80,x"}, `--inbound-ports: element 2 "x" is not a port`},
		{[]string{"--exclude-inbound-ports", "*"}, `--exclude-inbound-ports: element 1 "*"`},
		{[]string{"--outbound-ip-ranges", "10.0.0.1/8"}, "--outbound-ip-ranges: element 1 \"10.0.0.1/8\" has host bits set; write 10.0.0.0/8"},
		{[]string{"--exclude-outbound-ip-ranges", "nope"}, `--exclude-outbound-ip-ranges: element 1 "nope" is not a CIDR`},
		{[]string{"--outbound-ports", "0"}, `--outbound-ports: element 1 "0"`},
		{[]string{"--exclude-outbound-ports", "70000"}, `--exclude-outbound-ports: element 1 "70000"`},
		{[]string{"--outbound-port", "15006"}, "--outbound-port: 15006 is also the inbound port"},
		{[]string{"--ipv6=false", "--outbound-ip-ranges", "fd00::/8"}, "IPv6 range fd00::/8 given but IPv6 rules are off"},
		{[]string{"--cleanup"}, "--dry-run and --cleanup: choose one"},
		{[]string{"extra"}, `unknown command "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"init", "--dry-run"}, tt.args...)
			code := Run(context.Background(), args, &stdout, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("meshguard %s = exit %d, stderr %q; want exit 2 and %q", strings.Join(args, " "), code, stderr.String(), tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("meshguard %s printed rules despite the error:\n%s", strings.Join(args, " "), stdout.String())
			}
		})
	}
}

// TestInitNetnsMissing: applying into a namespace that does not exist fails with exit 1
// and says how to fix it, before any tool runs.
func TestInitNetnsMissing(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"init", "--netns", "meshguard-no-such-netns"}
	code := Run(context.Background(), args, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), `netns "meshguard-no-such-netns"`) || !strings.Contains(stderr.String(), "ip netns add") {
		t.Errorf("meshguard %s = exit %d, stderr %q", strings.Join(args, " "), code, stderr.String())
	}
}
