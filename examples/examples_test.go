package examples_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/examples"
	"github.com/meshguard/meshguard/internal/cli"
)

// validate runs `meshguard ctl validate -f path...` exactly as a user would.
func validate(t *testing.T, paths ...string) (code int, stdout, stderr string) {
	t.Helper()
	args := []string{"ctl", "validate"}
	for _, p := range paths {
		args = append(args, "-f", p)
	}
	var out, errb bytes.Buffer
	code = cli.Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

var validLine = regexp.MustCompile(`^(\d+) objects valid \(version \S+\)\n$`)

// expectedWarnings are the warnings an example is written to provoke, by file. reviews
// serves only HTTP, so a DENY rule that also closes TCP connections to it is what we
// want (fail closed); the docs explain the warning.
var expectedWarnings = map[string]string{
	examples.RequireJWT: "warning: jwt/require-jwt.yaml:0: AuthorizationPolicy default/reviews-require-jwt: spec.rules[0]: " +
		"this DENY rule uses only HTTP attributes, so it denies all TCP traffic to ports under its scope; specify the ports explicitly\n",
}

// TestEveryExampleValidates checks each file alone and all of them together (the demo's
// config directory holds them all at once): exit status 0, only the expected warnings,
// and the object count the file's documents promise.
func TestEveryExampleValidates(t *testing.T) {
	names := examples.Names()
	if len(names) < 9 {
		t.Fatalf("Names() = %v, want at least the 9 files the constants name", names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := validate(t, name)
			if code != 0 || stderr != expectedWarnings[name] {
				t.Fatalf("ctl validate -f %s: exit %d\nstdout:\n%s\nstderr:\n%s", name, code, stdout, stderr)
			}
			data, err := examples.Read(name)
			if err != nil {
				t.Fatal(err)
			}
			want := countObjects(string(data))
			m := validLine.FindStringSubmatch(stdout)
			if m == nil || m[1] != fmt.Sprint(want) {
				t.Errorf("ctl validate -f %s = %q, want %d objects valid", name, stdout, want)
			}
		})
	}
	t.Run("all together", func(t *testing.T) {
		code, stdout, stderr := validate(t, names...)
		var want strings.Builder
		for _, n := range names {
			want.WriteString(expectedWarnings[n])
		}
		if code != 0 || stderr != want.String() {
			t.Fatalf("ctl validate (all): exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	})
}

// countObjects counts the Istio objects in a file: documents with a kind that is not
// the IstioOperator (which carries MeshConfig, not an object).
func countObjects(yaml string) int {
	n := 0
	for _, doc := range strings.Split(yaml, "\n---\n") {
		if strings.Contains(doc, "\nkind: ") && !strings.Contains(doc, "kind: IstioOperator") {
			n++
		}
	}
	return n
}

// TestConstantsNameFiles guards the exported paths against renames.
func TestConstantsNameFiles(t *testing.T) {
	for _, name := range []string{
		examples.Registry, examples.PeerAuthenticationStrict, examples.DestinationRuleIstioMutual,
		examples.ReviewsAccess, examples.AllowNothing, examples.RatingsReadOnly,
		examples.RequestAuthentication, examples.RequireJWT, examples.AccessLog,
	} {
		if _, err := examples.Read(name); err != nil {
			t.Errorf("Read(%q): %v", name, err)
		}
		if filepath.Ext(name) != ".yaml" {
			t.Errorf("%q: want a .yaml file", name)
		}
	}
}

// TestDemoPlaceholdersPresent checks that the values the demo rewrites are written in
// the files, so a rewrite can never silently do nothing.
func TestDemoPlaceholdersPresent(t *testing.T) {
	read := func(name string) string {
		b, err := examples.Read(name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	checks := []struct{ file, want string }{
		{examples.RequestAuthentication, "http://" + examples.JWKSAddr + "/"},
		{examples.RequestAuthentication, `issuer: "` + examples.Issuer + `"`},
		{examples.AccessLog, "accessLogFile: " + examples.AccessLogFile},
	}
	for svc, port := range examples.RegistryPorts() {
		checks = append(checks, struct{ file, want string }{examples.Registry, fmt.Sprintf("http: %d\n  labels:\n    app: %s\n", port, svc)})
	}
	for _, c := range checks {
		if !strings.Contains(read(c.file), c.want) {
			t.Errorf("%s does not contain %q", c.file, c.want)
		}
	}
}
