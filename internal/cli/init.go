package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/redirect"
)

// initOptions are `meshguard init`'s flags as typed; toConfig turns them into a
// redirect.Config, naming the flag in every error.
type initOptions struct {
	mode                    string
	inboundPort             uint16
	outboundPort            uint16
	proxyUID                uint32
	proxyGID                uint32
	inboundPorts            string
	excludeInboundPorts     string
	outboundIPRanges        string
	excludeOutboundIPRanges string
	outboundPorts           string
	excludeOutboundPorts    string
	ipv6                    bool
	netns                   string
	dryRun                  bool
	cleanup                 bool
}

func newInitCmd(env *cmdenv.Env) *cobra.Command {
	d := redirect.DefaultConfig()
	o := &initOptions{}
	c := &cobra.Command{
		Use:   "init",
		Short: "Program the traffic-redirect rules (nftables or iptables) in a workload's network namespace",
		Long: `init writes Istio-style redirect rules so that a workload's traffic passes through
its sidecar without the app knowing: inbound TCP to the workload goes to the sidecar's
inbound port, outbound TCP from the app to its outbound port, and the sidecar's own
traffic (by --proxy-uid/--proxy-gid) is left alone. Run it as root before the app
starts, in the workload's namespace or with --netns. Applying again replaces the rules;
--cleanup removes them; --dry-run prints them and changes nothing.

The sidecar must run as --proxy-uid, and must reach the app on 127.0.0.1: its
connections to the workload's other addresses over loopback are treated as inbound.`,
		Example: `  # capture everything in the current namespace (nftables)
  meshguard init

  # a named namespace, iptables, only ports 8080 and 9080 inbound, no capture to the metadata address
  meshguard init --netns app1 --mode iptables --inbound-ports 8080,9080 \
      --exclude-outbound-ip-ranges 169.254.169.254/32

  # show the rules without touching anything
  meshguard init --dry-run --exclude-inbound-ports 22

  # remove them again
  meshguard init --netns /proc/4242/ns/net --cleanup`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.toConfig()
			if err != nil {
				return err
			}
			if o.dryRun && o.cleanup {
				return fmt.Errorf("--dry-run and --cleanup: choose one")
			}
			if o.dryRun {
				rules, err := redirect.Render(cfg)
				if err != nil {
					return err
				}
				_, err = fmt.Fprint(env.Stdout, rules.String())
				return err
			}
			opts := redirect.Options{Netns: o.netns, Logger: env.Logger}
			if o.cleanup {
				if err := redirect.Cleanup(cmd.Context(), cfg, opts); err != nil {
					return cmdenv.Exit(1, err)
				}
				env.Logger.Info("redirect rules removed", "mode", cfg.Backend, "netns", o.netns)
				return nil
			}
			if err := redirect.Apply(cmd.Context(), cfg, opts); err != nil {
				return cmdenv.Exit(1, err)
			}
			env.Logger.Info("redirect rules applied", "mode", cfg.Backend, "netns", o.netns,
				"inbound_port", cfg.InboundPort, "outbound_port", cfg.OutboundPort,
				"proxy_uid", cfg.ProxyUID, "proxy_gid", cfg.ProxyGID)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.mode, "mode", string(d.Backend), "rule backend: nftables or iptables")
	f.Uint16Var(&o.inboundPort, "inbound-port", d.InboundPort, "port the sidecar's inbound listener captures on")
	f.Uint16Var(&o.outboundPort, "outbound-port", d.OutboundPort, "port the sidecar's outbound listener captures on")
	f.Uint32Var(&o.proxyUID, "proxy-uid", d.ProxyUID, "uid the sidecar runs as; its traffic is never captured")
	f.Uint32Var(&o.proxyGID, "proxy-gid", d.ProxyGID, "gid the sidecar runs as; its traffic is never captured")
	f.StringVar(&o.inboundPorts, "inbound-ports", d.InboundPorts.String(), `inbound ports to capture: "*" for all, a comma-separated list, or "" for none`)
	f.StringVar(&o.excludeInboundPorts, "exclude-inbound-ports", "", `inbound ports never captured when --inbound-ports is "*"`)
	f.StringVar(&o.outboundIPRanges, "outbound-ip-ranges", d.OutboundIPRanges.String(), `outbound destinations to capture: "*", comma-separated CIDRs, or "" for none`)
	f.StringVar(&o.excludeOutboundIPRanges, "exclude-outbound-ip-ranges", "", "outbound CIDRs never captured")
	f.StringVar(&o.outboundPorts, "outbound-ports", "", "outbound ports captured whatever the destination address")
	f.StringVar(&o.excludeOutboundPorts, "exclude-outbound-ports", "", "outbound ports never captured")
	f.BoolVar(&o.ipv6, "ipv6", d.IPv6, "also program IPv6 rules")
	f.StringVar(&o.netns, "netns", "", "network namespace to program: a name (from `ip netns`) or a path like /proc/PID/ns/net; default the current one")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the rules as the tool would receive them and change nothing")
	f.BoolVar(&o.cleanup, "cleanup", false, "remove meshguard's rules instead of applying them")
	return c
}

func (o *initOptions) toConfig() (redirect.Config, error) {
	c := redirect.Config{
		Backend:      redirect.Backend(o.mode),
		InboundPort:  o.inboundPort,
		OutboundPort: o.outboundPort,
		ProxyUID:     o.proxyUID,
		ProxyGID:     o.proxyGID,
		IPv6:         o.ipv6,
	}
	var err error
	if c.InboundPorts, err = redirect.ParsePorts(o.inboundPorts); err != nil {
		return c, fmt.Errorf("--inbound-ports: %w", err)
	}
	if c.ExcludeInboundPorts, err = redirect.ParsePortList(o.excludeInboundPorts); err != nil {
		return c, fmt.Errorf("--exclude-inbound-ports: %w", err)
	}
	if c.OutboundIPRanges, err = redirect.ParseRanges(o.outboundIPRanges); err != nil {
		return c, fmt.Errorf("--outbound-ip-ranges: %w", err)
	}
	if c.ExcludeOutboundIPRanges, err = redirect.ParseCIDRList(o.excludeOutboundIPRanges); err != nil {
		return c, fmt.Errorf("--exclude-outbound-ip-ranges: %w", err)
	}
	if c.OutboundPorts, err = redirect.ParsePortList(o.outboundPorts); err != nil {
		return c, fmt.Errorf("--outbound-ports: %w", err)
	}
	if c.ExcludeOutboundPorts, err = redirect.ParsePortList(o.excludeOutboundPorts); err != nil {
		return c, fmt.Errorf("--exclude-outbound-ports: %w", err)
	}
	return c, c.Validate()
}
