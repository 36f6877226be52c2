package authz_test

import (
	"context"
	"fmt"
	"testing"

	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/meshguard/meshguard/internal/authz"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/policy"
)

// benchSnapshot holds 10,000 AuthorizationPolicies across 100 namespaces; the workload
// app=bench in namespace ns-0 is selected by exactly 10 of them (5 DENY, 5 ALLOW).
func benchSnapshot() *config.Snapshot {
	s := &config.Snapshot{}
	for i := range 10_000 {
		ns := fmt.Sprintf("ns-%d", i%100)
		app := fmt.Sprintf("app-%d", i)
		if i%100 == 0 && i < 1000 {
			app = "bench" // i = 0, 100, …, 900: ten policies in ns-0
		}
		ap := &security.AuthorizationPolicy{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": app}},
			Rules: []*security.Rule{{
				From: []*security.Rule_From{{Source: &security.Source{Principals: []string{fmt.Sprintf("cluster.local/ns/client-%d/sa/*", i)}}}},
				To:   []*security.Rule_To{{Operation: &security.Operation{Methods: []string{"GET", "POST"}, Paths: []string{fmt.Sprintf("/api/v%d/*", i)}}}},
				When: []*security.Condition{{Key: "request.headers[x-tenant]", Values: []string{fmt.Sprintf("t-%d", i)}}},
			}},
		}
		if (i/100)%2 == 0 {
			ap.Action = security.AuthorizationPolicy_DENY
		}
		s.Objects = append(s.Objects, &config.Object{Kind: config.KindAuthorizationPolicy, Meta: config.Meta{Namespace: ns, Name: fmt.Sprintf("p-%d", i)}, Spec: ap})
	}
	return s
}

func BenchmarkEvaluate(b *testing.B) {
	ix := policy.NewIndex(benchSnapshot())
	w := policy.Workload{Namespace: "ns-0", Name: "bench", Labels: map[string]string{"app": "bench", "version": "v1"}}
	selected := ix.AuthorizationPolicies(w)
	if len(selected) != 10 {
		b.Fatalf("selected %d policies, want 10", len(selected))
	}
	e, err := authz.New(selected, ix.Mesh(), authz.Options{})
	if err != nil {
		b.Fatal(err)
	}
	// Matches the last ALLOW policy (i=900 is DENY, 100…900 alternate), so every
	// DENY and several ALLOW rules are evaluated first.
	r := &authz.Request{
		SourcePrincipal: "spiffe://cluster.local/ns/client-700/sa/web",
		Method:          "GET", Host: "bench.ns-0.svc.cluster.local", Path: "/api/v700/items?page=2",
		Headers: []authz.Header{{"x-tenant", "t-700"}, {"user-agent", "bench"}, {"accept", "*/*"}},
	}
	ctx := context.Background()
	if d := e.Evaluate(ctx, r); !d.Allow || d.Policy != "ns-0/p-700" {
		b.Fatalf("Evaluate = %v, want allowed by ns-0/p-700", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = e.Evaluate(ctx, r)
	}
}
