package xds

import (
	"context"
	"testing"

	"github.com/meshguard/meshguard/internal/config"
)

const meshExt = `apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  meshConfig:
    extensionProviders:
    - name: ext
      envoyExtAuthzGrpc: {service: ext.default.svc.cluster.local, port: 9000}
`

// TestValidateObjectsAgreesWithFull: the client's incremental validation (changed
// objects under a cached mesh) accepts and refuses exactly what full validation does.
func TestValidateObjectsAgreesWithFull(t *testing.T) {
	good, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "m", Data: []byte(meshExt + `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: custom, namespace: default, labels: {team: a}}
spec:
  action: CUSTOM
  provider: {name: ext}
  rules: [{to: [{operation: {paths: ["/admin"]}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se, namespace: default}
spec:
  hosts: [a.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: default}
spec: {host: a.example.com, trafficPolicy: {tls: {mode: SIMPLE}}}
`)})
	if err != nil {
		t.Fatal(err)
	}
	noExt := config.DefaultMeshConfig()
	for _, tc := range []struct {
		name string
		objs []*config.Object
		mesh bool // with the ext provider
		ok   bool
	}{
		{"valid with provider", good.Objects, true, true},
		{"CUSTOM without provider", good.Objects, false, false},
		{"networking kinds", good.OfKind(config.KindServiceEntry), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mesh := noExt
			if tc.mesh {
				mesh = good.Mesh
			}
			full := validateFull(tc.objs, mesh)
			inc := validateObjects(tc.objs, mesh)
			if (full == nil) != tc.ok || (inc == nil) != tc.ok {
				t.Errorf("validateFull = %v, validateObjects = %v, want ok=%v", full, inc, tc.ok)
			}
		})
	}
}
