package cli

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshguard/meshguard/internal/agent"
	"github.com/meshguard/meshguard/internal/pki"
)

// agentFlags are the workload-certificate flags `meshguard agent` and `meshguard
// sidecar` share: where the CA is, how to trust it, how to bootstrap, what to ask for.
type agentFlags struct {
	controlPlane string
	caRoot       string
	caServerName string
	tokenFile    string
	keyType      string
	certTTL      time.Duration
	graceRatio   float64
}

// add registers the flags; serves says what the control plane address is used for.
func (a *agentFlags) add(f *pflag.FlagSet, serves string) {
	f.StringVar(&a.controlPlane, "controlplane", "", "control plane ("+serves+") address, HOST:PORT (required)")
	f.StringVar(&a.caRoot, "ca-root", "", "PEM file with the root(s) that verify the control plane's serving certificate (required)")
	f.StringVar(&a.caServerName, "ca-server-name", "", "name to verify the control plane's certificate against (default: the host of --controlplane, istiod.istio-system.svc for localhost)")
	f.StringVar(&a.tokenFile, "token-file", "", "file holding the bootstrap token, read again on every bootstrap attempt (required)")
	f.StringVar(&a.keyType, "key-type", "ec-p256", "workload key: ec-p256, ec-p384 or rsa-2048")
	f.DurationVar(&a.certTTL, "cert-ttl", agent.DefaultCertTTL, "certificate lifetime to request (the CA may cap it)")
	f.Float64Var(&a.graceRatio, "grace-ratio", agent.DefaultGraceRatio, "renew when this fraction of the lifetime is left")
}

// config checks the flags and builds the agent's configuration, naming the flag in
// every error.
func (a *agentFlags) config(log *slog.Logger) (agent.Config, error) {
	for _, req := range []struct{ flag, val string }{
		{"--controlplane", a.controlPlane}, {"--ca-root", a.caRoot}, {"--token-file", a.tokenFile},
	} {
		if req.val == "" {
			return agent.Config{}, fmt.Errorf("%s is required", req.flag)
		}
	}
	kt, err := pki.ParseKeyType(a.keyType)
	if err != nil {
		return agent.Config{}, fmt.Errorf("--key-type: %w", err)
	}
	if a.graceRatio <= 0 || a.graceRatio >= 1 {
		return agent.Config{}, fmt.Errorf("--grace-ratio %g: want a fraction between 0 and 1 (exclusive)", a.graceRatio)
	}
	if a.certTTL < time.Second {
		return agent.Config{}, fmt.Errorf("--cert-ttl %s: want at least 1s", a.certTTL)
	}
	b, err := os.ReadFile(a.caRoot)
	if err != nil {
		return agent.Config{}, fmt.Errorf("--ca-root: %w", err)
	}
	roots, err := pki.ParseCertsPEM(b)
	if err != nil {
		return agent.Config{}, fmt.Errorf("--ca-root %s: %w", a.caRoot, err)
	}
	return agent.Config{
		ControlPlane: a.controlPlane,
		CARoots:      roots,
		CAServerName: a.caServerName,
		TokenFile:    a.tokenFile,
		KeyType:      kt,
		CertTTL:      a.certTTL,
		GraceRatio:   a.graceRatio,
		Logger:       log,
	}, nil
}
