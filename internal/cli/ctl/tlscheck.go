package ctl

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/tlscheck"
)

type tlsCheckOptions struct {
	sidecar string
	output  string
	timeout time.Duration
}

func newTLSCheckCmd(env *cmdenv.Env) *cobra.Command {
	var o tlsCheckOptions
	c := &cobra.Command{
		Use:   "tls-check --sidecar HOST:PORT [-o json]",
		Short: "Show how each live connection of a sidecar is protected: mTLS, TLS or plaintext",
		Long: `tls-check reads a sidecar's live connections from its admin endpoint
(/debug/connections) and prints, for each inbound and outbound connection: the peer
address, the peer's and the local SPIFFE ID, the protocol, the mode (mTLS, TLS,
plaintext) with the setting that decided it (the PeerAuthentication mode inbound —
plaintext appears only under PERMISSIVE or DISABLE — and the DestinationRule TLS mode
outbound), the TLS version, cipher suite and key exchange (post-quantum hybrids such as
X25519MLKEM768 are marked) and the authorization policy that admitted the connection's
last request ("-" when none applied). Outbound TLS details come from the pooled
upstream connection and are not listed per connection; the mode is the DestinationRule's,
which the sidecar enforces or refuses the connection.

The admin endpoint listens on loopback by default: run this on the workload's host.`,
		Example: `  meshguard ctl tls-check --sidecar 127.0.0.1:15020
  meshguard ctl tls-check --sidecar 127.0.0.1:15020 -o json | jq '.connections[] | select(.mode != "mTLS")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.output != "table" && o.output != "json" {
				return cmdenv.Exit(2, fmt.Errorf("-o %q: want table or json", o.output))
			}
			if _, _, err := net.SplitHostPort(o.sidecar); err != nil {
				return cmdenv.Exit(2, fmt.Errorf("--sidecar %q: want the sidecar admin's HOST:PORT, e.g. 127.0.0.1:15020", o.sidecar))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			conns, err := tlscheck.Fetch(ctx, &http.Client{}, o.sidecar)
			if err != nil {
				return cmdenv.Exit(1, err)
			}
			r := tlscheck.NewReport(o.sidecar, conns)
			if o.output == "json" {
				return r.WriteJSON(env.Stdout)
			}
			return r.WriteText(env.Stdout)
		},
	}
	f := c.Flags()
	f.StringVar(&o.sidecar, "sidecar", "127.0.0.1:15020", "the sidecar admin address, HOST:PORT")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "give up after this long")
	return c
}
