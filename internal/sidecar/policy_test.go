package sidecar

import (
	"context"
	"net/netip"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/proxy"
)

const meshYAML = `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
  selector: {matchLabels: {app: reviews}}
  portLevelMtls:
    9090: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-productpage, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]
    to: [{operation: {methods: ["GET"]}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: "*.default.svc.cluster.local"
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 8080}
      tls: {mode: DISABLE}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-1, namespace: default, labels: {app: ratings}}
spec:
  address: 127.0.0.1
  ports: {http: 15106}
  serviceAccount: ratings
`

// loadSnapshot loads YAML as one config file.
func loadSnapshot(t *testing.T, yaml string) *config.Snapshot {
	t.Helper()
	var l config.Loader
	snap, _, err := l.LoadFiles(context.Background(), config.File{Name: "mesh.yaml", Data: []byte(yaml)})
	if err != nil {
		t.Fatalf("LoadFiles: %v", err)
	}
	return snap
}

func TestBuildPolicy(t *testing.T) {
	snap := loadSnapshot(t, meshYAML)
	w := policy.Workload{Namespace: "default", Name: "reviews-1", ServiceAccount: "reviews", Labels: map[string]string{"app": "reviews"}}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	pol, err := BuildPolicy(snap, w, td, nil, nil)
	if err != nil {
		t.Fatalf("BuildPolicy: %v", err)
	}
	t.Run("peer authentication with port level", func(t *testing.T) {
		for port, want := range map[uint32]security.PeerAuthentication_MutualTLS_Mode{
			9080: security.PeerAuthentication_MutualTLS_STRICT,
			9090: security.PeerAuthentication_MutualTLS_DISABLE,
		} {
			if got := pol.PeerAuthn.MTLSMode(port); got != want {
				t.Errorf("MTLSMode(%d) = %v, want %v", port, got, want)
			}
		}
	})
	t.Run("authorization", func(t *testing.T) {
		dst := netip.MustParseAddrPort("127.0.0.1:9080")
		for _, tc := range []struct {
			principal, method string
			allow             bool
		}{
			{"cluster.local/ns/default/sa/productpage", "GET", true},
			{"cluster.local/ns/default/sa/productpage", "POST", false},
			{"cluster.local/ns/default/sa/other", "GET", false},
		} {
			d := pol.Authorizer.Authorize(context.Background(), &proxy.Request{SourcePrincipal: tc.principal, HTTP: true,
				Method: tc.method, Path: "/reviews/1", Host: "reviews", Destination: dst, Headers: proxy.HTTPHeader{}})
			if d.Allow != tc.allow {
				t.Errorf("Authorize(%s %s) = %+v, want allow=%v", tc.principal, tc.method, d, tc.allow)
			}
		}
	})
	t.Run("destination rule port level before rule-wide", func(t *testing.T) {
		for port, want := range map[uint32]networking.ClientTLSSettings_TLSmode{
			9080: networking.ClientTLSSettings_ISTIO_MUTUAL,
			8080: networking.ClientTLSSettings_DISABLE,
		} {
			if got := pol.Destinations.ClientTLS("ratings.default.svc.cluster.local", port).GetMode(); got != want {
				t.Errorf("ClientTLS(ratings, %d) = %v, want %v", port, got, want)
			}
		}
	})
	t.Run("registry with identities", func(t *testing.T) {
		if len(pol.Services) != 1 || len(pol.Services[0].Endpoints) != 1 {
			t.Fatalf("Services = %+v, want ratings with one endpoint", pol.Services)
		}
		ep := pol.Services[0].Endpoints[0]
		if ep.Identity.String() != "spiffe://cluster.local/ns/default/sa/ratings" || ep.PortFor(pol.Services[0].Ports[0]) != 15106 {
			t.Errorf("endpoint = %+v, want ratings' identity on port 15106", ep)
		}
	})
}

// The adapter hands the engine the request's headers only when a policy can read them,
// and its reused requests carry nothing from one request into the next.
func TestAuthorizerHeaders(t *testing.T) {
	const policies = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: block, namespace: default}
spec:
  selector: {matchLabels: {app: guarded}}
  action: DENY
  rules: [{when: [{key: "request.headers[x-block]", values: ["yes"]}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: default}
spec:
  selector: {matchLabels: {app: plain}}
  rules: [{to: [{operation: {methods: ["GET"]}}]}]
`
	snap := loadSnapshot(t, policies)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	authorizerFor := func(app string) proxy.Authorizer {
		pol, err := BuildPolicy(snap, policy.Workload{Namespace: "default", Name: app, Labels: map[string]string{"app": app}}, td, nil, nil)
		if err != nil {
			t.Fatalf("BuildPolicy(%s): %v", app, err)
		}
		return pol.Authorizer
	}
	req := func(headers proxy.HTTPHeader) *proxy.Request {
		return &proxy.Request{HTTP: true, Method: "GET", Path: "/", Host: "guarded",
			SourcePrincipal: "cluster.local/ns/default/sa/client",
			Destination:     netip.MustParseAddrPort("127.0.0.1:9080"), Headers: headers}
	}
	blocked := proxy.HTTPHeader{"X-Block": {"yes"}, "User-Agent": {"test"}}
	other := proxy.HTTPHeader{"User-Agent": {"test"}}

	guarded := authorizerFor("guarded")
	for i, tc := range []struct {
		headers proxy.HTTPHeader
		allow   bool
	}{{blocked, false}, {other, true}, {nil, true}, {blocked, false}, {other, true}} {
		if d := guarded.Authorize(context.Background(), req(tc.headers)); d.Allow != tc.allow {
			t.Errorf("request %d with headers %v: Authorize = %+v, want allow=%v", i, tc.headers, d, tc.allow)
		}
	}

	plain := authorizerFor("plain")
	r := req(blocked)
	if d := plain.Authorize(context.Background(), r); !d.Allow || d.Policy != "default/get-only" {
		t.Fatalf("Authorize = %+v, want allowed by default/get-only", d)
	}
	if meshtest.RaceEnabled {
		t.Skip("allocation counts do not hold under the race detector (sync.Pool drops items)")
	}
	if n := testing.AllocsPerRun(200, func() { plain.Authorize(context.Background(), r) }); n != 0 {
		t.Errorf("Authorize allocates %.1f times per request for policies that read no header; want 0", n)
	}
}
