package legacy

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/config"
)

// BenchmarkConvert converts 100 namespaces, each with a namespace Policy and a service
// Policy requiring a JWT with trigger rules, plus the Services: the cost a config
// reload pays for legacy policies.
func BenchmarkConvert(b *testing.B) {
	var ds []string
	for i := range 100 {
		ns := fmt.Sprintf("ns%d", i)
		ds = append(ds, policy(ns, "default", "{peers: [{mtls: {}}]}"),
			policy(ns, "api", `{targets: [{name: api}], peers: [{mtls: {}}], origins: [{jwt: {issuer: "https://idp.example.com", jwksUri: "https://idp.example.com/jwks", triggerRules: [{excludedPaths: [{exact: /healthz}]}]}}]}`),
			strings.ReplaceAll(svc("api", "[{port: 80}]"), "namespace: shop", "namespace: "+ns))
	}
	file := config.File{Name: "bench.yaml", Data: []byte(docs(ds...))}
	b.ReportAllocs()
	for b.Loop() {
		convs, _, err := Convert(context.Background(), config.Loader{}, file)
		if err != nil || len(convs) != 200 {
			b.Fatalf("Convert() = %d conversions, %v", len(convs), err)
		}
	}
}
