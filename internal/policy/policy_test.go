package policy_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/policy"
)

func snapshot(tb testing.TB, mesh, src string) *config.Snapshot {
	tb.Helper()
	s := &config.Snapshot{Mesh: meshtest.MeshConfig(tb, mesh)}
	for _, o := range meshtest.IstioObjects(tb, src) {
		s.Objects = append(s.Objects, &config.Object{
			Kind: config.Kind(o.Kind),
			Meta: config.Meta{Namespace: o.Namespace, Name: o.Name, Labels: o.Labels, Annotations: o.Annotations, CreationTime: o.CreationTime},
			Spec: o.Spec,
		})
	}
	return s
}

func keyOf(o *config.Object) string {
	if o == nil {
		return ""
	}
	return o.Key()
}

func keys(os []*config.Object) []string {
	out := []string{}
	for _, o := range os {
		out = append(out, o.Key())
	}
	return out
}

func TestSelection(t *testing.T) {
	ix := policy.NewIndex(snapshot(t, "rootNamespace: mesh-root", `
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: mesh-root}
spec: {}
---
kind: AuthorizationPolicy
metadata: {name: mesh-v1, namespace: mesh-root}
spec: {selector: {matchLabels: {version: v1}}}
---
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: foo}
spec: {}
---
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec: {selector: {matchLabels: {app: httpbin}}}
---
kind: AuthorizationPolicy
metadata: {name: httpbin-v2, namespace: foo}
spec: {selector: {matchLabels: {app: httpbin, version: v2}}}
---
kind: AuthorizationPolicy
metadata: {name: empty-selector, namespace: foo}
spec: {selector: {}}
---
kind: AuthorizationPolicy
metadata: {name: bar-wide, namespace: bar}
spec: {}
---
kind: AuthorizationPolicy
metadata: {name: gateway, namespace: foo}
spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}
---
kind: AuthorizationPolicy
metadata: {name: istio-system-ignored, namespace: istio-system}
spec: {}
---
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec: {selector: {matchLabels: {app: httpbin}}, jwtRules: [{issuer: "https://issuer.example"}]}
---
kind: RequestAuthentication
metadata: {name: jwt-mesh, namespace: mesh-root}
spec: {jwtRules: [{issuer: "https://mesh.example"}]}
`))
	if ix.RootNamespace() != "mesh-root" {
		t.Fatalf("RootNamespace() = %q", ix.RootNamespace())
	}
	tests := []struct {
		w          policy.Workload
		authz, jwt []string
	}{
		{policy.Workload{Namespace: "foo", Labels: map[string]string{"app": "httpbin", "version": "v1"}},
			[]string{"foo/empty-selector", "foo/httpbin", "foo/ns-wide", "mesh-root/mesh-v1", "mesh-root/mesh-wide"}, []string{"foo/jwt", "mesh-root/jwt-mesh"}},
		{policy.Workload{Namespace: "foo", Labels: map[string]string{"app": "httpbin", "version": "v2"}},
			[]string{"foo/empty-selector", "foo/httpbin", "foo/httpbin-v2", "foo/ns-wide", "mesh-root/mesh-wide"}, []string{"foo/jwt", "mesh-root/jwt-mesh"}},
		{policy.Workload{Namespace: "foo", Labels: map[string]string{"app": "other"}},
			[]string{"foo/empty-selector", "foo/ns-wide", "mesh-root/mesh-wide"}, []string{"mesh-root/jwt-mesh"}},
		{policy.Workload{Namespace: "bar", Labels: map[string]string{"app": "httpbin", "version": "v1"}},
			[]string{"bar/bar-wide", "mesh-root/mesh-v1", "mesh-root/mesh-wide"}, []string{"mesh-root/jwt-mesh"}},
		{policy.Workload{Namespace: "mesh-root"},
			[]string{"mesh-root/mesh-wide"}, []string{"mesh-root/jwt-mesh"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.w.Namespace, tc.w.Labels), func(t *testing.T) {
			if d := cmp.Diff(tc.authz, keys(ix.AuthorizationPolicies(tc.w))); d != "" {
				t.Errorf("AuthorizationPolicies(%v) (-want +got):\n%s", tc.w, d)
			}
			if d := cmp.Diff(tc.jwt, keys(ix.RequestAuthentications(tc.w))); d != "" {
				t.Errorf("RequestAuthentications(%v) (-want +got):\n%s", tc.w, d)
			}
		})
	}
}

// TestPeerAuthentication covers the examples of Istio's PeerAuthentication reference
// and the precedence rules around them.
func TestPeerAuthentication(t *testing.T) {
	finance := policy.Workload{Namespace: "foo", Labels: map[string]string{"app": "finance"}}
	other := policy.Workload{Namespace: "foo", Labels: map[string]string{"app": "web"}}
	tests := []struct {
		name      string
		policies  string
		w         policy.Workload
		mode      policy.MTLSMode
		port8080  policy.MTLSMode
		workload  string
		namespace string
	}{
		{"no policy: PERMISSIVE", "", finance, policy.MTLSPermissive, policy.MTLSPermissive, "", ""},
		{"mesh-wide STRICT", `
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}`, other, policy.MTLSStrict, policy.MTLSStrict, "", ""},
		{"namespace STRICT", `
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}`, other, policy.MTLSStrict, policy.MTLSStrict, "", "foo/default"},
		{"namespace PERMISSIVE, finance STRICT", `
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: PERMISSIVE}}
---
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec: {selector: {matchLabels: {app: finance}}, mtls: {mode: STRICT}}`, finance, policy.MTLSStrict, policy.MTLSStrict, "foo/finance", "foo/default"},
		{"same, for another workload", `
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: PERMISSIVE}}
---
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec: {selector: {matchLabels: {app: finance}}, mtls: {mode: STRICT}}`, other, policy.MTLSPermissive, policy.MTLSPermissive, "", "foo/default"},
		{"STRICT with port 8080 DISABLE", `
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec:
  selector: {matchLabels: {app: finance}}
  mtls: {mode: STRICT}
  portLevelMtls: {8080: {mode: DISABLE}}`, finance, policy.MTLSStrict, policy.MTLSDisable, "foo/finance", ""},
		{"UNSET inherits namespace, port 8080 DISABLE", `
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
---
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec:
  selector: {matchLabels: {app: finance}}
  portLevelMtls: {8080: {mode: DISABLE}}`, finance, policy.MTLSStrict, policy.MTLSDisable, "foo/finance", "foo/default"},
		{"UNSET port inherits the workload mode", `
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec:
  selector: {matchLabels: {app: finance}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {8080: {}}`, finance, policy.MTLSPermissive, policy.MTLSPermissive, "foo/finance", ""},
		{"namespace UNSET inherits mesh", `
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {}`, other, policy.MTLSStrict, policy.MTLSStrict, "", "foo/default"},
		{"selector policy in the root namespace is ignored", `
kind: PeerAuthentication
metadata: {name: finance, namespace: istio-system}
spec: {selector: {matchLabels: {app: finance}}, mtls: {mode: DISABLE}}`, finance, policy.MTLSPermissive, policy.MTLSPermissive, "", ""},
		// Istio keeps the oldest policy when two compete at one level; names only
		// break ties between equal creation times.
		{"two namespace policies: the oldest wins, not the first by name", `
kind: PeerAuthentication
metadata: {name: a-new, namespace: foo, creationTimestamp: "2024-05-01T00:00:00Z"}
spec: {mtls: {mode: DISABLE}}
---
kind: PeerAuthentication
metadata: {name: z-old, namespace: foo, creationTimestamp: "2020-01-01T00:00:00Z"}
spec: {mtls: {mode: STRICT}}`, other, policy.MTLSStrict, policy.MTLSStrict, "", "foo/z-old"},
		{"two workload policies: the oldest wins", `
kind: PeerAuthentication
metadata: {name: a-new, namespace: foo, creationTimestamp: "2024-05-01T00:00:00Z"}
spec: {selector: {matchLabels: {app: finance}}, mtls: {mode: PERMISSIVE}}
---
kind: PeerAuthentication
metadata: {name: z-old, namespace: foo, creationTimestamp: "2020-01-01T00:00:00Z"}
spec: {selector: {matchLabels: {app: finance}}, mtls: {mode: STRICT}}`, finance, policy.MTLSStrict, policy.MTLSStrict, "foo/z-old", ""},
		{"equal ages: the first by name", `
kind: PeerAuthentication
metadata: {name: b, namespace: foo}
spec: {mtls: {mode: DISABLE}}
---
kind: PeerAuthentication
metadata: {name: a, namespace: foo}
spec: {mtls: {mode: STRICT}}`, other, policy.MTLSStrict, policy.MTLSStrict, "", "foo/a"},
		{"namespace DISABLE", `
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: DISABLE}}`, finance, policy.MTLSDisable, policy.MTLSDisable, "", "foo/default"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ix := policy.NewIndex(snapshot(t, "{}", tc.policies))
			m := ix.PeerAuthentication(tc.w)
			if m.Mode != tc.mode || m.ForPort(8080) != tc.port8080 || m.ForPort(9090) != tc.mode {
				t.Errorf("PeerAuthentication(%v) = %v (8080: %v), want %v (8080: %v)", tc.w.Labels, m.Mode, m.ForPort(8080), tc.mode, tc.port8080)
			}
			if m.Workload != tc.workload || m.Namespace != tc.namespace {
				t.Errorf("PeerAuthentication sources = workload %q namespace %q, want %q %q", m.Workload, m.Namespace, tc.workload, tc.namespace)
			}
		})
	}
}

func TestDestinationRule(t *testing.T) {
	ix := policy.NewIndex(snapshot(t, "{}", `
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec: {host: reviews}
---
kind: DestinationRule
metadata: {name: all-default, namespace: default}
spec: {host: "*.default.svc.cluster.local"}
---
kind: DestinationRule
metadata: {name: all-cluster, namespace: default}
spec: {host: "*.svc.cluster.local"}
---
kind: DestinationRule
metadata: {name: private, namespace: bar}
spec: {host: "db.bar.svc.cluster.local", exportTo: ["."]}
---
kind: DestinationRule
metadata: {name: shared, namespace: bar}
spec: {host: "api.bar.svc.cluster.local"}
---
kind: DestinationRule
metadata: {name: only-web, namespace: default}
spec: {host: "pay.default.svc.cluster.local", workloadSelector: {matchLabels: {app: web}}}
---
kind: DestinationRule
metadata: {name: mesh-default, namespace: istio-system}
spec: {host: "*"}
---
kind: DestinationRule
metadata: {name: a-catch-all, namespace: default}
spec: {host: "cart.default.svc.cluster.local"}
---
kind: DestinationRule
metadata: {name: b-web, namespace: default}
spec: {host: "cart.default.svc.cluster.local", workloadSelector: {matchLabels: {app: web}}}
---
kind: DestinationRule
metadata: {name: a-young, namespace: default, creationTimestamp: "2024-05-01T00:00:00Z"}
spec: {host: "shop.default.svc.cluster.local"}
---
kind: DestinationRule
metadata: {name: z-old, namespace: default, creationTimestamp: "2020-01-01T00:00:00Z"}
spec: {host: "shop.default.svc.cluster.local"}
---
kind: DestinationRule
metadata: {name: exported-away, namespace: bar}
spec: {host: "queue.bar.svc.cluster.local", exportTo: ["other"]}
`))
	def := policy.Workload{Namespace: "default", Labels: map[string]string{"app": "cli"}}
	web := policy.Workload{Namespace: "default", Labels: map[string]string{"app": "web"}}
	barClient := policy.Workload{Namespace: "bar"}
	other := policy.Workload{Namespace: "other"}
	tests := []struct {
		client policy.Workload
		host   string
		want   string
	}{
		{def, "reviews.default.svc.cluster.local", "default/reviews"},
		{def, "Reviews.Default.svc.cluster.local.", "default/reviews"},
		{def, "ratings.default.svc.cluster.local", "default/all-default"},
		{def, "db.bar.svc.cluster.local", "default/all-cluster"},
		{barClient, "db.bar.svc.cluster.local", "bar/private"},
		{other, "db.bar.svc.cluster.local", "istio-system/mesh-default"},
		{other, "api.bar.svc.cluster.local", "bar/shared"},
		{web, "pay.default.svc.cluster.local", "default/only-web"},
		// The most specific host decides: its rules are for web only, so another
		// client gets none, as in Istio (no fall back to the wildcard rule).
		{def, "pay.default.svc.cluster.local", ""},
		{other, "example.com", "istio-system/mesh-default"},
		// A rule whose workloadSelector matches the client beats the catch-all rule.
		{web, "cart.default.svc.cluster.local", "default/b-web"},
		{def, "cart.default.svc.cluster.local", "default/a-catch-all"},
		// Competing rules for one host: the oldest, not the first by name.
		{def, "shop.default.svc.cluster.local", "default/z-old"},
		// Rules in the client's own namespace apply whatever their exportTo.
		{barClient, "queue.bar.svc.cluster.local", "bar/exported-away"},
		{other, "queue.bar.svc.cluster.local", "bar/exported-away"},
		{def, "queue.bar.svc.cluster.local", "default/all-cluster"},
	}
	for _, tc := range tests {
		t.Run(tc.client.Namespace+"→"+tc.host, func(t *testing.T) {
			got := ix.DestinationRule(tc.client, tc.host)
			if key := keyOf(got); key != tc.want {
				t.Errorf("DestinationRule(%v, %q) = %q, want %q", tc.client.Labels, tc.host, key, tc.want)
			}
		})
	}
	// meshConfig.defaultDestinationRuleExportTo applies to rules without exportTo.
	priv := policy.NewIndex(snapshot(t, `defaultDestinationRuleExportTo: ["."]`, `
kind: DestinationRule
metadata: {name: shared, namespace: bar}
spec: {host: "api.bar.svc.cluster.local"}
---
kind: DestinationRule
metadata: {name: mesh-default, namespace: istio-system}
spec: {host: "*", exportTo: ["*"]}
`))
	if key := keyOf(priv.DestinationRule(other, "api.bar.svc.cluster.local")); key != "istio-system/mesh-default" {
		t.Errorf("DestinationRule with defaultDestinationRuleExportTo [.] = %q, want istio-system/mesh-default", key)
	}
	if key := keyOf(priv.DestinationRule(barClient, "api.bar.svc.cluster.local")); key != "bar/shared" {
		t.Errorf("DestinationRule in its own namespace = %q, want bar/shared", key)
	}
	if got := policy.NewIndex(snapshot(t, "{}", "")).DestinationRule(def, "x.default.svc.cluster.local"); got != nil {
		t.Errorf("DestinationRule with no rules = %v, want nil", got.Key())
	}
}

func BenchmarkAuthorizationPolicies(b *testing.B) {
	s := &config.Snapshot{}
	for i := range 10_000 {
		app := fmt.Sprintf("app-%d", i)
		if i%100 == 0 && i < 1000 {
			app = "bench"
		}
		s.Objects = append(s.Objects, &config.Object{Kind: config.KindAuthorizationPolicy,
			Meta: config.Meta{Namespace: fmt.Sprintf("ns-%d", i%100), Name: fmt.Sprintf("p-%d", i)},
			Spec: &security.AuthorizationPolicy{Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": app}}}})
	}
	ix := policy.NewIndex(s)
	w := policy.Workload{Namespace: "ns-0", Labels: map[string]string{"app": "bench", "version": "v1"}}
	if n := len(ix.AuthorizationPolicies(w)); n != 10 {
		b.Fatalf("selected %d, want 10", n)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = ix.AuthorizationPolicies(w)
	}
}
