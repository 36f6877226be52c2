package authz_test

import (
	"context"
	"fmt"

	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/meshguard/meshguard/internal/authz"
	"github.com/meshguard/meshguard/internal/config"
)

func ExampleEngine_Evaluate() {
	// Only the sleep service account may GET /info*; DELETE is denied to everyone.
	allow := &config.Object{Kind: config.KindAuthorizationPolicy, Meta: config.Meta{Namespace: "foo", Name: "httpbin"},
		Spec: &security.AuthorizationPolicy{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "httpbin"}},
			Rules: []*security.Rule{{
				From: []*security.Rule_From{{Source: &security.Source{Principals: []string{"cluster.local/ns/default/sa/sleep"}}}},
				To:   []*security.Rule_To{{Operation: &security.Operation{Methods: []string{"GET"}, Paths: []string{"/info*"}}}},
			}},
		}}
	deny := &config.Object{Kind: config.KindAuthorizationPolicy, Meta: config.Meta{Namespace: "foo", Name: "no-delete"},
		Spec: &security.AuthorizationPolicy{
			Action: security.AuthorizationPolicy_DENY,
			Rules:  []*security.Rule{{To: []*security.Rule_To{{Operation: &security.Operation{Methods: []string{"DELETE"}}}}}},
		}}
	e, err := authz.New([]*config.Object{allow, deny}, nil, authz.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range []authz.Request{
		{SourcePrincipal: "spiffe://cluster.local/ns/default/sa/sleep", Method: "GET", Path: "/info/version"},
		{SourcePrincipal: "spiffe://cluster.local/ns/default/sa/sleep", Method: "DELETE", Path: "/info/version"},
		{SourcePrincipal: "spiffe://cluster.local/ns/other/sa/curl", Method: "GET", Path: "/info/version"},
		{SourcePrincipal: "spiffe://cluster.local/ns/default/sa/sleep", Method: "GET", Path: "/info%00"},
	} {
		fmt.Println(e.Evaluate(context.Background(), &r))
	}
	// Output:
	// ALLOW policy=foo/httpbin rule=0 action=ALLOW reason="allowed by ALLOW policy foo/httpbin rule 0"
	// DENY policy=foo/no-delete rule=0 action=DENY reason="denied by DENY policy foo/no-delete rule 0"
	// DENY reason="denied: no ALLOW policy matched (ALLOW policies: foo/httpbin)"
	// DENY reason="rejected as invalid (400): invalid request path: contains NUL (%00)"
}
