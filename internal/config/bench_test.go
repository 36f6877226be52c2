package config

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkLoadFiles measures loading and validating 1,000 AuthorizationPolicies across
// 100 namespaces, the work a store does on each reload.
func BenchmarkLoadFiles(b *testing.B) {
	var sb strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&sb, `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: p%d
  namespace: ns%d
spec:
  selector:
    matchLabels:
      app: a%d
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/ns%d/sa/client"]
    to:
    - operation:
        methods: ["GET", "POST"]
        paths: ["/api/{*}/items", "/static/*"]
    when:
    - key: request.headers[x-tenant]
      values: ["t%d"]
`, i, i%100, i, i%100, i)
	}
	files := []File{{Name: "policies.yaml", Data: []byte(sb.String())}}
	var l Loader
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s, _, err := l.LoadFiles(context.Background(), files...)
		if err != nil || len(s.Objects) != 1000 {
			b.Fatalf("LoadFiles() = %v", err)
		}
	}
}
