package ctl

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/config/legacy"
)

type convertOptions struct {
	files            []string
	defaultNamespace string
}

func newConvertCmd(env *cmdenv.Env) *cobra.Command {
	var o convertOptions
	c := &cobra.Command{
		Use:   "convert -f FILE_OR_DIR [-f FILE_OR_DIR]...",
		Short: "Convert Istio 1.0 authentication policies (Policy, MeshPolicy) to today's API",
		Long: `Convert reads Istio YAML (files, or directories recursively) and prints, for every
authentication.istio.io/v1alpha1 Policy and MeshPolicy, the PeerAuthentication,
RequestAuthentication and AuthorizationPolicy that replace it: one YAML document per
object, each opening with a comment naming the old object and where it was.

A Policy's targets name services; modern policies select workloads by label, so give
each target's Service manifest (kubectl get service NAME -n NS -o yaml) with the
policies. A MeshPolicy converts to the root namespace of the mesh config in the input
(istio-system unless an IstioOperator says otherwise).

An old field without a faithful modern equivalent refuses the whole object: nothing is
printed, and each problem goes to stderr as one line,

  FILE:DOC_INDEX: KIND NAMESPACE/NAME: FIELD: reason

Everything in the input is validated as one configuration, modern objects included.
Warnings go to stderr. Exit status: 0 on success, 1 when there is any problem, 2 for
bad usage or an unreadable path.`,
		Example: `  meshguard ctl convert -f old-policies/ > policies.yaml
  meshguard ctl convert -f policy.yaml -f customer-service.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(o.files) == 0 {
				return cmdenv.Exit(2, errors.New("convert: give at least one -f FILE_OR_DIR"))
			}
			files, err := config.ReadFiles(cmd.Context(), o.files...)
			if err != nil {
				return cmdenv.Exit(2, err)
			}
			convs, warnings, err := legacy.Convert(cmd.Context(), config.Loader{DefaultNamespace: o.defaultNamespace}, files...)
			for _, w := range warnings {
				fmt.Fprintf(env.Stderr, "warning: %s\n", w)
			}
			var problems config.Problems
			switch {
			case errors.As(err, &problems):
				for _, p := range problems {
					fmt.Fprintln(env.Stderr, p)
				}
				return cmdenv.Exit(1, nil)
			case err != nil:
				return cmdenv.Exit(2, err)
			}
			if len(convs) == 0 {
				fmt.Fprintf(env.Stderr, "no %s Policy or MeshPolicy in the input; nothing to convert\n", legacy.APIVersion)
				return nil
			}
			y, err := legacy.Encode(convs)
			if err != nil {
				return cmdenv.Exit(1, err)
			}
			_, err = env.Stdout.Write(y)
			return err
		},
	}
	c.Flags().StringArrayVarP(&o.files, "filename", "f", nil, "file or directory of Istio YAML (repeatable)")
	c.Flags().StringVar(&o.defaultNamespace, "namespace", "default", "namespace for objects whose metadata has none")
	return c
}
