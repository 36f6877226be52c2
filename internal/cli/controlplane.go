package cli

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/controlplane"
	"github.com/meshguard/meshguard/internal/metrics"
)

// controlplaneOptions are `meshguard controlplane`'s flags.
type controlplaneOptions struct {
	dataDir, cacerts, listen, trustDomain string
	configDir, admin                      string
	workloadCertTTL, maxWorkloadCertTTL   time.Duration
}

func (o *controlplaneOptions) toConfig(env *cmdenv.Env) controlplane.Config {
	return controlplane.Config{
		DataDir:            o.dataDir,
		CACertsDir:         o.cacerts,
		Listen:             o.listen,
		TrustDomain:        o.trustDomain,
		WorkloadCertTTL:    o.workloadCertTTL,
		MaxWorkloadCertTTL: o.maxWorkloadCertTTL,
		Logger:             env.Logger,
	}
}

func newControlplaneCmd(env *cmdenv.Env) *cobra.Command {
	o := &controlplaneOptions{}
	c := &cobra.Command{
		Use:   "controlplane --data-dir DIR [--config-dir DIR] [--cacerts DIR] [--listen 127.0.0.1:15012] [--admin 127.0.0.1:15014]",
		Short: "Run the control plane: the mesh CA (Istio's CSR protocol) and the config push to sidecars",
		Long: `controlplane runs meshguard's istiod analogue. Its CA serves
istio.v1.auth.IstioCertificateService on --listen over TLS, issuing workload
certificates whose only SAN is spiffe://<trust-domain>/ns/<ns>/sa/<sa> for the
authenticated caller: a bootstrap token (meshguard ctl token create) sent as
"authorization: Bearer <token>", or a valid mesh client certificate for renewal.

Without --cacerts it creates a self-signed root in --data-dir on first start and reuses
it afterwards. With --cacerts it signs with the Istio plug-in CA in that directory
(ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem) and refuses to start unless
the key matches, the certificate is a CA and it chains to root-cert.pem. Either way
--data-dir/root-cert.pem holds the trust bundle to distribute to workloads.

On the same port it pushes configuration to sidecars (the xDS protocol's envelope
carrying Istio resources), each sidecar authenticated by its mesh certificate and sent
only what applies to it. With --config-dir the Istio YAML in that directory is watched
and reloaded on every change; a file that fails validation is refused as a whole and the
last good config stays in force. Without it sidecars get Istio's defaults.

--admin serves Prometheus metrics on /metrics (certificates issued and refused by
reason, connected sidecars, pushes and NACKs, config errors, the CA certificates'
expiry) and readiness on /healthz/ready. The log warns at start and daily when the CA's
own certificate has less than 30 days left; meshguard ctl certs lists every
certificate the mesh depends on.`,
		Example: `  meshguard controlplane --data-dir /tmp/meshguard
  meshguard controlplane --data-dir /tmp/meshguard --config-dir ./mesh-config
  meshguard controlplane --data-dir /var/lib/meshguard --cacerts ./cacerts --listen 0.0.0.0:15012
  meshguard controlplane --data-dir /tmp/mg --trust-domain example.org --workload-cert-ttl 1h --max-workload-cert-ttl 24h
  meshguard controlplane --data-dir /tmp/mg --admin 0.0.0.0:15014`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			m, err := metrics.NewControlPlane(reg, nil)
			if err != nil {
				return cmdenv.Exit(1, err)
			}
			pc := controlplane.PushConfig{ConfigDir: o.configDir, TrustDomain: o.trustDomain, Observer: m, Logger: env.Logger}
			if o.configDir == "" {
				pc.Store = config.NewStaticStore(config.NewSnapshot(nil, nil))
			}
			push, err := controlplane.NewPush(pc)
			if err != nil {
				return cmdenv.Exit(1, err)
			}
			cfg := o.toConfig(env)
			cfg.Register = append(cfg.Register, push.Register)
			cfg.Push, cfg.Metrics = push, m
			cfg.Admin = controlplane.AdminConfig{Listen: o.admin, Gatherer: reg}
			cp, err := controlplane.New(cfg)
			if err != nil {
				return cmdenv.Exit(1, err)
			}
			if err := controlplane.Serve(cmd.Context(), cp, push); err != nil {
				return cmdenv.Exit(1, err)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.dataDir, "data-dir", "", "directory for the CA root, the token key and root-cert.pem (required)")
	f.StringVar(&o.cacerts, "cacerts", "", "Istio plug-in CA directory to sign with instead of a self-signed root")
	f.StringVar(&o.configDir, "config-dir", "", "directory of Istio YAML to watch and push to sidecars (empty: Istio's defaults)")
	f.StringVar(&o.listen, "listen", controlplane.DefaultListen, "gRPC listen address")
	f.StringVar(&o.admin, "admin", controlplane.DefaultAdmin, `admin HTTP address for /metrics and /healthz/ready ("" disables)`)
	f.StringVar(&o.trustDomain, "trust-domain", controlplane.DefaultTrustDomain, "trust domain of issued SPIFFE IDs")
	f.DurationVar(&o.workloadCertTTL, "workload-cert-ttl", ca.DefaultWorkloadTTL, "lifetime of a workload certificate when the request asks for none")
	f.DurationVar(&o.maxWorkloadCertTTL, "max-workload-cert-ttl", ca.DefaultMaxTTL, "longest lifetime a request may get")
	_ = c.MarkFlagRequired("data-dir")
	return c
}
