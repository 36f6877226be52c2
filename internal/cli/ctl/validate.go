package ctl

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/config/legacy"
)

func newValidateCmd(env *cmdenv.Env) *cobra.Command {
	var o configInput
	c := &cobra.Command{
		Use:   "validate -f FILE_OR_DIR [-f FILE_OR_DIR]...",
		Short: "Validate Istio security configuration the way Istio's webhook does",
		Long: `Validate reads Istio YAML (files, or directories recursively: .yaml, .yml, .json)
and checks every PeerAuthentication, AuthorizationPolicy, RequestAuthentication,
DestinationRule, ServiceEntry and WorkloadEntry, plus the MeshConfig from an
IstioOperator's spec.meshConfig or the istio ConfigMap's mesh key.

Each problem is printed on stdout as one line:

  FILE:DOC_INDEX: KIND NAMESPACE/NAME: FIELD: reason

DOC_INDEX counts the non-empty YAML documents of a file from 0. Warnings (skipped
kinds, settings Istio also only warns about) go to stderr. Exit status: 0 when
everything is valid, 1 when there is any problem, 2 for bad usage or an unreadable
path.`,
		Example: `  meshguard ctl validate -f policies/
  meshguard ctl validate -f mesh.yaml -f authz.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check("validate"); err != nil {
				return err
			}
			l := config.Loader{DefaultNamespace: o.defaultNamespace, Translator: legacy.Translator{}}
			snap, warnings, err := l.Load(cmd.Context(), o.files...)
			if err := reportLoad(env, env.Stdout, warnings, err); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "%d objects valid (version %s)\n", len(snap.Objects), snap.Version)
			return nil
		},
	}
	o.addFlags(c)
	return c
}
