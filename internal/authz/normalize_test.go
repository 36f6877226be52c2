package authz_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/authz"
	"github.com/meshguard/meshguard/internal/meshtest"
)

var normalizeCases = []struct {
	in                        string
	none, base, merge, decode string // "" = invalid (400)
}{
	{"/", "/", "/", "/", "/"},
	{"/a/b", "/a/b", "/a/b", "/a/b", "/a/b"},
	// Istio's normalization reference examples.
	{"/some%2fdata/%61%62%63", "/some%2fdata/%61%62%63", "/some%2Fdata/abc", "/some%2Fdata/abc", "/some/data/abc"},
	{`/some\data`, `/some\data`, "/some/data", "/some/data", "/some/data"},
	{"/some//data///abc", "/some//data///abc", "/some//data///abc", "/some/data/abc", "/some/data/abc"},
	{"/public/./data/abc/../xyz", "/public/./data/abc/../xyz", "/public/data/xyz", "/public/data/xyz", "/public/data/xyz"},
	{"/foo?v=1", "/foo?v=1", "/foo?v=1", "/foo?v=1", "/foo?v=1"},
	{"/a/../b", "/a/../b", "/b", "/b", "/b"},
	// Bulletin bypasses (ISTIO-SECURITY-2021-005: slashes; -008: fragments).
	{"//admin", "//admin", "//admin", "/admin", "/admin"},
	{"/%2Fadmin", "/%2Fadmin", "/%2Fadmin", "/%2Fadmin", "/admin"},
	{"/%5Cadmin", "/%5Cadmin", "/%5Cadmin", "/%5Cadmin", "/admin"},
	{"/%5cadmin", "/%5cadmin", "/%5Cadmin", "/%5Cadmin", "/admin"},
	{"/admin#frag", "/admin", "/admin", "/admin", "/admin"},
	{"/public/..%2Fadmin", "/public/..%2Fadmin", "/public/..%2Fadmin", "/public/..%2Fadmin", "/admin"},
	{"/%2e%2e/admin", "/%2e%2e/admin", "/admin", "/admin", "/admin"},
	{"/public/%2E%2E/admin", "/public/%2E%2E/admin", "/admin", "/admin", "/admin"},
	{"/../../admin", "/../../admin", "/admin", "/admin", "/admin"},
	{"/%61dmin", "/%61dmin", "/admin", "/admin", "/admin"},
	{"/%252Fadmin", "/%252Fadmin", "/%252Fadmin", "/%252Fadmin", "/%252Fadmin"}, // no double decoding
	{"/a%00b", "", "", "", ""},
	{"/a\x00", "", "", "", ""},
	{"admin", "", "", "", ""},
	{"", "", "", "", ""},
	{"/.well-known/x", "/.well-known/x", "/.well-known/x", "/.well-known/x", "/.well-known/x"},
	{"/a/.", "/a/.", "/a/", "/a/", "/a/"},
	{"/a/..", "/a/..", "/", "/", "/"},
	{"/%2%66admin", "/%2%66admin", "", "", ""}, // decodes into %2f: double-encoding smuggling
	{"/%%34%31", "/%%34%31", "", "", ""},
	{"/%%2F", "/%%2F", "/%%2F", "/%%2F", "/%/"},
}

func TestNormalizePath(t *testing.T) {
	for _, tc := range normalizeCases {
		for _, m := range []struct {
			n    authz.Normalization
			want string
		}{{authz.NormalizeNone, tc.none}, {authz.NormalizeBase, tc.base}, {authz.NormalizeMergeSlashes, tc.merge}, {authz.NormalizeDecodeAndMergeSlashes, tc.decode}} {
			t.Run(m.n.String()+tc.in, func(t *testing.T) {
				got, err := authz.NormalizePath(tc.in, m.n)
				if m.want == "" {
					var ie *authz.InvalidRequestError
					if !errors.As(err, &ie) {
						t.Fatalf("NormalizePath(%q, %v) = %q, %v; want an InvalidRequestError", tc.in, m.n, got, err)
					}
					return
				}
				if err != nil || got != m.want {
					t.Fatalf("NormalizePath(%q, %v) = %q, %v; want %q", tc.in, m.n, got, err, m.want)
				}
			})
		}
	}
}

// TestBulletinBypasses replays the path and host bypasses of Istio's security bulletins
// against a DENY policy, at each normalization level. Under BASE and NONE some of them
// get through, exactly as Istio documents those levels to be vulnerable; the
// recommended DECODE_AND_MERGE_SLASHES denies them all.
func TestBulletinBypasses(t *testing.T) {
	policy := `
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
  - to: [{operation: {hosts: ["secret.foo"]}}]
`
	attacks := []struct {
		path, host string
		none       bool                // denied even under NONE
		from       authz.Normalization // weakest of BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES that denies
	}{
		{"/admin", "", true, authz.NormalizeBase},
		{"//admin", "", false, authz.NormalizeMergeSlashes},
		{"/%2Fadmin", "", false, authz.NormalizeDecodeAndMergeSlashes},
		{"/%2fadmin", "", false, authz.NormalizeDecodeAndMergeSlashes},
		{"/%5Cadmin", "", false, authz.NormalizeDecodeAndMergeSlashes},
		{`/\admin`, "", false, authz.NormalizeMergeSlashes},
		{"/public/../admin", "", false, authz.NormalizeBase},
		{"/public/%2e%2e/admin", "", false, authz.NormalizeBase},
		{"/%61dmin", "", false, authz.NormalizeBase},
		{"/admin#x", "", true, authz.NormalizeBase},
		{"/admin?x=1", "", true, authz.NormalizeBase},
		{"/admin/./users", "", true, authz.NormalizeBase},
		{"/x", "Secret.Foo", true, authz.NormalizeBase},
		{"/x", "SECRET.FOO:443", true, authz.NormalizeBase},
	}
	// Strength order: NONE < BASE < MERGE_SLASHES < DECODE_AND_MERGE_SLASHES.
	rank := map[authz.Normalization]int{authz.NormalizeNone: 0, authz.NormalizeBase: 1, authz.NormalizeMergeSlashes: 2, authz.NormalizeDecodeAndMergeSlashes: 3}
	for _, n := range []authz.Normalization{authz.NormalizeNone, authz.NormalizeBase, authz.NormalizeMergeSlashes, authz.NormalizeDecodeAndMergeSlashes} {
		mesh := meshtest.MeshConfig(t, "pathNormalization: {normalization: "+n.String()+"}")
		e, err := authz.New(objects(t, policy), mesh, authz.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if e.Normalization() != n {
			t.Fatalf("Normalization() = %v, want %v", e.Normalization(), n)
		}
		for _, a := range attacks {
			t.Run(n.String()+" "+a.host+a.path, func(t *testing.T) {
				host := a.host
				if host == "" {
					host = "app.foo"
				}
				d := e.Evaluate(context.Background(), &authz.Request{Method: "GET", Path: a.path, Host: host})
				wantDeny := rank[n] >= rank[a.from] || n == authz.NormalizeNone && a.none
				if d.Allow == wantDeny {
					t.Errorf("Evaluate(%q host %q) under %v = %v, want deny=%v", a.path, host, n, d, wantDeny)
				}
				if !d.Allow && d.Policy != "foo/deny-admin" {
					t.Errorf("denied by %q, want foo/deny-admin", d.Policy)
				}
			})
		}
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, tc := range normalizeCases {
		f.Add(tc.in, uint8(0))
		f.Add(tc.in, uint8(3))
	}
	f.Fuzz(func(t *testing.T, in string, level uint8) {
		n := []authz.Normalization{authz.NormalizeNone, authz.NormalizeBase, authz.NormalizeMergeSlashes, authz.NormalizeDecodeAndMergeSlashes}[level%4]
		out, err := authz.NormalizePath(in, n)
		if err != nil {
			if out != "" {
				t.Fatalf("NormalizePath(%q) returned %q with error %v: a rejected input must yield nothing", in, out, err)
			}
			var ie *authz.InvalidRequestError
			if !errors.As(err, &ie) {
				t.Fatalf("NormalizePath(%q) error %T, want *InvalidRequestError", in, err)
			}
			return
		}
		path := out
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		if !strings.HasPrefix(path, "/") || strings.Contains(out, "#") || strings.Contains(out, "%00") || strings.IndexByte(out, 0) >= 0 {
			t.Fatalf("NormalizePath(%q, %v) = %q: not absolute, or kept a fragment or NUL", in, n, out)
		}
		if n == authz.NormalizeNone {
			return
		}
		for _, seg := range strings.Split(path, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("NormalizePath(%q, %v) = %q: dot segment left", in, n, out)
			}
		}
		if strings.Contains(path, `\`) {
			t.Fatalf("NormalizePath(%q, %v) = %q: backslash left", in, n, out)
		}
		if n >= authz.NormalizeMergeSlashes && strings.Contains(path, "//") {
			t.Fatalf("NormalizePath(%q, %v) = %q: slashes not merged", in, n, out)
		}
		if n == authz.NormalizeDecodeAndMergeSlashes {
			if l := strings.ToLower(path); strings.Contains(l, "%2f") || strings.Contains(l, "%5c") {
				t.Fatalf("NormalizePath(%q, %v) = %q: encoded slash left", in, n, out)
			}
		}
		// Single decoding never assembles a new escape (those inputs are rejected), so
		// a second pass changes nothing.
		{
			again, err := authz.NormalizePath(out, n)
			if err != nil || again != out {
				t.Fatalf("NormalizePath not idempotent on %q: %q then %q, %v", in, out, again, err)
			}
		}
	})
}
