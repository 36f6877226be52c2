package authz_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/authz"
	"github.com/meshguard/meshguard/internal/meshtest"
)

// extAuthz is a real HTTP authorizer: it allows requests carrying x-ext-authz: allow,
// answers 500 for x-ext-authz: crash, and denies the rest with 403. It records what it
// was sent.
type extAuthz struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []*http.Request
}

func newExtAuthz(t *testing.T) *extAuthz {
	x := &extAuthz{}
	x.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x.mu.Lock()
		x.seen = append(x.seen, r.Clone(context.Background()))
		x.mu.Unlock()
		switch r.Header.Get("x-ext-authz") {
		case "allow":
			w.Header().Set("x-ext-authz-check-result", "allowed")
			w.Header().Set("x-internal", "secret")
			w.WriteHeader(http.StatusOK)
		case "crash":
			w.WriteHeader(http.StatusInternalServerError)
		case "slow":
			time.Sleep(300 * time.Millisecond)
		default:
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	t.Cleanup(x.srv.Close)
	return x
}

func (x *extAuthz) last(t *testing.T) *http.Request {
	t.Helper()
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.seen) == 0 {
		t.Fatal("the external authorizer was not called")
	}
	return x.seen[len(x.seen)-1]
}

func TestCustom(t *testing.T) {
	x := newExtAuthz(t)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(x.srv.URL, "http://"))
	mesh := meshtest.MeshConfig(t, `
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: `+port+`
    pathPrefix: /check
    timeout: 0.1s
    includeRequestHeadersInCheck: ["x-ext-authz", "x-user-*"]
    includeAdditionalHeadersInCheck: {x-from: meshguard}
    headersToUpstreamOnAllow: ["x-ext-authz-check-*"]
- name: fail-open
  envoyExtAuthzHttp:
    service: foo/ext-authz.foo.svc.cluster.local
    port: 1
    failOpen: true
- name: grpc-only
  envoyExtAuthzGrpc: {service: x.foo.svc.cluster.local, port: 9000}
`)
	// Every provider host resolves to the loopback authorizer or a closed port.
	resolve := func(service string, p uint32) (string, error) {
		return net.JoinHostPort("127.0.0.1", strconv.FormatUint(uint64(p), 10)), nil
	}
	policies := objects(t, `
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: sample-ext-authz-http}
  rules:
  - to: [{operation: {paths: ["/admin/*"]}}]
---
kind: AuthorizationPolicy
metadata: {name: deny-post, namespace: foo}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: ["POST"]}}]}]
`)
	e, err := authz.New(policies, mesh, authz.Options{ResolveProvider: resolve})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		req     authz.Request
		allow   bool
		status  int
		policy  string
		upsteam string
	}{
		{"authorizer allows", authz.Request{Method: "GET", Host: "app.foo", Path: "/admin/x?q=1", Headers: []authz.Header{{"x-ext-authz", "allow"}, {"X-User-Id", "7"}, {"cookie", "s"}}}, true, 0, "", "allowed"},
		{"authorizer denies", authz.Request{Method: "GET", Path: "/admin/x", Headers: []authz.Header{{"x-ext-authz", "deny"}}}, false, 403, "foo/ext-authz", ""},
		{"authorizer errors: fail closed", authz.Request{Method: "GET", Path: "/admin/x", Headers: []authz.Header{{"x-ext-authz", "crash"}}}, false, 403, "foo/ext-authz", ""},
		{"authorizer times out: fail closed", authz.Request{Method: "GET", Path: "/admin/x", Headers: []authz.Header{{"x-ext-authz", "slow"}}}, false, 403, "foo/ext-authz", ""},
		{"not matched: authorizer not asked", authz.Request{Method: "GET", Path: "/public", Headers: []authz.Header{{"x-ext-authz", "deny"}}}, true, 0, "", ""},
		{"authorizer allows, DENY still applies", authz.Request{Method: "POST", Path: "/admin/x", Headers: []authz.Header{{"x-ext-authz", "allow"}}}, false, 403, "foo/deny-post", ""},
		{"TCP: HTTP provider skipped, DENY on HTTP fields matches", authz.Request{TCP: true}, false, 403, "foo/deny-post", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := e.Evaluate(context.Background(), &tc.req)
			if d.Allow != tc.allow || d.Status != tc.status || d.Policy != tc.policy {
				t.Fatalf("Evaluate = %v status %d, want allow=%v status=%d policy=%q", d, d.Status, tc.allow, tc.status, tc.policy)
			}
			if tc.upsteam != "" {
				if len(d.UpstreamHeaders) != 1 || d.UpstreamHeaders[0].Value != tc.upsteam {
					t.Errorf("UpstreamHeaders = %v, want only x-ext-authz-check-result", d.UpstreamHeaders)
				}
			}
		})
	}
	// What the authorizer saw for the first request.
	x.mu.Lock()
	first := x.seen[0]
	x.mu.Unlock()
	if first.URL.Path != "/check/admin/x" || first.URL.RawQuery != "q=1" || first.Host != "app.foo" || first.Method != "GET" {
		t.Errorf("check request = %s %s host %s, want GET /check/admin/x?q=1 host app.foo", first.Method, first.URL, first.Host)
	}
	if first.Header.Get("X-User-Id") != "7" || first.Header.Get("x-from") != "meshguard" || first.Header.Get("cookie") != "" {
		t.Errorf("check request headers = %v: want x-user-id and x-from, no cookie", first.Header)
	}
	_ = x.last(t)

	t.Run("fail open", func(t *testing.T) {
		e, err := authz.New(objects(t, "kind: AuthorizationPolicy\nmetadata: {name: fo, namespace: foo}\nspec: {action: CUSTOM, provider: {name: fail-open}, rules: [{}]}\n"), mesh, authz.Options{ResolveProvider: resolve})
		if err != nil {
			t.Fatal(err)
		}
		if d := e.Evaluate(context.Background(), &authz.Request{Method: "GET", Path: "/"}); !d.Allow {
			t.Fatalf("Evaluate = %v, want allowed: the provider fails open", d)
		}
	})
	for _, name := range []string{"grpc-only", "missing"} {
		t.Run("unusable provider "+name+" denies everything", func(t *testing.T) {
			e, err := authz.New(objects(t, "kind: AuthorizationPolicy\nmetadata: {name: c, namespace: foo}\nspec: {action: CUSTOM, provider: {name: "+name+"}, rules: [{to: [{operation: {paths: [\"/x\"]}}]}]}\n"), mesh, authz.Options{})
			if err != nil {
				t.Fatal(err)
			}
			d := e.Evaluate(context.Background(), &authz.Request{Method: "GET", Path: "/other"})
			if d.Allow || d.Action != authz.ActionCustom || !strings.Contains(d.Reason, name) {
				t.Fatalf("Evaluate = %v, want a fail-closed CUSTOM denial naming %q", d, name)
			}
		})
	}
}
