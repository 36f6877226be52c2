package ctl

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/config"
)

// configInput is the Istio YAML input that `ctl validate` and `ctl convert` share: the
// -f paths and the namespace of objects that name none.
type configInput struct {
	files            []string
	defaultNamespace string
}

func (o *configInput) addFlags(c *cobra.Command) {
	c.Flags().StringArrayVarP(&o.files, "filename", "f", nil, "file or directory of Istio YAML (repeatable)")
	c.Flags().StringVar(&o.defaultNamespace, "namespace", "default", "namespace for objects whose metadata has none")
}

// check refuses a command line without input, as bad usage.
func (o *configInput) check(cmd string) error {
	if len(o.files) == 0 {
		return cmdenv.Exit(2, fmt.Errorf("%s: give at least one -f FILE_OR_DIR", cmd))
	}
	return nil
}

// reportLoad prints a load's warnings to stderr and its validation problems to
// problems, one a line in the FILE:DOC_INDEX: KIND NAMESPACE/NAME: FIELD: reason form,
// and turns err into the exit status both commands document: 1 for validation
// problems, 2 for anything else (an unreadable path). It returns nil when err is nil.
func reportLoad(env *cmdenv.Env, problems io.Writer, warnings config.Warnings, err error) error {
	for _, w := range warnings {
		fmt.Fprintf(env.Stderr, "warning: %s\n", w)
	}
	var ps config.Problems
	switch {
	case errors.As(err, &ps):
		for _, p := range ps {
			fmt.Fprintln(problems, p)
		}
		return cmdenv.Exit(1, nil)
	case err != nil:
		return cmdenv.Exit(2, err)
	}
	return nil
}
