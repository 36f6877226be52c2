package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/agent"
	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/pki"
)

// DefaultSDSSocket is where `meshguard agent` serves SDS unless told otherwise: Istio's
// workload socket path, relative to the working directory as in Istio's proxy
// containers (whose working directory is /).
const DefaultSDSSocket = "./var/run/secrets/workload-spiffe-uds/socket"

// agentOptions are `meshguard agent`'s flags as typed.
type agentOptions struct {
	controlPlane string
	caRoot       string
	caServerName string
	tokenFile    string
	sdsSocket    string
	outputDir    string
	keyType      string
	certTTL      time.Duration
	graceRatio   float64
	admin        string
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
	f.StringVar(&o.controlPlane, "controlplane", "", "control plane (CA) address, HOST:PORT (required)")
	f.StringVar(&o.caRoot, "ca-root", "", "PEM file with the root(s) that verify the control plane's serving certificate (required)")
	f.StringVar(&o.caServerName, "ca-server-name", "", "name to verify the control plane's certificate against (default: the host of --controlplane, istiod.istio-system.svc for localhost)")
	f.StringVar(&o.tokenFile, "token-file", "", "file holding the bootstrap token, read again on every bootstrap attempt (required)")
	f.StringVar(&o.sdsSocket, "sds-socket", DefaultSDSSocket, "unix socket to serve SDS on; empty disables SDS")
	f.StringVar(&o.outputDir, "output-dir", "", "also write cert-chain.pem, key.pem and root-cert.pem here")
	f.StringVar(&o.keyType, "key-type", "ec-p256", "workload key: ec-p256, ec-p384 or rsa-2048")
	f.DurationVar(&o.certTTL, "cert-ttl", agent.DefaultCertTTL, "certificate lifetime to request (the CA may cap it)")
	f.Float64Var(&o.graceRatio, "grace-ratio", agent.DefaultGraceRatio, "renew when this fraction of the lifetime is left")
	f.StringVar(&o.admin, "admin", "127.0.0.1:15020", "admin address for /healthz/ready and /metrics; empty disables")
	return c
}

// toConfig checks the flags and builds the agent's configuration, naming the flag in
// every error.
func (o *agentOptions) toConfig(env *cmdenv.Env) (agent.StandaloneConfig, error) {
	var zero agent.StandaloneConfig
	for _, req := range []struct{ flag, val string }{
		{"--controlplane", o.controlPlane}, {"--ca-root", o.caRoot}, {"--token-file", o.tokenFile},
	} {
		if req.val == "" {
			return zero, fmt.Errorf("%s is required", req.flag)
		}
	}
	kt, err := pki.ParseKeyType(o.keyType)
	if err != nil {
		return zero, fmt.Errorf("--key-type: %w", err)
	}
	if o.graceRatio <= 0 || o.graceRatio >= 1 {
		return zero, fmt.Errorf("--grace-ratio %g: want a fraction between 0 and 1 (exclusive)", o.graceRatio)
	}
	if o.certTTL < time.Second {
		return zero, fmt.Errorf("--cert-ttl %s: want at least 1s", o.certTTL)
	}
	b, err := os.ReadFile(o.caRoot)
	if err != nil {
		return zero, fmt.Errorf("--ca-root: %w", err)
	}
	roots, err := pki.ParseCertsPEM(b)
	if err != nil {
		return zero, fmt.Errorf("--ca-root %s: %w", o.caRoot, err)
	}
	return agent.StandaloneConfig{
		Agent: agent.Config{
			ControlPlane: o.controlPlane,
			CARoots:      roots,
			CAServerName: o.caServerName,
			TokenFile:    o.tokenFile,
			KeyType:      kt,
			CertTTL:      o.certTTL,
			GraceRatio:   o.graceRatio,
			OutputDir:    o.outputDir,
			Logger:       env.Logger,
		},
		SDSSocket: o.sdsSocket,
		Admin:     o.admin,
	}, nil
}
