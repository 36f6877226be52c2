package authz_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/meshguard/meshguard/internal/authz"
	"github.com/meshguard/meshguard/internal/meshtest"
)

// want is the expected outcome of one request.
type want struct {
	allow   bool
	policy  string // "" = decided by default
	rule    int
	invalid bool
	audit   string // AUDIT policy expected to mark the request
}

type check struct {
	name string
	req  authz.Request
	want want
}

const sleep = "cluster.local/ns/default/sa/sleep"

// jwtReq is a GET whose request.auth.* come from a token with issuer iss and subject sub.
func jwtReq(iss, sub string) authz.Request {
	return authz.Request{Method: "GET", Path: "/", RequestPrincipal: iss + "/" + sub, Claims: map[string]any{"iss": iss, "sub": sub}}
}

func get(path string) authz.Request {
	return authz.Request{Method: "GET", Path: path, Host: "httpbin.foo"}
}

func TestEvaluate(t *testing.T) {
	cases := []struct {
		name     string
		policies string
		mesh     string
		checks   []check
	}{
		{
			// The first example of Istio's AuthorizationPolicy reference.
			name: "reference/allow-httpbin",
			policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    - source:
        namespaces: ["test"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
    - operation:
        methods: ["POST"]
        paths: ["/data"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
`,
			checks: []check{
				{"sleep GET /info/x with google token", authz.Request{SourcePrincipal: "spiffe://" + sleep, Method: "GET", Path: "/info/x", Claims: map[string]any{"iss": "https://accounts.google.com"}}, want{allow: true, policy: "foo/httpbin"}},
				{"namespace test POST /data", authz.Request{SourcePrincipal: "cluster.local/ns/test/sa/any", Method: "POST", Path: "/data", Claims: map[string]any{"iss": "https://accounts.google.com"}}, want{allow: true, policy: "foo/httpbin"}},
				{"no token", authz.Request{SourcePrincipal: sleep, Method: "GET", Path: "/info"}, want{}},
				{"other issuer", authz.Request{SourcePrincipal: sleep, Method: "GET", Path: "/info", Claims: map[string]any{"iss": "https://evil.example"}}, want{}},
				{"GET /data is not allowed", authz.Request{SourcePrincipal: sleep, Method: "GET", Path: "/data", Claims: map[string]any{"iss": "https://accounts.google.com"}}, want{}},
				{"other namespace", authz.Request{SourcePrincipal: "cluster.local/ns/prod/sa/sleep", Method: "GET", Path: "/info", Claims: map[string]any{"iss": "https://accounts.google.com"}}, want{}},
				{"plaintext peer", authz.Request{Method: "GET", Path: "/info", Claims: map[string]any{"iss": "https://accounts.google.com"}}, want{}},
			},
		},
		{
			name: "reference/deny-dev-post",
			policies: `
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source:
        namespaces: ["dev"]
    to:
    - operation:
        methods: ["POST"]
`,
			checks: []check{
				{"dev POST", authz.Request{SourcePrincipal: "cluster.local/ns/dev/sa/x", Method: "POST", Path: "/"}, want{policy: "foo/httpbin"}},
				{"dev GET", authz.Request{SourcePrincipal: "cluster.local/ns/dev/sa/x", Method: "GET", Path: "/"}, want{allow: true}},
				{"prod POST", authz.Request{SourcePrincipal: "cluster.local/ns/prod/sa/x", Method: "POST", Path: "/"}, want{allow: true}},
				{"dev over TCP: methods ignored for DENY", authz.Request{TCP: true, SourcePrincipal: "cluster.local/ns/dev/sa/x"}, want{policy: "foo/httpbin"}},
			},
		},
		{
			name: "reference/deny-post-8080",
			policies: `
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["POST"]
        ports: ["8080"]
`,
			checks: []check{
				{"POST 8080", authz.Request{Method: "POST", Path: "/", DestinationPort: 8080}, want{policy: "foo/httpbin"}},
				{"GET 8080", authz.Request{Method: "GET", Path: "/", DestinationPort: 8080}, want{allow: true}},
				{"POST 9090", authz.Request{Method: "POST", Path: "/", DestinationPort: 9090}, want{allow: true}},
				{"TCP 8080 denied: missing HTTP attributes match for DENY", authz.Request{TCP: true, DestinationPort: 8080}, want{policy: "foo/httpbin"}},
				{"TCP 9090", authz.Request{TCP: true, DestinationPort: 9090}, want{allow: true}},
			},
		},
		{
			name: "reference/audit",
			policies: `
kind: AuthorizationPolicy
metadata: {name: anyname, namespace: ns1}
spec:
  selector:
    matchLabels:
      app: myapi
  action: AUDIT
  rules:
  - to:
    - operation:
        methods: ["GET"]
        paths: ["/user/profile/*"]
`,
			checks: []check{
				{"audited", get("/user/profile/me"), want{allow: true, audit: "ns1/anyname"}},
				{"not audited", get("/other"), want{allow: true}},
			},
		},
		{
			name:     "reference/allow-nothing",
			policies: "kind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: foo}\nspec: {}\n",
			checks: []check{
				{"GET", get("/"), want{}},
				{"TCP", authz.Request{TCP: true}, want{}},
			},
		},
		{
			name:     "reference/allow-all",
			policies: "kind: AuthorizationPolicy\nmetadata: {name: allow-all, namespace: foo}\nspec:\n  rules:\n  - {}\n",
			checks: []check{
				{"GET", get("/anything"), want{allow: true, policy: "foo/allow-all"}},
				{"TCP", authz.Request{TCP: true}, want{allow: true, policy: "foo/allow-all"}},
			},
		},
		{
			name: "deny beats allow",
			policies: `
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: foo}
spec: {rules: [{}]}
---
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/healthz"]}}]
  - to: [{operation: {paths: ["/admin*"]}}]
`,
			checks: []check{
				{"admin", get("/admin/users"), want{policy: "foo/deny-admin", rule: 1}},
				{"other", get("/"), want{allow: true, policy: "foo/allow-all"}},
			},
		},
		{
			name: "source fields and their not forms",
			policies: `
kind: AuthorizationPolicy
metadata: {name: src, namespace: foo}
spec:
  rules:
  - from: [{source: {principals: ["*/sa/sleep"], notPrincipals: ["cluster.local/ns/bad/sa/sleep"]}}]
  - from: [{source: {requestPrincipals: ["https://issuer.example/*"], notRequestPrincipals: ["https://issuer.example/banned"]}}]
  - from: [{source: {namespaces: ["team-*"], notNamespaces: ["team-x"]}}]
  - from: [{source: {serviceAccounts: ["ops/robot", "local-sa"]}}]
  - from: [{source: {ipBlocks: ["10.0.0.0/8"], notIpBlocks: ["10.9.9.9"]}}]
  - from: [{source: {remoteIpBlocks: ["203.0.113.0/24"], notRemoteIpBlocks: ["203.0.113.4"]}}]
  - from: [{source: {trustDomains: ["partner.*"], notTrustDomains: ["partner.bad"]}}]
  - from: [{source: {notServiceAccounts: ["foo/blocked"], namespaces: ["never"]}}]
`,
			checks: []check{
				{"principal suffix", authz.Request{SourcePrincipal: "td/ns/a/sa/sleep", Method: "GET", Path: "/"}, want{allow: true, policy: "foo/src", rule: 0}},
				{"notPrincipals", authz.Request{SourcePrincipal: "cluster.local/ns/bad/sa/sleep", Method: "GET", Path: "/"}, want{}},
				{"requestPrincipals prefix", authz.Request{RequestPrincipal: "https://issuer.example/alice", Method: "GET", Path: "/"}, want{allow: true, policy: "foo/src", rule: 1}},
				{"notRequestPrincipals", authz.Request{RequestPrincipal: "https://issuer.example/banned", Method: "GET", Path: "/"}, want{}},
				{"requestPrincipals on TCP never allow", authz.Request{TCP: true, RequestPrincipal: "https://issuer.example/alice"}, want{}},
				{"namespaces prefix", authz.Request{SourcePrincipal: "cluster.local/ns/team-a/sa/x", Method: "GET", Path: "/"}, want{allow: true, policy: "foo/src", rule: 2}},
				{"notNamespaces", authz.Request{SourcePrincipal: "cluster.local/ns/team-x/sa/x", Method: "GET", Path: "/"}, want{}},
				{"serviceAccounts ns/sa", authz.Request{SourcePrincipal: "cluster.local/ns/ops/sa/robot", Method: "GET", Path: "/"}, want{allow: true, policy: "foo/src", rule: 3}},
				{"serviceAccounts relative to the policy namespace", authz.Request{SourcePrincipal: "cluster.local/ns/foo/sa/local-sa", Method: "GET", Path: "/"}, want{allow: true, policy: "foo/src", rule: 3}},
				{"serviceAccounts other namespace", authz.Request{SourcePrincipal: "cluster.local/ns/bar/sa/local-sa", Method: "GET", Path: "/"}, want{}},
				{"ipBlocks", authz.Request{SourceIP: netip.MustParseAddr("10.1.2.3"), Method: "GET", Path: "/"}, want{allow: true, policy: "foo/src", rule: 4}},
				{"ipBlocks v4-mapped", authz.Request{SourceIP: netip.MustParseAddr("::ffff:10.1.2.3"), Method: "GET", Path: "/"}, want{allow: true, policy: "foo/src", rule: 4}},
				{"notIpBlocks", authz.Request{SourceIP: netip.MustParseAddr("10.9.9.9"), Method: "GET", Path: "/"}, want{}},
				{"remoteIpBlocks", authz.Request{SourceIP: netip.MustParseAddr("192.0.2.1"), RemoteIP: netip.MustParseAddr("203.0.113.7"), Method: "GET", Path: "/"}, want{allow: true, policy: "foo/src", rule: 5}},
				{"notRemoteIpBlocks", authz.Request{RemoteIP: netip.MustParseAddr("203.0.113.4"), Method: "GET", Path: "/"}, want{}},
				{"remote.ip defaults to source.ip", authz.Request{SourceIP: netip.MustParseAddr("203.0.113.8"), Method: "GET", Path: "/"}, want{allow: true, policy: "foo/src", rule: 5}},
				{"trustDomains", authz.Request{SourcePrincipal: "partner.io/ns/x/sa/y", Method: "GET", Path: "/"}, want{allow: true, policy: "foo/src", rule: 6}},
				{"notTrustDomains", authz.Request{SourcePrincipal: "partner.bad/ns/x/sa/y", Method: "GET", Path: "/"}, want{}},
				{"unauthenticated", authz.Request{Method: "GET", Path: "/"}, want{}},
			},
		},
		{
			name: "operation fields and their not forms",
			policies: `
kind: AuthorizationPolicy
metadata: {name: op, namespace: foo}
spec:
  rules:
  - to: [{operation: {hosts: ["httpbin.foo"], paths: ["/h"]}}]
  - to: [{operation: {hosts: ["*.example.com"], notHosts: ["admin.example.com"], paths: ["/s"]}}]
  - to: [{operation: {ports: ["9000"], notPorts: ["9001"]}}]
  - to: [{operation: {methods: ["GET", "HEAD"], notPaths: ["/private*"], paths: ["/m/*"]}}]
  - to: [{operation: {notMethods: ["DELETE"], paths: ["*.json"]}}]
  - to: [{operation: {paths: ["/t/{*}/x", "/files/{**}"]}}]
  - to: [{operation: {hosts: ["httpbin.foo:*"], paths: ["/hp"]}}]
`,
			checks: []check{
				{"host exact", authz.Request{Method: "GET", Host: "httpbin.foo", Path: "/h"}, want{allow: true, policy: "foo/op", rule: 0}},
				{"host case-insensitive", authz.Request{Method: "GET", Host: "HttpBin.Foo", Path: "/h"}, want{allow: true, policy: "foo/op", rule: 0}},
				// Istio matches :authority as sent, port included: "httpbin.foo" does not
				// match "httpbin.foo:8000"; the policy must list "httpbin.foo:*" too.
				{"host with port is not the bare host", authz.Request{Method: "GET", Host: "httpbin.foo:8000", Path: "/h"}, want{}},
				{"host:* prefix matches any port", authz.Request{Method: "GET", Host: "HTTPBIN.foo:8000", Path: "/hp"}, want{allow: true, policy: "foo/op", rule: 6}},
				{"host:* prefix needs the colon", authz.Request{Method: "GET", Host: "httpbin.foo.evil", Path: "/hp"}, want{}},
				{"host other", authz.Request{Method: "GET", Host: "httpbin.bar", Path: "/h"}, want{}},
				{"host suffix", authz.Request{Method: "GET", Host: "api.EXAMPLE.com", Path: "/s"}, want{allow: true, policy: "foo/op", rule: 1}},
				{"notHosts", authz.Request{Method: "GET", Host: "admin.example.com", Path: "/s"}, want{}},
				{"ports", authz.Request{Method: "GET", Path: "/", DestinationPort: 9000}, want{allow: true, policy: "foo/op", rule: 2}},
				{"ports on TCP", authz.Request{TCP: true, DestinationPort: 9000}, want{allow: true, policy: "foo/op", rule: 2}},
				{"notPorts", authz.Request{Method: "GET", Path: "/", DestinationPort: 9001}, want{}},
				{"methods and paths prefix", authz.Request{Method: "HEAD", Path: "/m/a"}, want{allow: true, policy: "foo/op", rule: 3}},
				{"methods mismatch", authz.Request{Method: "POST", Path: "/m/a"}, want{}},
				{"paths suffix with notMethods", authz.Request{Method: "PUT", Path: "/a/b.json"}, want{allow: true, policy: "foo/op", rule: 4}},
				{"notMethods", authz.Request{Method: "DELETE", Path: "/a/b.json"}, want{}},
				{"paths are case-sensitive", authz.Request{Method: "GET", Path: "/M/a"}, want{}},
				{"template {*}", authz.Request{Method: "GET", Path: "/t/abc/x"}, want{allow: true, policy: "foo/op", rule: 5}},
				{"template {*} is one segment", authz.Request{Method: "GET", Path: "/t/a/b/x"}, want{}},
				{"template {**}", authz.Request{Method: "GET", Path: "/files/a/b/c.txt"}, want{allow: true, policy: "foo/op", rule: 5}},
				{"query ignored for matching", authz.Request{Method: "GET", Path: "/t/abc/x?y=1"}, want{allow: true, policy: "foo/op", rule: 5}},
			},
		},
		{
			name: "conditions",
			policies: `
kind: AuthorizationPolicy
metadata: {name: when, namespace: foo}
spec:
  rules:
  - when: [{key: "request.headers[X-Env]", values: ["prod"]}]
  - when: [{key: source.ip, values: ["192.0.2.0/24"]}, {key: remote.ip, notValues: ["192.0.2.66"]}]
  - when: [{key: source.namespace, values: ["ops"]}]
  - when: [{key: source.principal, values: ["cluster.local/ns/x/sa/y"]}]
  - when: [{key: request.auth.principal, values: ["iss.example/alice"]}]
  - when: [{key: request.auth.audiences, values: ["api.*"]}]
  - when: [{key: request.auth.presenter, values: ["web-client"]}]
  - when: [{key: "request.auth.claims[groups]", values: ["admins"]}]
  - when: [{key: "request.auth.claims[realm][role]", values: ["owner"]}]
  - when: [{key: destination.ip, values: ["10.8.0.1"]}, {key: destination.port, values: ["8443"]}]
  - when: [{key: connection.sni, values: ["*.svc.cluster.local"]}]
  - when: [{key: "request.headers[x-tier]", values: ["*"], notValues: ["free"]}]
  - when: [{key: source.serviceAccount, values: ["sre/robot", "local-sa"]}]
`,
			checks: []check{
				{"header, name case-insensitive", authz.Request{Method: "GET", Path: "/", Headers: []authz.Header{{"x-env", "prod"}}}, want{allow: true, policy: "foo/when", rule: 0}},
				// Envoy matches a repeated header on its comma-joined value ("dev,prod"), so
				// an ALLOW on exactly "prod" does not match: never allow more than Istio.
				{"repeated header: ALLOW sees the joined value", authz.Request{Method: "GET", Path: "/", Headers: []authz.Header{{"X-Env", "dev"}, {"X-Env", "prod"}}}, want{}},
				{"repeated header: joined value can match", authz.Request{Method: "GET", Path: "/", Headers: []authz.Header{{"X-Tier", "free"}, {"X-Tier", "gold"}}}, want{allow: true, policy: "foo/when", rule: 11}},
				{"header present but empty: presence matches", authz.Request{Method: "GET", Path: "/", Headers: []authz.Header{{"X-Tier", ""}}}, want{allow: true, policy: "foo/when", rule: 11}},
				{"source.ip and remote.ip", authz.Request{Method: "GET", Path: "/", SourceIP: netip.MustParseAddr("192.0.2.5")}, want{allow: true, policy: "foo/when", rule: 1}},
				{"remote.ip notValues", authz.Request{Method: "GET", Path: "/", SourceIP: netip.MustParseAddr("192.0.2.66")}, want{}},
				{"source.namespace", authz.Request{Method: "GET", Path: "/", SourcePrincipal: "cluster.local/ns/ops/sa/z"}, want{allow: true, policy: "foo/when", rule: 2}},
				{"source.principal", authz.Request{TCP: true, SourcePrincipal: "cluster.local/ns/x/sa/y"}, want{allow: true, policy: "foo/when", rule: 3}},
				{"request.auth.principal", authz.Request{Method: "GET", Path: "/", RequestPrincipal: "iss.example/alice"}, want{allow: true, policy: "foo/when", rule: 4}},
				{"request.auth.audiences", authz.Request{Method: "GET", Path: "/", Audiences: []string{"other", "api.example"}}, want{allow: true, policy: "foo/when", rule: 5}},
				{"request.auth.presenter", authz.Request{Method: "GET", Path: "/", Presenter: "web-client"}, want{allow: true, policy: "foo/when", rule: 6}},
				{"list claim", authz.Request{Method: "GET", Path: "/", Claims: map[string]any{"groups": []any{"dev", "admins"}}}, want{allow: true, policy: "foo/when", rule: 7}},
				{"nested claim", authz.Request{Method: "GET", Path: "/", Claims: map[string]any{"realm": map[string]any{"role": "owner"}}}, want{allow: true, policy: "foo/when", rule: 8}},
				{"nested claim wrong type", authz.Request{Method: "GET", Path: "/", Claims: map[string]any{"realm": "owner"}}, want{}},
				{"destination ip and port", authz.Request{Method: "GET", Path: "/", DestinationIP: netip.MustParseAddr("10.8.0.1"), DestinationPort: 8443}, want{allow: true, policy: "foo/when", rule: 9}},
				{"destination port mismatch", authz.Request{Method: "GET", Path: "/", DestinationIP: netip.MustParseAddr("10.8.0.1"), DestinationPort: 80}, want{}},
				{"connection.sni", authz.Request{TCP: true, SNI: "reviews.default.svc.cluster.local"}, want{allow: true, policy: "foo/when", rule: 10}},
				{"values with notValues", authz.Request{Method: "GET", Path: "/", Headers: []authz.Header{{"X-Tier", "gold"}}}, want{allow: true, policy: "foo/when", rule: 11}},
				{"notValues excludes", authz.Request{Method: "GET", Path: "/", Headers: []authz.Header{{"X-Tier", "free"}}}, want{}},
				{"source.serviceAccount ns/sa", authz.Request{TCP: true, SourcePrincipal: "spiffe://cluster.local/ns/sre/sa/robot"}, want{allow: true, policy: "foo/when", rule: 12}},
				{"source.serviceAccount in the policy namespace", authz.Request{TCP: true, SourcePrincipal: "cluster.local/ns/foo/sa/local-sa"}, want{allow: true, policy: "foo/when", rule: 12}},
				{"source.serviceAccount other namespace", authz.Request{TCP: true, SourcePrincipal: "cluster.local/ns/bar/sa/local-sa"}, want{}},
				{"header conditions on TCP never allow", authz.Request{TCP: true, Headers: []authz.Header{{"X-Env", "prod"}}}, want{}},
			},
		},
		{
			name: "DENY with HTTP-only conditions on TCP denies",
			policies: `
kind: AuthorizationPolicy
metadata: {name: deny-hdr, namespace: foo}
spec:
  action: DENY
  rules:
  - from: [{source: {requestPrincipals: ["*"]}}]
    to: [{operation: {paths: ["/admin"], ports: ["7000"]}}]
    when: [{key: "request.headers[x-admin]", values: ["1"]}]
`,
			checks: []check{
				{"TCP on 7000", authz.Request{TCP: true, DestinationPort: 7000}, want{policy: "foo/deny-hdr"}},
				{"TCP on 7001", authz.Request{TCP: true, DestinationPort: 7001}, want{allow: true}},
				{"HTTP without the header", authz.Request{Method: "GET", Path: "/admin", DestinationPort: 7000, RequestPrincipal: "a/b"}, want{allow: true}},
				{"HTTP with everything", authz.Request{Method: "GET", Path: "/admin", DestinationPort: 7000, RequestPrincipal: "a/b", Headers: []authz.Header{{"x-admin", "1"}}}, want{policy: "foo/deny-hdr"}},
			},
		},
		{
			// Istio splits a requestPrincipals value at its last "/" and matches the
			// token's iss and sub claims separately: "https://issuer.example/*" needs iss
			// to be exactly https://issuer.example, not merely to start with it.
			name: "requestPrincipals match iss and sub separately",
			policies: `
kind: AuthorizationPolicy
metadata: {name: rp, namespace: foo}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["https://issuer.example/*"]}}]
  - from: [{source: {requestPrincipals: ["*/alice"]}}]
  - from: [{source: {requestPrincipals: ["*.example/bob"]}}]
  - from: [{source: {requestPrincipals: ["https://other.example/carol"]}}]
  - when: [{key: request.auth.principal, values: ["*-admin"]}]
  - from: [{source: {requestPrincipals: ["https://a.example/b/c"]}}]
`,
			checks: []check{
				{"issuer exact, any subject", jwtReq("https://issuer.example", "zed"), want{allow: true, policy: "foo/rp", rule: 0}},
				{"longer issuer is another issuer", jwtReq("https://issuer.example/tenant", "zed"), want{}},
				{"any issuer, subject exact", jwtReq("https://x.test", "alice"), want{allow: true, policy: "foo/rp", rule: 1}},
				{"subject must be exact after */", jwtReq("https://x.test", "malice"), want{}},
				{"issuer suffix, subject exact", jwtReq("https://id.example", "bob"), want{allow: true, policy: "foo/rp", rule: 2}},
				{"exact iss/sub", jwtReq("https://other.example", "carol"), want{allow: true, policy: "foo/rp", rule: 3}},
				{"value splits at its last slash", jwtReq("https://a.example/b", "c"), want{allow: true, policy: "foo/rp", rule: 5}},
				{"a subject with a slash does not borrow from the issuer", jwtReq("https://a.example", "b/c"), want{}},
				{"no slash in the value: subject suffix", jwtReq("https://y.test", "ops-admin"), want{allow: true, policy: "foo/rp", rule: 4}},
				{"no token", authz.Request{Method: "GET", Path: "/"}, want{}},
			},
		},
		{
			// Where the authority or a repeated header can be read two ways, a DENY rule
			// matches if either reading makes it match, not* forms included: Istio's
			// reading alone would let "admin.foo:80" past a notHosts DENY on admin.foo
			// (Envoy) or past a header DENY by repeating the header.
			name: "DENY readings fail closed",
			policies: `
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {hosts: ["secret.foo"]}}]
  - to: [{operation: {notHosts: ["public.foo"]}}]
  - when: [{key: "request.headers[x-user]", notValues: ["admin"]}]
  - when: [{key: "request.headers[x-block]", values: ["1"]}]
`,
			checks: []check{
				{"bare host", authz.Request{Method: "GET", Path: "/", Host: "secret.foo", Headers: []authz.Header{{"x-user", "admin"}}}, want{policy: "foo/deny", rule: 0}},
				{"host with port", authz.Request{Method: "GET", Path: "/", Host: "Secret.Foo:443", Headers: []authz.Header{{"x-user", "admin"}}}, want{policy: "foo/deny", rule: 0}},
				{"notHosts: allowed host", authz.Request{Method: "GET", Path: "/", Host: "public.foo", Headers: []authz.Header{{"x-user", "admin"}}}, want{allow: true}},
				{"notHosts: allowed host with a port is denied", authz.Request{Method: "GET", Path: "/", Host: "public.foo:80", Headers: []authz.Header{{"x-user", "admin"}}}, want{policy: "foo/deny", rule: 1}},
				{"notValues: admin passes", authz.Request{Method: "GET", Path: "/", Host: "public.foo", Headers: []authz.Header{{"X-User", "admin"}}}, want{allow: true}},
				{"notValues: admin plus another line is denied", authz.Request{Method: "GET", Path: "/", Host: "public.foo", Headers: []authz.Header{{"X-User", "admin"}, {"x-user", "evil"}}}, want{policy: "foo/deny", rule: 2}},
				{"values: repeated line still denied", authz.Request{Method: "GET", Path: "/", Host: "public.foo", Headers: []authz.Header{{"x-user", "admin"}, {"x-block", "1"}, {"x-block", "1"}}}, want{policy: "foo/deny", rule: 3}},
			},
		},
		{
			// Istio's trust domain migration task: the mesh moved from old-td to new-td
			// and lists old-td as an alias, so the policy written for old-td still admits
			// the workload under its new identity.
			name: "trust domain aliases",
			mesh: "{trustDomain: new-td, trustDomainAliases: [old-td]}",
			policies: `
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  rules:
  - from:
    - source: {principals: ["old-td/ns/sleep-allow/sa/sleep"]}
  - when:
    - {key: source.principal, values: ["new-td/ns/ops/sa/admin"]}
  - from:
    - source: {trustDomains: ["old-td"], namespaces: ["trusted"]}
---
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/sleep-allow/sa/banned"]}
`,
			checks: []check{
				{"new identity, policy names the alias", authz.Request{SourcePrincipal: "spiffe://new-td/ns/sleep-allow/sa/sleep", Method: "GET", Path: "/"}, want{allow: true, policy: "foo/httpbin"}},
				{"old identity still admitted", authz.Request{SourcePrincipal: "old-td/ns/sleep-allow/sa/sleep", Method: "GET", Path: "/"}, want{allow: true, policy: "foo/httpbin"}},
				{"foreign trust domain", authz.Request{SourcePrincipal: "other-td/ns/sleep-allow/sa/sleep", Method: "GET", Path: "/"}, want{}},
				{"cluster.local is not in the set", authz.Request{SourcePrincipal: "cluster.local/ns/sleep-allow/sa/sleep", Method: "GET", Path: "/"}, want{}},
				{"other service account", authz.Request{SourcePrincipal: "new-td/ns/sleep-allow/sa/other", Method: "GET", Path: "/"}, want{}},
				{"source.principal condition, alias identity", authz.Request{SourcePrincipal: "old-td/ns/ops/sa/admin", Method: "GET", Path: "/"}, want{allow: true, policy: "foo/httpbin", rule: 1}},
				{"trustDomains field, alias of the peer's", authz.Request{SourcePrincipal: "new-td/ns/trusted/sa/x", Method: "GET", Path: "/"}, want{allow: true, policy: "foo/httpbin", rule: 2}},
				{"trustDomains field, foreign peer", authz.Request{SourcePrincipal: "other-td/ns/trusted/sa/x", Method: "GET", Path: "/"}, want{}},
				{"cluster.local in a DENY stands for every trust domain of the set", authz.Request{SourcePrincipal: "new-td/ns/sleep-allow/sa/banned", Method: "GET", Path: "/"}, want{policy: "foo/deny"}},
				{"and for the alias", authz.Request{SourcePrincipal: "old-td/ns/sleep-allow/sa/banned", Method: "GET", Path: "/"}, want{policy: "foo/deny"}},
			},
		},
		{
			// A policy written for Istio's default trust domain applies in a mesh with
			// another one: cluster.local is rewritten to the local trust domain, so a
			// DENY does not silently stop matching.
			name: "cluster.local means the local trust domain",
			mesh: "{trustDomain: example.org}",
			policies: `
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/dev/sa/x"]}
  - from:
    - source: {namespaces: ["ops"], notPrincipals: ["cluster.local/ns/ops/sa/admin"]}
`,
			checks: []check{
				{"local identity denied", authz.Request{SourcePrincipal: "example.org/ns/dev/sa/x", Method: "GET", Path: "/"}, want{policy: "foo/deny"}},
				{"literal cluster.local no longer matches", authz.Request{SourcePrincipal: "cluster.local/ns/dev/sa/x", Method: "GET", Path: "/"}, want{allow: true}},
				{"notPrincipals: the local admin passes", authz.Request{SourcePrincipal: "example.org/ns/ops/sa/admin", Method: "GET", Path: "/"}, want{allow: true}},
				{"notPrincipals: anyone else in ops is denied", authz.Request{SourcePrincipal: "example.org/ns/ops/sa/intern", Method: "GET", Path: "/"}, want{policy: "foo/deny", rule: 1}},
				{"notPrincipals: literal cluster.local admin is denied", authz.Request{SourcePrincipal: "cluster.local/ns/ops/sa/admin", Method: "GET", Path: "/"}, want{policy: "foo/deny", rule: 1}},
			},
		},
		{
			name:     "invalid requests",
			policies: "kind: AuthorizationPolicy\nmetadata: {name: allow-all, namespace: foo}\nspec: {rules: [{}]}\n",
			checks: []check{
				{"%00 in path", get("/a%00b"), want{invalid: true}},
				{"raw NUL in path", get("/a\x00b"), want{invalid: true}},
				{"lower-case method", authz.Request{Method: "get", Path: "/"}, want{invalid: true}},
				{"missing method", authz.Request{Path: "/"}, want{invalid: true}},
				{"relative path", get("admin"), want{invalid: true}},
				{"TCP has no path to check", authz.Request{TCP: true}, want{allow: true, policy: "foo/allow-all"}},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mesh := meshtest.MeshConfig(t, "{}")
			if tc.mesh != "" {
				mesh = meshtest.MeshConfig(t, tc.mesh)
			}
			e, err := authz.New(objects(t, tc.policies), mesh, authz.Options{})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			for _, c := range tc.checks {
				t.Run(c.name, func(t *testing.T) {
					d := e.Evaluate(context.Background(), &c.req)
					assertDecision(t, d, c.want)
				})
			}
		})
	}
}

func assertDecision(t *testing.T, d authz.Decision, w want) {
	t.Helper()
	if d.Allow != w.allow || d.Policy != w.policy || d.Invalid != w.invalid || d.Audit.Policy != w.audit {
		t.Fatalf("Evaluate = %v (invalid=%v audit=%q), want allow=%v policy=%q invalid=%v audit=%q", d, d.Invalid, d.Audit.Policy, w.allow, w.policy, w.invalid, w.audit)
	}
	if w.policy != "" && d.Rule != w.rule {
		t.Errorf("Evaluate rule = %d, want %d", d.Rule, w.rule)
	}
	if d.Reason == "" {
		t.Errorf("Evaluate: empty reason")
	}
	switch {
	case w.invalid && d.Status != 400, !w.invalid && !w.allow && d.Status != 403, w.allow && d.Status != 0:
		t.Errorf("Evaluate status = %d for %v", d.Status, d)
	}
}

func TestDryRun(t *testing.T) {
	// The dry-run example of Istio's reference, plus an ALLOW in dry run.
	e, err := authz.New(objects(t, `
kind: AuthorizationPolicy
metadata:
  name: dry-run-example
  namespace: foo
  annotations:
    "istio.io/dry-run": "true"
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/headers"]
---
kind: AuthorizationPolicy
metadata:
  name: dry-allow
  namespace: foo
  annotations: {istio.io/dry-run: "true"}
spec:
  rules: [{to: [{operation: {methods: ["GET"]}}]}]
`), nil, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name               string
		req                authz.Request
		denyAllow, allowOK bool
	}{
		{"would be denied and not allowed", authz.Request{Method: "POST", Path: "/headers"}, false, false},
		{"would be allowed", authz.Request{Method: "GET", Path: "/ip"}, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := e.Evaluate(context.Background(), &tc.req)
			if !d.Allow || d.Policy != "" {
				t.Fatalf("Evaluate = %v: dry-run policies must never be enforced", d)
			}
			if !d.DryRunDeny.Evaluated || d.DryRunDeny.Allow != tc.denyAllow {
				t.Errorf("DryRunDeny = %+v, want evaluated, allow=%v", d.DryRunDeny, tc.denyAllow)
			}
			if !tc.denyAllow && d.DryRunDeny.Policy != "foo/dry-run-example" {
				t.Errorf("DryRunDeny.Policy = %q", d.DryRunDeny.Policy)
			}
			if !d.DryRunAllow.Evaluated || d.DryRunAllow.Allow != tc.allowOK {
				t.Errorf("DryRunAllow = %+v, want evaluated, allow=%v", d.DryRunAllow, tc.allowOK)
			}
		})
	}
}

func TestNewRejectsBadPolicies(t *testing.T) {
	tests := []struct{ name, yaml, field string }{
		{"bad ip", "spec: {rules: [{from: [{source: {ipBlocks: [\"10.0.0.300\"]}}]}]}", "spec.rules[0].from[0].source.ipBlocks[0]"},
		{"bad port", "spec: {rules: [{to: [{operation: {ports: [\"http\"]}}]}]}", "spec.rules[0].to[0].operation.ports[0]"},
		{"bad template", "spec: {rules: [{to: [{operation: {paths: [\"/{**}/foo/{*}\"]}}]}]}", "spec.rules[0].to[0].operation.paths[0]"},
		{"template with other text", "spec: {rules: [{to: [{operation: {paths: [\"/foo/{*}.txt\"]}}]}]}", "spec.rules[0].to[0].operation.paths[0]"},
		{"unknown key", "spec: {rules: [{when: [{key: request.size, values: [\"1\"]}]}]}", "spec.rules[0].when[0].key"},
		{"no values", "spec: {rules: [{when: [{key: source.ip}]}]}", "spec.rules[0].when[0]"},
		{"custom without provider", "spec: {action: CUSTOM, rules: [{}]}", "spec.provider.name"},
		{"bad dry-run", "metadata: {annotations: {istio.io/dry-run: maybe}}\nspec: {}", "metadata.annotations[istio.io/dry-run]"},
		{"wildcard service account", "spec: {rules: [{from: [{source: {serviceAccounts: [\"ns/*\"]}}]}]}", "spec.rules[0].from[0].source.serviceAccounts[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := "kind: AuthorizationPolicy\nmetadata: {name: bad, namespace: foo}\n" + tc.yaml
			if tc.name == "bad dry-run" {
				src = "kind: AuthorizationPolicy\nmetadata: {name: bad, namespace: foo, annotations: {istio.io/dry-run: maybe}}\nspec: {}"
			}
			_, err := authz.New(objects(t, src), nil, authz.Options{})
			var ce *authz.CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("New = %v, want a *CompileError", err)
			}
			if ce.Policy != "foo/bad" || ce.Field != tc.field {
				t.Errorf("New error = %v, want policy foo/bad field %s", err, tc.field)
			}
		})
	}
}

// ReadsHeaders lets the proxy skip converting header lines per request; it must be
// true whenever any decision (enforced, dry-run, audit or CUSTOM) can look at them.
func TestReadsHeaders(t *testing.T) {
	const meta = "kind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo"
	mesh := meshtest.MeshConfig(t, `
extensionProviders:
- name: ext
  envoyExtAuthzHttp: {service: ext.foo.svc.cluster.local, port: 8000}
`)
	tests := []struct {
		name     string
		policies string
		want     bool
	}{
		{"no policy", "", false},
		{"ALLOW on principals and paths", meta + "}\nspec: {rules: [{from: [{source: {principals: [a]}}], to: [{operation: {paths: [/x]}}]}]}", false},
		{"ALLOW with a claim condition", meta + "}\nspec: {rules: [{when: [{key: 'request.auth.claims[group]', values: [x]}]}]}", false},
		{"ALLOW with a header condition", meta + "}\nspec: {rules: [{when: [{key: 'request.headers[x-user]', values: [x]}]}]}", true},
		{"header condition in a later rule", meta + "}\nspec: {rules: [{to: [{operation: {methods: [GET]}}]}, {when: [{key: 'request.headers[x-user]', notValues: [x]}]}]}", true},
		{"DENY with a header condition", meta + "}\nspec: {action: DENY, rules: [{when: [{key: 'request.headers[x-user]', values: [x]}]}]}", true},
		{"AUDIT with a header condition", meta + "}\nspec: {action: AUDIT, rules: [{when: [{key: 'request.headers[x-user]', values: [x]}]}]}", true},
		{"dry-run ALLOW with a header condition", meta + ", annotations: {istio.io/dry-run: 'true'}}\nspec: {rules: [{when: [{key: 'request.headers[x-user]', values: [x]}]}]}", true},
		{"dry-run DENY with a header condition", meta + ", annotations: {istio.io/dry-run: 'true'}}\nspec: {action: DENY, rules: [{when: [{key: 'request.headers[x-user]', values: [x]}]}]}", true},
		{"CUSTOM sends headers to its provider", meta + "}\nspec: {action: CUSTOM, provider: {name: ext}, rules: [{to: [{operation: {paths: [/x]}}]}]}", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := authz.New(objects(t, tc.policies), mesh, authz.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := e.ReadsHeaders(); got != tc.want {
				t.Errorf("ReadsHeaders() = %v, want %v", got, tc.want)
			}
		})
	}
}
