package ctl

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const convertData = "testdata/convert/"

func TestConvert(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		golden string // golden file for stdout (success) or stderr (refusal)
		stderr string // regexp
	}{
		{name: "the article's policies", args: []string{"-f", convertData + "article-policies-and-service.yaml"},
			golden: convertData + "article-policies-and-service.golden", stderr: `(?s)^warning: .*converted to PeerAuthentication customer/default.*converted to PeerAuthentication customer/customer-jwt-policy, RequestAuthentication customer/customer-jwt-policy, AuthorizationPolicy customer/customer-jwt-policy-require-jwt`},
		{name: "mesh, namespace with trigger rules, modern beside", args: []string{"-f", convertData + "mesh-namespace-and-modern.yaml"},
			golden: convertData + "mesh-namespace-and-modern.golden", stderr: `triggerRules: the AuthorizationPolicy's paths and notPaths carry these rules`},
		{name: "refused: regex trigger and peerIsOptional", args: []string{"-f", convertData + "refused-regex-trigger-and-peer-optional.yaml"},
			code: 1, golden: convertData + "refused-regex-trigger-and-peer-optional.golden"},
		{name: "refused: target without its Service", args: []string{"-f", convertData + "refused-target-without-service.yaml"},
			code: 1, golden: convertData + "refused-target-without-service.golden"},
		{name: "nothing to convert", args: []string{"-f", "../../config/testdata/seeds"}, stderr: `nothing to convert`},
		{name: "no -f", code: 2},
		{name: "unreadable path", args: []string{"-f", "does-not-exist.yaml"}, code: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCtl(t, append([]string{"convert"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("ctl convert %v exit = %d, want %d\nstdout:\n%s\nstderr:\n%s", tc.args, code, tc.code, stdout, stderr)
			}
			if tc.stderr != "" && !regexp.MustCompile(tc.stderr).MatchString(stderr) {
				t.Errorf("stderr = %q, want it to match %q", stderr, tc.stderr)
			}
			if tc.golden == "" {
				return
			}
			got := stdout
			if code != 0 {
				if stdout != "" {
					t.Errorf("stdout = %q on a refusal, want nothing", stdout)
				}
				got = stderr
			}
			if *update {
				if err := os.WriteFile(tc.golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(tc.golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("output differs from %s (-want +got):\n%s", tc.golden, diff)
			}
			if code != 0 {
				return
			}
			// What convert prints is valid for ctl validate.
			out := filepath.Join(t.TempDir(), "converted.yaml")
			if err := os.WriteFile(out, []byte(stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			vout, verr, vcode := runCtl(t, "validate", "-f", out)
			if vcode != 0 {
				t.Errorf("ctl validate of the converted YAML: exit %d\n%s%s", vcode, vout, verr)
			}
		})
	}
}
