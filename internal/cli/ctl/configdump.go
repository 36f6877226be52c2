package ctl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/xds"
)

func dialOperator(o *operatorOptions) (*grpc.ClientConn, error) {
	if o.controlPlane == "" {
		return nil, cmdenv.Exit(2, errors.New("--controlplane HOST:PORT is required"))
	}
	cc, err := xds.DialOperator(o.controlPlane, o.creds)
	if err != nil {
		return nil, cmdenv.Exit(2, err)
	}
	return cc, nil
}

type configDumpOptions struct {
	operatorOptions
	workload string
}

func newConfigDumpCmd(env *cmdenv.Env) *cobra.Command {
	var o configDumpOptions
	c := &cobra.Command{
		Use:   "config-dump --controlplane HOST:PORT --workload NAMESPACE/NAME --cert FILE --key FILE --root-cert FILE",
		Short: "Print the policies in force on one workload's sidecar, as Istio YAML",
		Long: `config-dump prints the configuration a workload's sidecar has ACKed, and so enforces:
the effective MeshConfig (as an IstioOperator) and every PeerAuthentication,
RequestAuthentication, AuthorizationPolicy, DestinationRule, ServiceEntry and
WorkloadEntry the control plane sends it. The output is multi-document YAML that
'meshguard ctl validate' reads back. The workload is NAMESPACE/NAME, where NAME is the
WORKLOAD_NAME its sidecar reports; the sidecar must be connected.

` + operatorHelp,
		Example: `  meshguard ctl config-dump --controlplane 127.0.0.1:15012 --workload default/httpbin \
      --cert op/cert-chain.pem --key op/key.pem --root-cert op/root-cert.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ns, name, ok := strings.Cut(o.workload, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
				return cmdenv.Exit(2, fmt.Errorf("--workload %q: want NAMESPACE/NAME", o.workload))
			}
			cc, err := dialOperator(&o.operatorOptions)
			if err != nil {
				return err
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			snap, version, err := xds.FetchConfigDump(ctx, cc, o.workload)
			if err != nil {
				return cmdenv.Exit(1, err)
			}
			y, err := config.Encode(snap)
			if err != nil {
				return cmdenv.Exit(1, err)
			}
			fmt.Fprintf(env.Stdout, "# config in force on the sidecar of %s: version %s, %d objects\n", o.workload, version, len(snap.Objects))
			_, err = env.Stdout.Write(y)
			return err
		},
	}
	o.addFlags(c)
	c.Flags().StringVar(&o.workload, "workload", "", "the workload, NAMESPACE/NAME (required)")
	return c
}
