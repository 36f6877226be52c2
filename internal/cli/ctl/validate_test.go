package ctl

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// runCtl runs `ctl args...` and returns stdout, stderr and the exit status cli.Run
// would give.
func runCtl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := NewCmd(cmdenv.New(&stdout, &stderr))
	cmd.SetArgs(args)
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	err := cmd.ExecuteContext(context.Background())
	code := 0
	var ee *cmdenv.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.Code
	case err != nil:
		code = 2
	}
	return stdout.String(), stderr.String(), code
}

const defects = "../../config/testdata/defects/"

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		golden string // stdout golden file under testdata, or "" to match stdoutRE
		stdout string // regexp
		stderr string // regexp
	}{
		{name: "valid seeds", args: []string{"-f", "../../config/testdata/seeds"}, code: 0,
			stdout: `^3 objects valid \(version [0-9a-f]{24}\)\n$`, stderr: `warning: .*EnvoyFilter`},
		{name: "problems", args: []string{"-f", defects + "selector-and-targetref.yaml", "-f", defects + "from-empty.yaml", "-f", defects + "mesh-config-unknown-field.yaml"},
			code: 1, golden: "testdata/validate-problems.golden", stderr: `^warning: .*spec.profile`},
		{name: "warnings only", args: []string{"-f", defects + "method-lowercase.yaml"}, code: 0,
			stdout: `^1 objects valid`, stderr: `"get": methods are matched case-sensitively`},
		{name: "legacy policies load as their modern equivalents", args: []string{"-f", "testdata/convert/mesh-namespace-and-modern.yaml"}, code: 0,
			stdout: `^5 objects valid`, stderr: `warning: .*MeshPolicy.*PeerAuthentication`},
		{name: "legacy policy without faithful translation refused", args: []string{"-f", "testdata/convert/refused-target-without-service.yaml"}, code: 1,
			stdout: `refused-target-without-service.yaml:0: .*targets`},
		{name: "no -f", args: nil, code: 2, stderr: ""},
		{name: "unreadable path", args: []string{"-f", "does-not-exist.yaml"}, code: 2, stdout: `^$`},
		{name: "positional argument", args: []string{"x.yaml"}, code: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCtl(t, append([]string{"validate"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("ctl validate %v exit = %d, want %d\nstdout:\n%s\nstderr:\n%s", tc.args, code, tc.code, stdout, stderr)
			}
			if tc.golden != "" {
				if *update {
					if err := os.WriteFile(tc.golden, []byte(stdout), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(tc.golden)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(string(want), stdout); diff != "" {
					t.Errorf("stdout differs from %s (-want +got):\n%s", tc.golden, diff)
				}
			} else if tc.stdout != "" && !regexp.MustCompile(tc.stdout).MatchString(stdout) {
				t.Errorf("stdout = %q, want match for %q", stdout, tc.stdout)
			}
			if tc.stderr != "" && !regexp.MustCompile(tc.stderr).MatchString(stderr) {
				t.Errorf("stderr = %q, want match for %q", stderr, tc.stderr)
			}
		})
	}
}
