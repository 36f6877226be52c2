package ctl

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/config/legacy"
)

func newConvertCmd(env *cmdenv.Env) *cobra.Command {
	var o configInput
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
			if err := o.check("convert"); err != nil {
				return err
			}
			files, err := config.ReadFiles(cmd.Context(), o.files...)
			if err != nil {
				return cmdenv.Exit(2, err)
			}
			convs, warnings, err := legacy.Convert(cmd.Context(), config.Loader{DefaultNamespace: o.defaultNamespace}, files...)
			// Problems go to stderr: stdout carries only the converted YAML.
			if err := reportLoad(env, env.Stderr, warnings, err); err != nil {
				return err
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
	o.addFlags(c)
	return c
}
