package config_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshguard/meshguard/internal/config"
)

func ExampleLoader_LoadFiles() {
	policy := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: shop
spec:
  action: DENY
  selector:
    matchLabels:
      app: web
  targetRef:
    kind: Service
    name: web
  rules:
  - to:
    - operation:
        ports: ["8080"]
        paths: ["/admin/*/users"]
`
	var l config.Loader
	_, _, err := l.LoadFiles(context.Background(), config.File{Name: "deny.yaml", Data: []byte(policy)})
	var problems config.Problems
	if errors.As(err, &problems) {
		for _, p := range problems {
			fmt.Println(p)
		}
	}
	// Output:
	// deny.yaml:0: AuthorizationPolicy shop/deny-admin: spec.targetRef: only one of selector, targetRef or targetRefs may be set; found selector and targetRef
	// deny.yaml:0: AuthorizationPolicy shop/deny-admin: spec.rules[0].to[0].operation.paths[0]: "/admin/*/users": '*' is only allowed alone, as a prefix or as a suffix (or use the {*} and {**} templates)
}

func ExampleLoader_LoadFiles_mesh() {
	files := []config.File{{Name: "mesh.yaml", Data: []byte(`apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |
    trustDomain: example.org
`)}}
	var l config.Loader
	snap, _, err := l.LoadFiles(context.Background(), files...)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(snap.Mesh.TrustDomain, snap.Mesh.RootNamespace, len(snap.Objects))
	// Output: example.org istio-system 0
}
