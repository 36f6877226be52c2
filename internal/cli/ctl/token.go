package ctl

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/authn/bootstrap"
	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/identity"
)

func newTokenCmd(env *cmdenv.Env) *cobra.Command {
	c := &cobra.Command{
		Use:   "token",
		Short: "Bootstrap tokens that let a workload get its first certificate",
	}
	c.AddCommand(newTokenCreateCmd(env))
	return c
}

type tokenCreateOptions struct {
	dataDir, namespace, serviceAccount string
	ttl                                time.Duration
}

func newTokenCreateCmd(env *cmdenv.Env) *cobra.Command {
	var o tokenCreateOptions
	c := &cobra.Command{
		Use:   "create --data-dir DIR --namespace NS --service-account SA [--ttl 24h]",
		Short: "Mint a signed, expiring join token bound to one namespace and service account",
		Long: `Create prints a bootstrap token on stdout. The token is a JWT signed with the key in
the control plane's data directory (created there if missing), with audience istio-ca,
bound to one namespace and service account, and expiring after --ttl. A workload
presents it as "authorization: Bearer <token>" to get its first certificate, as
Istio's agent does; renewals then authenticate with the mesh certificate.`,
		Example: `  meshguard ctl token create --data-dir /var/lib/meshguard --namespace default --service-account web
  TOKEN=$(meshguard ctl token create --data-dir /tmp/meshguard -n shop -s cart --ttl 1h)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.dataDir == "" || o.namespace == "" || o.serviceAccount == "" {
				return cmdenv.Exit(2, errors.New("token create: --data-dir, --namespace and --service-account are required"))
			}
			if o.ttl <= 0 {
				return cmdenv.Exit(2, fmt.Errorf("token create: --ttl %v must be positive", o.ttl))
			}
			key, err := bootstrap.LoadOrCreateKey(o.dataDir)
			if err != nil {
				return cmdenv.Exit(1, fmt.Errorf("token create: %w", err))
			}
			// The trust domain is the control plane's; only namespace and account go in the token.
			tok, err := bootstrap.Mint(key, identity.Identity{Namespace: o.namespace, ServiceAccount: o.serviceAccount}, o.ttl, time.Now())
			if err != nil {
				return cmdenv.Exit(2, fmt.Errorf("token create: %w", err))
			}
			fmt.Fprintln(env.Stdout, tok)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.dataDir, "data-dir", "", "the control plane's data directory (holds the token signing key)")
	f.StringVarP(&o.namespace, "namespace", "n", "", "namespace the token is bound to")
	f.StringVarP(&o.serviceAccount, "service-account", "s", "", "service account the token is bound to")
	f.DurationVar(&o.ttl, "ttl", 24*time.Hour, "how long the token is valid")
	return c
}
