// Package ctl is `meshguard ctl`, the operator's CLI (the istioctl analogue): one file per
// command group, each parsing flags and calling a domain package. No logic lives here.
package ctl

import (
	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
)

// NewCmd returns the `ctl` command with all its subcommands.
func NewCmd(env *cmdenv.Env) *cobra.Command {
	c := &cobra.Command{
		Use:   "ctl",
		Short: "Operate a mesh: PKI, tokens, config validation, authorization checks, status",
	}
	// One line per command group, one file per group in this package.
	c.AddCommand(
		newValidateCmd(env),
		newProxyStatusCmd(env),
		newCertsCmd(env),
		newTLSCheckCmd(env),
		newConfigDumpCmd(env),
		newAuthzCmd(env),
		newPKICmd(env),
		newTokenCmd(env),
		newConvertCmd(env),
	)
	return c
}
