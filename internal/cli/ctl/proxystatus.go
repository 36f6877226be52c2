package ctl

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/xds"
)

// operatorOptions are the flags every fleet-status command shares.
type operatorOptions struct {
	controlPlane string
	creds        xds.OperatorCredentials
	timeout      time.Duration
}

func (o *operatorOptions) addFlags(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&o.controlPlane, "controlplane", "", "control plane address, HOST:PORT (required)")
	f.StringVar(&o.creds.CertFile, "cert", "", "PEM certificate chain of an operator identity (required)")
	f.StringVar(&o.creds.KeyFile, "key", "", "PEM private key of --cert (required)")
	f.StringVar(&o.creds.RootFile, "root-cert", "", "PEM root(s) that verify the control plane (required)")
	f.StringVar(&o.creds.ServerName, "server-name", "", "name to verify in the control plane's certificate (default: the host of --controlplane)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "give up after this long")
}

const operatorHelp = `The control plane serves this only to an operator identity: by default the
service account meshguard-operator in namespace meshguard-system. Get its certificate
like any workload's, from a bootstrap token:

  meshguard ctl token create --namespace meshguard-system --service-account meshguard-operator > op.token
  meshguard agent --controlplane HOST:PORT --ca-root root-cert.pem --token-file op.token \
      --output-dir op/ --sds-socket "" --admin ""

then pass --cert op/cert-chain.pem --key op/key.pem --root-cert op/root-cert.pem.
A workload's certificate is refused.`

type proxyStatusOptions struct {
	operatorOptions
	output string
}

func newProxyStatusCmd(env *cmdenv.Env) *cobra.Command {
	var o proxyStatusOptions
	c := &cobra.Command{
		Use:   "proxy-status --controlplane HOST:PORT --cert FILE --key FILE --root-cert FILE",
		Short: "Show every sidecar connected to the control plane and its config sync state",
		Long: `proxy-status lists every sidecar connected to the control plane: its workload,
identity (from its certificate), labels, certificate expiry, the config version it
last ACKed and, per type, whether it is SYNCED, STALE (pushed, not yet ACKed) or
ERROR (NACKed). Each sidecar's last NACK follows the table with the sidecar's reason.

` + operatorHelp,
		Example: `  meshguard ctl proxy-status --controlplane 127.0.0.1:15012 \
      --cert op/cert-chain.pem --key op/key.pem --root-cert op/root-cert.pem
  meshguard ctl proxy-status --controlplane cp.internal:15012 --cert op.pem --key op.key --root-cert root.pem -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.output != "table" && o.output != "json" {
				return cmdenv.Exit(2, fmt.Errorf("-o %q: want table or json", o.output))
			}
			cc, err := dialOperator(&o.operatorOptions)
			if err != nil {
				return err
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			ps, err := xds.FetchStatus(ctx, cc)
			if err != nil {
				return cmdenv.Exit(1, err)
			}
			if o.output == "json" {
				return xds.WriteStatusJSON(env.Stdout, ps)
			}
			return xds.WriteStatusTable(env.Stdout, ps, time.Now())
		},
	}
	o.addFlags(c)
	c.Flags().StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	return c
}
