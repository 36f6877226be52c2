// Package cli is meshguard's cobra command tree: flags, option structs and wiring into
// the domain packages' Run(ctx) functions. It holds no logic of its own; nothing imports it
// but cmd/meshguard.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/cli/ctl"
)

// Run executes the meshguard command line and returns the process exit status:
// 0 on success, the code of a *cmdenv.ExitError, or 2 for any other error (bad usage or
// bad input).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := NewRootCmd(cmdenv.New(stdout, stderr))
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *cmdenv.ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintf(stderr, "meshguard: %v\n", ee.Err)
		}
		return ee.Code
	}
	fmt.Fprintf(stderr, "meshguard: %v\n", err)
	return 2
}

// NewRootCmd builds the whole command tree. It is exported for the CLI reference
// generator and for tests.
func NewRootCmd(env *cmdenv.Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "meshguard",
		Short: "Zero-trust security for service meshes: mTLS, workload identity, authorization, audit",
		Long: `meshguard gives every service mutual TLS, a SPIFFE identity and identity-based
authorization without touching service code. It speaks Istio's security API
(PeerAuthentication, AuthorizationPolicy, RequestAuthentication, DestinationRule)
and Istio's CSR protocol, in one Go binary: control plane, agent, sidecar and CLI.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return env.Init()
		},
	}
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	env.AddFlags(root)
	// One line per command, one file per command in this package.
	root.AddCommand(
		ctl.NewCmd(env),
		newControlplaneCmd(env),
		newInitCmd(env),
		newAgentCmd(env),
		newDemoCmd(env),
		newSidecarCmd(env),
	)
	return root
}
