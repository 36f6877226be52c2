package xds

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/policy"
)

const viewYAML = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: db-only, namespace: a}
spec: {selector: {matchLabels: {app: db}}, mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: a}
spec: {jwtRules: [{issuer: "https://issuer.example.com"}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: public, namespace: b}
spec: {host: svc.b.svc.cluster.local}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: private, namespace: b}
spec: {host: other.b.svc.cluster.local, exportTo: ["."]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: to-a, namespace: b}
spec: {host: x.b.svc.cluster.local, exportTo: ["a"]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web-clients, namespace: a}
spec: {host: y.a.svc.cluster.local, workloadSelector: {matchLabels: {app: web}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: b}
spec:
  hosts: [svc.b.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: svc}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hidden, namespace: c}
spec:
  hosts: [hidden.c.svc.cluster.local]
  exportTo: ["."]
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: hidden}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-1, namespace: b}
spec: {address: 10.0.0.1, labels: {app: svc}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: unselected, namespace: b}
spec: {address: 10.0.0.2, labels: {app: nothing}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: hidden-1, namespace: c}
spec: {address: 10.0.0.3, labels: {app: hidden}}
`

func viewKeys(v *view) []string {
	var out []string
	for _, o := range v.objects {
		out = append(out, string(o.Kind)+" "+o.Key())
	}
	slices.Sort(out)
	return out
}

// TestViewSelection: what each workload receives, by Istio's scoping rules.
func TestViewSelection(t *testing.T) {
	snap, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "v.yaml", Data: []byte(viewYAML)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := newState(snap, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	common := []string{"DestinationRule b/public", "PeerAuthentication istio-system/mesh", "ServiceEntry b/svc", "WorkloadEntry b/svc-1"}
	tests := []struct {
		name string
		w    policy.Workload
		want []string
	}{
		{"a web", policy.Workload{Namespace: "a", Labels: map[string]string{"app": "web"}},
			append([]string{"DestinationRule a/web-clients", "DestinationRule b/to-a", "RequestAuthentication a/jwt"}, common...)},
		{"a db", policy.Workload{Namespace: "a", Labels: map[string]string{"app": "db"}},
			append([]string{"DestinationRule b/to-a", "PeerAuthentication a/db-only", "RequestAuthentication a/jwt"}, common...)},
		{"b", policy.Workload{Namespace: "b"},
			// exportTo ["a"] does not include b itself: only "." does.
			append([]string{"DestinationRule b/private"}, common...)},
		{"c sees its own hidden service", policy.Workload{Namespace: "c"},
			append([]string{"ServiceEntry c/hidden", "WorkloadEntry c/hidden-1"}, common...)},
		{"labels of other namespaces widen nothing", policy.Workload{Namespace: "d", Labels: map[string]string{"app": "db"}}, common},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := slices.Clone(tt.want)
			slices.Sort(want)
			v := st.viewFor(tt.w)
			if got := viewKeys(v); !slices.Equal(got, want) {
				t.Errorf("viewFor(%+v) = %v, want %v", tt.w, got, want)
			}
			if v2 := st.viewFor(tt.w); v2 != v {
				t.Error("equal workloads do not share a view")
			}
		})
	}
	// The version is a function of content: a new state of the same snapshot gives
	// the same versions; a change to one namespace changes only its views.
	st2, err := newState(snap, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		if a, b := st.viewFor(tt.w).version, st2.viewFor(tt.w).version; a != b {
			t.Errorf("%s: version %s, then %s for the same snapshot", tt.name, a, b)
		}
	}
}

// FuzzDecodeObject: a sidecar decodes whatever the network gives it. A resource either
// decodes to an object that encodes back to the same resource, or is refused whole.
func FuzzDecodeObject(f *testing.F) {
	snap, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "v.yaml", Data: []byte(viewYAML)})
	if err != nil {
		f.Fatal(err)
	}
	for _, o := range snap.Objects {
		a, err := EncodeObject(o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(TypeOf(o.Kind), a.GetValue())
	}
	aged := *snap.Objects[0]
	aged.CreationTime = time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC)
	if a, err := EncodeObject(&aged); err == nil {
		f.Add(TypeOf(aged.Kind), a.GetValue())
	}
	f.Add(TypeAuthorizationPolicy, []byte{0x0a, 0x03, 0x0a, 0x01, 'x'})
	f.Fuzz(func(t *testing.T, typeURL string, value []byte) {
		a := &anypb.Any{TypeUrl: "type.googleapis.com/istio.mcp.v1alpha1.Resource", Value: value}
		o, err := DecodeObject(typeURL, a)
		if err != nil {
			if o != nil {
				t.Fatalf("DecodeObject returned an object with error %v", err)
			}
			return
		}
		if TypeOf(o.Kind) != typeURL || o.Namespace == "" || o.Name == "" || o.Spec == nil {
			t.Fatalf("DecodeObject(%q) = %+v: incomplete object", typeURL, o)
		}
		a2, err := EncodeObject(o)
		if err != nil {
			t.Fatalf("EncodeObject of a decoded object: %v", err)
		}
		o2, err := DecodeObject(typeURL, a2)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if o2.Key() != o.Key() || o2.ResourceVersion != o.ResourceVersion || !o2.CreationTime.Equal(o.CreationTime) || !proto.Equal(o2.Spec, o.Spec) {
			t.Fatalf("round trip changed the object: %+v -> %+v", o, o2)
		}
	})
}

// TestCreationTimeTravels: Istio settles competing objects by age, so the creation time
// reaches the sidecar, and an object recreated with the same content changes the view.
func TestCreationTimeTravels(t *testing.T) {
	snap, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "v.yaml", Data: []byte(viewYAML)})
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC)
	objs := make([]*config.Object, len(snap.Objects))
	for i, o := range snap.Objects {
		c := *o
		c.CreationTime = created
		objs[i] = &c
	}
	a, err := EncodeObject(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeObject(TypeOf(objs[0].Kind), a)
	if err != nil {
		t.Fatal(err)
	}
	if !got.CreationTime.Equal(created) {
		t.Errorf("DecodeObject(EncodeObject(o)).CreationTime = %v, want %v", got.CreationTime, created)
	}
	w := policy.Workload{Namespace: objs[0].Namespace, Labels: map[string]string{}}
	before, err := newState(snap, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	after, err := newState(config.NewSnapshot(objs, snap.Mesh), before, nil)
	if err != nil {
		t.Fatal(err)
	}
	if vb, va := before.viewFor(w), after.viewFor(w); vb.version == va.version {
		t.Errorf("view version %s unchanged after every object was recreated", va.version)
	}
}

// TestViewsCarriedOver: a new snapshot reuses the previous state's views of namespaces
// the change cannot affect, and every view, carried or not, is exactly the one a fresh
// state computes.
func TestViewsCarriedOver(t *testing.T) {
	base, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "v.yaml", Data: []byte(viewYAML)})
	if err != nil {
		t.Fatal(err)
	}
	workloads := []policy.Workload{
		{Namespace: "a", Labels: map[string]string{"app": "web"}},
		{Namespace: "a", Labels: map[string]string{"app": "db"}},
		{Namespace: "b"},
		{Namespace: "c"},
		{Namespace: "d", Labels: map[string]string{"app": "db"}},
	}
	const extra = `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: NAME, namespace: NS}
spec: {selector: {matchLabels: {app: db}}, rules: [{}]}
`
	policyIn := func(ns string) string {
		return viewYAML + strings.NewReplacer("NAME", "new", "NS", ns).Replace(extra)
	}
	for _, tc := range []struct {
		name string
		yaml string
		// carried are the namespaces whose views must be reused.
		carried []string
	}{
		{"policy in a", policyIn("a"), []string{"b", "c", "d"}},
		{"policy in d", policyIn("d"), []string{"a", "b", "c"}},
		{"policy removed from a", strings.Replace(viewYAML, "kind: RequestAuthentication\nmetadata: {name: jwt, namespace: a}", "kind: RequestAuthentication\nmetadata: {name: jwt, namespace: e}", 1), []string{"b", "c", "d"}},
		{"policy in the root namespace", policyIn("istio-system"), nil},
		{"destination rule", strings.Replace(viewYAML, `exportTo: ["a"]`, `exportTo: ["c"]`, 1), nil},
		{"mesh config", viewYAML + "---\napiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {meshConfig: {defaultServiceExportTo: [\".\"]}}\n", nil},
		{"nothing", viewYAML, []string{"a", "b", "c", "d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev, err := newState(base, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			before := map[string]*view{}
			for _, w := range workloads {
				before[viewKey(w)] = prev.viewFor(w)
			}
			snap, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "v.yaml", Data: []byte(tc.yaml)})
			if err != nil {
				t.Fatal(err)
			}
			next, err := newState(snap, prev, nil)
			if err != nil {
				t.Fatal(err)
			}
			fresh, err := newState(snap, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range workloads {
				got, want := next.viewFor(w), fresh.viewFor(w)
				if got.version != want.version || !slices.Equal(viewKeys(got), viewKeys(want)) {
					t.Errorf("%s %v: view %s %v, a fresh state computes %s %v", w.Namespace, w.Labels, got.version, viewKeys(got), want.version, viewKeys(want))
				}
				for typ, res := range want.res {
					if len(got.res[typ]) != len(res) {
						t.Errorf("%s %v: %d %s resources, want %d", w.Namespace, w.Labels, len(got.res[typ]), typ, len(res))
						continue
					}
					for i := range res {
						if !proto.Equal(got.res[typ][i], res[i]) {
							t.Errorf("%s %v: %s resource %d differs from a fresh state's", w.Namespace, w.Labels, typ, i)
						}
					}
				}
				if carried := got == before[viewKey(w)]; carried != slices.Contains(tc.carried, w.Namespace) {
					t.Errorf("%s %v: view carried over = %v, want %v", w.Namespace, w.Labels, carried, !carried)
				}
			}
		})
	}
}

// TestViewsCarriedOnlyWhenLive: views of workloads no stream holds any more are not
// carried into the next state, so they do not pile up while sidecars come and go.
func TestViewsCarriedOnlyWhenLive(t *testing.T) {
	snap, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "v.yaml", Data: []byte(viewYAML)})
	if err != nil {
		t.Fatal(err)
	}
	prev, err := newState(snap, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	gone, stays := policy.Workload{Namespace: "c"}, policy.Workload{Namespace: "d"}
	prev.viewFor(gone)
	kept := prev.viewFor(stays)
	next, err := newState(snap, prev, map[string]bool{viewKey(stays): true})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := next.views[viewKey(gone)]; ok {
		t.Errorf("the view of a workload without a stream was carried over")
	}
	if next.views[viewKey(stays)] != kept {
		t.Errorf("the view of a connected workload was not carried over")
	}
}
