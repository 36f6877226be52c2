package xds

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
	security "istio.io/api/security/v1beta1"

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

const validObjects = `apiVersion: security.istio.io/v1
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
`

func mustLoad(t *testing.T, y string) *config.Snapshot {
	t.Helper()
	s, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "m", Data: []byte(y)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// encodePush encodes objects and a mesh config as the server pushes them.
func encodePush(t *testing.T, objs []*config.Object, s *config.Snapshot) map[string][]*anypb.Any {
	t.Helper()
	m, err := EncodeMesh(s.Mesh, s.Version)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*anypb.Any{TypeMeshConfig: {m}}
	for _, o := range objs {
		a, err := EncodeObject(o)
		if err != nil {
			t.Fatal(err)
		}
		out[TypeOf(o.Kind)] = append(out[TypeOf(o.Kind)], a)
	}
	return out
}

// TestValidCache runs a sequence of pushes through one cache: each push is accepted or
// refused exactly as a fresh validation of the whole push would, however little of it
// the cache revalidates.
func TestValidCache(t *testing.T) {
	withExt := mustLoad(t, meshExt+"---\n"+validObjects)
	noExt := mustLoad(t, validObjects[strings.Index(validObjects, "---"):])
	bad := &config.Object{Kind: config.KindAuthorizationPolicy, Meta: config.Meta{Namespace: "default", Name: "bad"},
		Spec: &security.AuthorizationPolicy{Rules: []*security.Rule{{To: []*security.Rule_To{{Operation: &security.Operation{Methods: []string{""}}}}}}}}
	var vc validCache
	for _, step := range []struct {
		name string
		push map[string][]*anypb.Any
		// wantErr is part of the refusal; "" means accepted.
		wantErr string
	}{
		{"valid with its provider", encodePush(t, withExt.Objects, withExt), ""},
		{"same objects, mesh loses the provider", encodePush(t, withExt.Objects, noExt),
			"AuthorizationPolicy default/custom: spec.provider.name"},
		{"unchanged objects again", encodePush(t, withExt.Objects, withExt), ""},
		{"a changed object is invalid", encodePush(t, append(slices.Clone(withExt.Objects), bad), withExt),
			"spec.rules[0].to[0].operation.methods[0]: empty value not allowed"},
		{"the same invalid object is still refused", encodePush(t, append(slices.Clone(withExt.Objects), bad), withExt),
			"empty value not allowed"},
		{"an object sent twice", encodePush(t, append(slices.Clone(withExt.Objects), withExt.Objects[0]), withExt), "is sent twice"},
		{"no mesh config", func() map[string][]*anypb.Any {
			p := encodePush(t, withExt.Objects, withExt)
			delete(p, TypeMeshConfig)
			return p
		}(), "no mesh config"},
		{"networking only", encodePush(t, withExt.OfKind(config.KindServiceEntry), noExt), ""},
	} {
		t.Run(step.name, func(t *testing.T) {
			before := vc
			snap, err := vc.validate(step.push)
			_, fresh := new(validCache).validate(step.push)
			if (err == nil) != (fresh == nil) {
				t.Fatalf("cached validate = %v, fresh validate = %v", err, fresh)
			}
			switch {
			case step.wantErr == "" && err != nil:
				t.Fatalf("validate() = %v, want accepted", err)
			case step.wantErr != "" && (err == nil || !strings.Contains(err.Error(), step.wantErr)):
				t.Fatalf("validate() = %v, want a refusal containing %q", err, step.wantErr)
			case err != nil:
				if vc.meshRaw != before.meshRaw || len(vc.objs) != len(before.objs) {
					t.Errorf("a refused push changed the cache")
				}
				return
			}
			var n int
			for t, as := range step.push {
				if t != TypeMeshConfig {
					n += len(as)
				}
			}
			if len(snap.Objects) != n || len(vc.objs) != n {
				t.Errorf("snapshot has %d objects and cache %d, push has %d", len(snap.Objects), len(vc.objs), n)
			}
		})
	}
}

// BenchmarkValidateChangedPush is the client's work for a mesh-wide change: a view of
// 100 objects of which one changed.
func BenchmarkValidateChangedPush(b *testing.B) {
	var y strings.Builder
	for i := range 100 {
		y.WriteString(strings.ReplaceAll(`---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: pNN, namespace: default}
spec:
  selector: {matchLabels: {app: a}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/cNN"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]
`, "NN", string(rune('a'+i/26))+string(rune('a'+i%26))))
	}
	s, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "b", Data: []byte(y.String())})
	if err != nil {
		b.Fatal(err)
	}
	pushes := make([]map[string][]*anypb.Any, 2)
	for i := range pushes {
		objs := slices.Clone(s.Objects)
		c := *objs[0]
		c.Labels = map[string]string{"gen": string(rune('0' + i))}
		objs[0] = &c
		m, _ := EncodeMesh(s.Mesh, s.Version)
		pushes[i] = map[string][]*anypb.Any{TypeMeshConfig: {m}}
		for _, o := range objs {
			a, err := EncodeObject(o)
			if err != nil {
				b.Fatal(err)
			}
			pushes[i][TypeAuthorizationPolicy] = append(pushes[i][TypeAuthorizationPolicy], a)
		}
	}
	var vc validCache
	if _, err := vc.validate(pushes[0]); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := vc.validate(pushes[i%2]); err != nil {
			b.Fatal(err)
		}
	}
}
