package ctl

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/config/legacy"
)

type validateOptions struct {
	files            []string
	defaultNamespace string
}

func newValidateCmd(env *cmdenv.Env) *cobra.Command {
	var o validateOptions
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
			if len(o.files) == 0 {
				return cmdenv.Exit(2, errors.New("validate: give at least one -f FILE_OR_DIR"))
			}
			l := config.Loader{DefaultNamespace: o.defaultNamespace, Translator: legacy.Translator{}}
			snap, warnings, err := l.Load(cmd.Context(), o.files...)
			for _, w := range warnings {
				fmt.Fprintf(env.Stderr, "warning: %s\n", w)
			}
			var problems config.Problems
			switch {
			case errors.As(err, &problems):
				for _, p := range problems {
					fmt.Fprintln(env.Stdout, p)
				}
				return cmdenv.Exit(1, nil)
			case err != nil:
				return cmdenv.Exit(2, err)
			}
			fmt.Fprintf(env.Stdout, "%d objects valid (version %s)\n", len(snap.Objects), snap.Version)
			return nil
		},
	}
	c.Flags().StringArrayVarP(&o.files, "filename", "f", nil, "file or directory of Istio YAML (repeatable)")
	c.Flags().StringVar(&o.defaultNamespace, "namespace", "default", "namespace for objects whose metadata has none")
	return c
}
