package cli

import (
	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/agent"
	"github.com/meshguard/meshguard/internal/cli/cmdenv"
)

// DefaultSDSSocket is where `meshguard agent` serves SDS unless told otherwise: Istio's
// workload socket path, relative to the working directory as in Istio's proxy
// containers (whose working directory is /).
const DefaultSDSSocket = "./var/run/secrets/workload-spiffe-uds/socket"

// agentOptions are `meshguard agent`'s flags as typed.
type agentOptions struct {
	agentFlags
	sdsSocket string
	outputDir string
	admin     string
}

func newAgentCmd(env *cmdenv.Env) *cobra.Command {
	o := &agentOptions{}
	c := &cobra.Command{
		Use:   "agent",
		Short: "Obtain and rotate this workload's certificate and serve it over Envoy SDS",
		Long: `agent creates the workload's private key in memory, sends a CSR to the control
plane's CA (Istio's IstioCertificateService protocol), authenticating with the bootstrap
token the first time and with its current certificate afterwards, and renews the
certificate when --grace-ratio of its lifetime is left. While the CA is unreachable it
keeps serving the current certificate and retries with backoff; an expired certificate
is never served.

Envoy, meshguard's proxy or any SDS client reads the certificate ("default") and the
trust bundle ("ROOTCA") from the SDS socket (mode 0600). --output-dir also writes
cert-chain.pem, key.pem (0600) and root-cert.pem for workloads that do their own TLS.
--admin serves /healthz/ready (200 once a valid certificate is held) and /metrics.`,
		Example: `  # standalone mesh: a token from 'meshguard ctl token create', the root from the control plane
  meshguard agent --controlplane 127.0.0.1:15012 --ca-root root-cert.pem --token-file web.token

  # also write the files for an app that terminates TLS itself, with 1h certificates
  meshguard agent --controlplane cp.example.internal:15012 --ca-root root-cert.pem \
      --token-file /var/run/secrets/meshguard/token --output-dir /etc/certs --cert-ttl 1h

  # custom socket, RSA keys, no admin endpoint
  meshguard agent --controlplane 10.0.0.5:15012 --ca-root root.pem --token-file tok \
      --sds-socket /run/meshguard/sds.sock --key-type rsa-2048 --admin ""`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.toConfig(env)
			if err != nil {
				return err
			}
			if err := agent.RunStandalone(cmd.Context(), cfg); err != nil {
				return cmdenv.Exit(1, err)
			}
			return nil
		},
	}
	f := c.Flags()
	o.agentFlags.add(f, "CA")
	f.StringVar(&o.sdsSocket, "sds-socket", DefaultSDSSocket, "unix socket to serve SDS on; empty disables SDS")
	f.StringVar(&o.outputDir, "output-dir", "", "also write cert-chain.pem, key.pem and root-cert.pem here")
	f.StringVar(&o.admin, "admin", "127.0.0.1:15020", "admin address for /healthz/ready and /metrics; empty disables")
	return c
}

// toConfig checks the flags and builds the agent's configuration, naming the flag in
// every error.
func (o *agentOptions) toConfig(env *cmdenv.Env) (agent.StandaloneConfig, error) {
	cfg, err := o.agentFlags.config(env.Logger)
	if err != nil {
		return agent.StandaloneConfig{}, err
	}
	cfg.OutputDir = o.outputDir
	return agent.StandaloneConfig{Agent: cfg, SDSSocket: o.sdsSocket, Admin: o.admin}, nil
}
