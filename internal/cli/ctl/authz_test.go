package ctl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/meshguard/meshguard/internal/meshtest"
)

func TestAuthzCheck(t *testing.T) {
	const dir = "testdata/authz/policies.yaml"
	base := []string{"authz", "check", "-f", dir, "--namespace", "foo", "--labels", "app=httpbin"}
	tests := []struct {
		name   string
		args   []string
		code   int
		golden string // under testdata/authz
	}{
		{"allowed by principal", []string{"--principal", "spiffe://cluster.local/ns/default/sa/sleep", "--path", "/info/version"}, 0, "allow.golden"},
		{"no ALLOW match", []string{"--principal", "spiffe://cluster.local/ns/other/sa/x", "--method", "POST", "--path", "/data"}, 0, "deny-default.golden"},
		// The policy names cluster.local, which stands for the workload's trust domain.
		{"cluster.local principal in another trust domain", []string{"--trust-domain", "example.org", "--principal", "spiffe://example.org/ns/default/sa/sleep", "--path", "/info/version", "-o", "json"}, 0, "allow-trust-domain.golden"},
		{"without --trust-domain the mesh's cluster.local applies", []string{"--principal", "spiffe://example.org/ns/default/sa/sleep", "--path", "/info/version", "-o", "json"}, 0, "deny-other-trust-domain.golden"},
		{"denied, encoded slash normalized", []string{"--principal", "spiffe://cluster.local/ns/default/sa/sleep", "--port", "8080", "--path", "/%2Fadmin/x", "-o", "json"}, 0, "deny-json.golden"},
		{"TCP: DENY with HTTP fields matches", []string{"--port", "8080", "--tcp", "-o", "json"}, 0, "deny-tcp.golden"},
		{"request principal and claims", []string{"--request-principal", "https://issuer.example/alice", "--claim", "groups=dev", "--claim", "groups=admins", "--path", "/x", "-o", "json"}, 0, "allow-claims.golden"},
		{"invalid request is a decision", []string{"--method", "get", "-o", "json"}, 0, "invalid.golden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCtl(t, append(append([]string{}, base...), tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, stderr)
			}
			golden := filepath.Join("testdata/authz", tc.golden)
			if *update {
				if err := os.WriteFile(golden, []byte(stdout), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(string(want), stdout); d != "" {
				t.Errorf("stdout differs from %s (-want +got):\n%s", golden, d)
			}
		})
	}
}

func TestAuthzCheckBadInput(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no -f", []string{"authz", "check", "--namespace", "foo"}, "-f"},
		{"no namespace", []string{"authz", "check", "-f", "testdata/authz"}, "--namespace"},
		{"bad principal", []string{"authz", "check", "-f", "testdata/authz", "--namespace", "foo", "--principal", "sleep"}, "--principal"},
		{"bad ip", []string{"authz", "check", "-f", "testdata/authz", "--namespace", "foo", "--source-ip", "1.2.3"}, "--source-ip"},
		{"bad header", []string{"authz", "check", "-f", "testdata/authz", "--namespace", "foo", "--header", "novalue"}, "--header"},
		{"jwt and claims", []string{"authz", "check", "-f", "testdata/authz", "--namespace", "foo", "--jwt", "x", "--claim", "a=b"}, "--jwt"},
		{"bad output", []string{"authz", "check", "-f", "testdata/authz", "--namespace", "foo", "-o", "yaml"}, "-o"},
		{"missing dir", []string{"authz", "check", "-f", "testdata/nope", "--namespace", "foo"}, "nope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := runErr(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ctl %v = %v, want an error mentioning %q", tc.args, err, tc.want)
			}
			if _, _, code := runCtl(t, tc.args...); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
		})
	}
}

// TestAuthzCheckJWT verifies --jwt against a real JWKS server on loopback.
func TestAuthzCheckJWT(t *testing.T) {
	srv := meshtest.NewJWKSServer(t)
	dir := t.TempDir()
	src, err := os.ReadFile("testdata/authz/policies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ra := `
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - issuer: "` + srv.Issuer() + `"
    jwksUri: "` + srv.JWKSURI() + `"
`
	allowIssuer := strings.ReplaceAll(string(src), "https://issuer.example/*", srv.Issuer()+"/*")
	if err := os.WriteFile(filepath.Join(dir, "all.yaml"), []byte(allowIssuer+ra), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"authz", "check", "-f", dir, "--namespace", "foo", "--labels", "app=httpbin", "--path", "/x", "-o", "json"}
	tests := []struct {
		name, token, decision, reason string
	}{
		{"valid token with the group", srv.Mint(meshtest.Claims{"sub": "alice", "groups": []string{"admins"}}), "ALLOW", "allowed by ALLOW policy foo/httpbin rule 1"},
		{"valid token without it", srv.Mint(meshtest.Claims{"sub": "bob"}), "DENY", "denied: no ALLOW policy matched"},
		{"expired token", srv.Mint(meshtest.Claims{"sub": "alice", "exp": 1000}), "DENY", "rejected by RequestAuthentication (401)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCtl(t, append(args, "--jwt", tc.token)...)
			if code != 0 {
				t.Fatalf("exit %d; stderr %s", code, stderr)
			}
			var got struct{ Decision, Reason string }
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatalf("output %q: %v", stdout, err)
			}
			if got.Decision != tc.decision || !strings.HasPrefix(got.Reason, tc.reason) {
				t.Errorf("check = %+v, want %s with reason %q…", got, tc.decision, tc.reason)
			}
		})
	}
}
