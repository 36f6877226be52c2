package cli

import (
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/demo"
)

type demoOptions struct {
	once          bool
	workDir       string
	policyTimeout time.Duration
}

func newDemoCmd(env *cmdenv.Env) *cobra.Command {
	var o demoOptions
	c := &cobra.Command{
		Use:   "demo [--once]",
		Short: "Bring up a whole mesh on loopback and watch zero-trust work, step by step",
		Long: `demo starts, on loopback and without root, a control plane (CA and config push,
with temporary data and config directories) and a bookinfo-like application —
productpage calls reviews, reviews calls ratings — each service an unchanged HTTP
server with its own sidecar and service account. Then it applies the example YAML
step by step into the config directory and shows what real requests do:

  1. workload certificates issued (identity, expiry)
  2. PeerAuthentication STRICT + DestinationRule ISTIO_MUTUAL: mTLS, peer identity
     shown, a plaintext client refused
  3. AuthorizationPolicy reviews-access: productpage → reviews allowed, ratings →
     reviews denied (403)
  4. RequestAuthentication + a policy requiring a JWT: no token 403, bad token
     401, valid token 200
  5. the access log in the seeds' format

Every check prints a ✓ or ✗ line. Afterwards the mesh stays up, printing how to
reach each service and the config directory to edit live, until Ctrl-C. With
--once it exits after the walkthrough: status 0 when every check behaved as shown,
1 otherwise (this is how CI runs it).`,
		Example: `  # watch it, then play with the running mesh (Ctrl-C stops it)
  meshguard demo

  # CI: run the walkthrough and fail if any step misbehaves
  meshguard demo --once`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := demo.Run(cmd.Context(), demo.Config{
				Stdout:        env.Stdout,
				Once:          o.once,
				WorkDir:       o.workDir,
				FixedPorts:    true,
				PolicyTimeout: o.policyTimeout,
			})
			var failed *demo.StepsFailedError
			switch {
			case errors.As(err, &failed):
				return cmdenv.Exit(1, nil) // the walkthrough already said which
			case err != nil:
				return cmdenv.Exit(1, err)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&o.once, "once", false, "run the walkthrough, then exit: non-zero if any step did not behave as shown")
	c.Flags().StringVar(&o.workDir, "work-dir", "", "keep data, config, certificates and logs in this directory (default: a temporary one, removed at exit)")
	c.Flags().DurationVar(&o.policyTimeout, "policy-timeout", 5*time.Second, "how long a check waits for a policy change to show in real requests")
	return c
}
