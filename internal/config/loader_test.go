package config

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	securityv1beta1 "istio.io/api/security/v1beta1"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

func loadFiles(t testing.TB, files ...File) (*Snapshot, Warnings, error) {
	t.Helper()
	var l Loader
	return l.LoadFiles(context.Background(), files...)
}

func mustLoad(t testing.TB, yaml string) *Snapshot {
	t.Helper()
	s, _, err := loadFiles(t, File{Name: "test.yaml", Data: []byte(yaml)})
	if err != nil {
		t.Fatalf("LoadFiles() = %v, want no error", err)
	}
	return s
}

// render is what `ctl validate` prints for a load result: problems, then warnings.
func render(warnings Warnings, err error) string {
	var b strings.Builder
	var ps Problems
	if errors.As(err, &ps) {
		for _, p := range ps {
			b.WriteString(p.String() + "\n")
		}
	} else if err != nil {
		b.WriteString("error: " + err.Error() + "\n")
	}
	for _, w := range warnings {
		b.WriteString("warning: " + w.String() + "\n")
	}
	return b.String()
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("output differs from %s (-want +got):\n%s", path, diff)
	}
}

// warningOnly are defect files that carry only warnings: Istio accepts them too.
var warningOnly = map[string]bool{"method-lowercase.yaml": true}

// TestDefects loads each file under testdata/defects, named after the defect it
// carries, and compares the problems with its golden file.
func TestDefects(t *testing.T) {
	paths, err := filepath.Glob("testdata/defects/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no defect files: %v", err)
	}
	for _, p := range paths {
		name := filepath.Base(p)
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			snap, warnings, err := loadFiles(t, File{Name: name, Data: data})
			var ps Problems
			switch {
			case warningOnly[name]:
				if err != nil || len(warnings) == 0 {
					t.Errorf("LoadFiles(%s) = %v with %d warnings, want valid with warnings", name, err, len(warnings))
				}
			case !errors.As(err, &ps) || len(ps) == 0:
				t.Errorf("LoadFiles(%s) error = %v, want Problems", name, err)
			case snap != nil:
				t.Errorf("LoadFiles(%s) returned a snapshot with its problems; want none", name)
			}
			for _, pr := range ps {
				if pr.Source.File != name || strings.Contains(pr.String(), "\n") {
					t.Errorf("problem %q: want one line naming file %s", pr, name)
				}
			}
			checkGolden(t, strings.TrimSuffix(p, ".yaml")+".golden", render(warnings, err))
		})
	}
}

// TestIstioExamples loads every example of Istio's AuthorizationPolicy,
// PeerAuthentication, RequestAuthentication and DestinationRule reference pages.
func TestIstioExamples(t *testing.T) {
	mesh, err := os.ReadFile("testdata/istio-examples-mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The reference page's own example is wrong here: fromHeaders takes objects with a
	// name, not strings, and Istio's CRD schema rejects it too.
	wantProblem := map[string]string{
		"request-authentication-06.yaml": "spec.jwtRules[0].fromHeaders[0]: got a string, want an object (JWTHeader)",
	}
	paths, _ := filepath.Glob("testdata/istio-examples/*.yaml")
	if len(paths) < 40 {
		t.Fatalf("found %d examples, want the 49 of the reference pages", len(paths))
	}
	for _, p := range paths {
		name := filepath.Base(p)
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			snap, _, err := loadFiles(t, File{Name: name, Data: data}, File{Name: "mesh.yaml", Data: mesh})
			if want, ok := wantProblem[name]; ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("LoadFiles(%s) = %v, want problem %q", name, err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadFiles(%s) = %v, want valid", name, err)
			}
			if len(snap.Objects) == 0 {
				t.Errorf("LoadFiles(%s) loaded no objects", name)
			}
		})
	}
}

func TestSeeds(t *testing.T) {
	var l Loader
	snap, warnings, err := l.Load(context.Background(), "testdata/seeds")
	if err != nil {
		t.Fatalf("Load(seeds) = %v", err)
	}
	var kinds []string
	for _, o := range snap.Objects {
		kinds = append(kinds, string(o.Kind)+" "+o.Key())
	}
	want := []string{"AuthorizationPolicy default/reviews-access", "DestinationRule default/default", "PeerAuthentication default/default"}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("seed objects (-want +got):\n%s", diff)
	}
	if got := snap.Mesh.AccessLogFile; got != "/dev/stdout" {
		t.Errorf("Mesh.AccessLogFile = %q, want /dev/stdout from the IstioOperator", got)
	}
	if len(warnings) != 2 {
		t.Errorf("warnings = %v, want 2 (EnvoyFilter and ClusterTrustBundle skipped)", warnings)
	}
}

func TestMeshConfig(t *testing.T) {
	const io = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  meshConfig:\n"
	const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: %s\ndata:\n  mesh: |\n"
	tests := []struct {
		name     string
		yaml     string
		check    func(*meshv1alpha1.MeshConfig) string
		warnings int
	}{
		{"defaults", "", func(m *meshv1alpha1.MeshConfig) string {
			if m.RootNamespace != "istio-system" || m.TrustDomain != "cluster.local" || !m.EnableAutoMtls.GetValue() ||
				m.DefaultConfig.GetDiscoveryAddress() != "istiod.istio-system.svc:15012" || len(m.ExtensionProviders) != 3 {
				return "not Istio's defaults"
			}
			return ""
		}, 0},
		{"operator overrides a field, keeps the others", io + "    trustDomain: example.org\n", func(m *meshv1alpha1.MeshConfig) string {
			if m.TrustDomain != "example.org" || m.RootNamespace != "istio-system" {
				return "trustDomain not overridden or rootNamespace lost"
			}
			return ""
		}, 0},
		{"false overrides a true default", io + "    enableTracing: false\n", func(m *meshv1alpha1.MeshConfig) string {
			if m.EnableTracing {
				return "enableTracing still true"
			}
			return ""
		}, 0},
		{"defaultConfig merges field by field", io + "    defaultConfig:\n      discoveryAddress: cp.example:15012\n      proxyMetadata:\n        A: b\n", func(m *meshv1alpha1.MeshConfig) string {
			if m.DefaultConfig.DiscoveryAddress != "cp.example:15012" || m.DefaultConfig.ProxyAdminPort != 15000 || m.DefaultConfig.ProxyMetadata["A"] != "b" {
				return "defaultConfig not merged"
			}
			return ""
		}, 0},
		{"extensionProviders merge by name", io + "    extensionProviders:\n    - name: envoy\n      envoyFileAccessLog:\n        path: /tmp/log\n    - name: authz\n      envoyExtAuthzGrpc:\n        service: authz.foo.svc.cluster.local\n        port: 9000\n", func(m *meshv1alpha1.MeshConfig) string {
			var names []string
			for _, p := range m.ExtensionProviders {
				names = append(names, p.Name)
			}
			if strings.Join(names, ",") != "prometheus,stackdriver,envoy,authz" || m.ExtensionProviders[2].GetEnvoyFileAccessLog().GetPath() != "/tmp/log" {
				return "providers " + strings.Join(names, ",")
			}
			return ""
		}, 0},
		{"trustDomainAliases are a union", io + "    trustDomainAliases: [b.org, a.org]\n", func(m *meshv1alpha1.MeshConfig) string {
			if strings.Join(m.TrustDomainAliases, ",") != "a.org,b.org" {
				return "aliases " + strings.Join(m.TrustDomainAliases, ",")
			}
			return ""
		}, 0},
		{"istio ConfigMap in the root namespace", strings.Replace(cm, "%s", "istio-system", 1) + "    accessLogEncoding: JSON\n", func(m *meshv1alpha1.MeshConfig) string {
			if m.AccessLogEncoding != meshv1alpha1.MeshConfig_JSON {
				return "accessLogEncoding not read from the ConfigMap"
			}
			return ""
		}, 0},
		{"istio ConfigMap elsewhere is skipped", strings.Replace(cm, "%s", "default", 1) + "    accessLogEncoding: JSON\n", func(m *meshv1alpha1.MeshConfig) string {
			if m.AccessLogEncoding != meshv1alpha1.MeshConfig_TEXT {
				return "ConfigMap outside the root namespace was read"
			}
			return ""
		}, 1},
		{"other ConfigMaps are skipped", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: istio-system\ndata:\n  x: y\n", func(m *meshv1alpha1.MeshConfig) string { return "" }, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, warnings, err := loadFiles(t, File{Name: "mesh.yaml", Data: []byte(tc.yaml)})
			if err != nil {
				t.Fatalf("LoadFiles() = %v", err)
			}
			if msg := tc.check(s.Mesh); msg != "" {
				t.Errorf("mesh: %s", msg)
			}
			if len(warnings) != tc.warnings {
				t.Errorf("warnings = %v, want %d", warnings, tc.warnings)
			}
		})
	}
}

const twoPolicies = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: a
  labels: {app: "1", tier: "2"}
spec:
  rules:
  - to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
`

func TestNamespaceDefaults(t *testing.T) {
	for _, tc := range []struct{ loaderNS, want string }{{"", "default"}, {"prod", "prod"}} {
		l := Loader{DefaultNamespace: tc.loaderNS}
		s, _, err := l.LoadFiles(context.Background(), File{Name: "a.yaml", Data: []byte(twoPolicies)})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.OfKind(KindAuthorizationPolicy)[0].Namespace; got != tc.want {
			t.Errorf("Loader{DefaultNamespace: %q}: namespace = %q, want %q", tc.loaderNS, got, tc.want)
		}
		if got := s.OfKind(KindPeerAuthentication)[0].Namespace; got != "istio-system" {
			t.Errorf("explicit namespace = %q, want istio-system", got)
		}
	}
}

func TestVersionIsContentOnly(t *testing.T) {
	docs := strings.SplitN(twoPolicies, "---\n", 2)
	a := mustLoad(t, twoPolicies)
	// The same objects in other files, in the other order, spelled differently.
	b, _, err := loadFiles(t,
		File{Name: "z/pa.yaml", Data: []byte("# comment\n" + docs[1])},
		File{Name: "y/ap.json", Data: []byte(`{"apiVersion":"security.istio.io/v1beta1","kind":"AuthorizationPolicy","metadata":{"name":"a","labels":{"tier":"2","app":"1"}},"spec":{"rules":[{"to":[{"operation":{"methods":["GET"]}}]}]}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if a.Version != b.Version {
		t.Errorf("Version = %s and %s for the same content, want equal", a.Version, b.Version)
	}
	for i := range a.Objects {
		if a.Objects[i].ResourceVersion == "" || a.Objects[i].ResourceVersion != b.Objects[i].ResourceVersion {
			t.Errorf("ResourceVersion of %s: %q vs %q", a.Objects[i].Key(), a.Objects[i].ResourceVersion, b.Objects[i].ResourceVersion)
		}
	}
	c := mustLoad(t, strings.Replace(twoPolicies, `"GET"`, `"PUT"`, 1))
	if c.Version == a.Version {
		t.Errorf("Version unchanged after a spec change")
	}
	if c.Objects[0].ResourceVersion == a.Objects[0].ResourceVersion || c.Objects[1].ResourceVersion != a.Objects[1].ResourceVersion {
		t.Errorf("ResourceVersion must change for the changed object only")
	}
}

func TestNothingHalfApplied(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("good.yaml", twoPolicies)
	write("sub/bad.yml", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: x\nspec:\n  mtls:\n    mode: strict\n")
	write("..data/ignored.yaml", "not: [valid")
	write(".hidden.yaml", "not: [valid")
	write("README.md", "not yaml")
	var l Loader
	snap, _, err := l.Load(context.Background(), dir)
	var ps Problems
	if snap != nil || !errors.As(err, &ps) || len(ps) != 1 {
		t.Fatalf("Load() = %v, %v; want no snapshot and exactly the one problem of sub/bad.yml", snap, err)
	}
	if want := filepath.Join(dir, "sub/bad.yml") + ":0"; ps[0].Source.String() != want {
		t.Errorf("problem source = %s, want %s", ps[0].Source, want)
	}
	if _, _, err := l.Load(context.Background(), filepath.Join(dir, "missing")); err == nil || errors.As(err, &ps) {
		t.Errorf("Load(missing path) = %v, want a plain I/O error", err)
	}
}

func TestDurationsAsIstioWritesThem(t *testing.T) {
	s := mustLoad(t, "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: r\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        connectTimeout: 30ms\n    outlierDetection:\n      interval: 1m30s\n")
	dr := s.Objects[0].DestinationRule()
	if got := dr.TrafficPolicy.ConnectionPool.Tcp.ConnectTimeout.AsDuration(); got != 30*time.Millisecond {
		t.Errorf("connectTimeout = %v, want 30ms", got)
	}
	if got := dr.TrafficPolicy.OutlierDetection.Interval.AsDuration(); got != 90*time.Second {
		t.Errorf("interval = %v, want 1m30s", got)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	paths, _ := filepath.Glob("testdata/istio-examples/*.yaml")
	mesh, _ := os.ReadFile("testdata/istio-examples-mesh.yaml")
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		a, _, err := loadFiles(t, File{Name: p, Data: data}, File{Name: "mesh.yaml", Data: mesh})
		if err != nil {
			continue
		}
		roundTrip(t, a)
	}
}

// roundTrip checks that Encode's output loads back into an equal snapshot.
func roundTrip(t testing.TB, a *Snapshot) {
	t.Helper()
	enc, err := Encode(a)
	if err != nil {
		t.Fatalf("Encode() = %v", err)
	}
	b, _, err := loadFiles(t, File{Name: "encoded.yaml", Data: enc})
	if err != nil {
		t.Fatalf("loading Encode() output = %v\n%s", err, enc)
	}
	// AllowUnexported: the cached content hashes must agree too.
	opts := cmp.Options{protocmp.Transform(), cmp.AllowUnexported(Object{}), cmp.FilterPath(func(p cmp.Path) bool {
		return p.Last().String() == ".Source"
	}, cmp.Ignore())}
	if diff := cmp.Diff(a.Objects, b.Objects, opts); diff != "" {
		t.Fatalf("objects differ after Encode and load (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(a.Mesh, b.Mesh, protocmp.Transform()); diff != "" {
		t.Fatalf("mesh config differs after Encode and load (-before +after):\n%s", diff)
	}
	if a.Version != b.Version {
		t.Fatalf("Version %s became %s after Encode and load", a.Version, b.Version)
	}
}

// TestCreationTimestamp: metadata.creationTimestamp is kept (Istio's tie-break between
// equally specific policies is age), survives Encode, and a malformed one is refused.
func TestCreationTimestamp(t *testing.T) {
	const doc = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: a, namespace: foo, creationTimestamp: "%s"}
spec: {mtls: {mode: STRICT}}
`
	snap := mustLoad(t, fmt.Sprintf(doc, "2024-05-01T12:00:00Z"))
	want := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	if got := snap.Objects[0].CreationTime; !got.Equal(want) {
		t.Fatalf("CreationTime = %v, want %v", got, want)
	}
	out, err := Encode(snap)
	if err != nil {
		t.Fatal(err)
	}
	again := mustLoad(t, string(out))
	if got := again.Objects[0].CreationTime; !got.Equal(want) {
		t.Fatalf("after Encode and reload, CreationTime = %v, want %v", got, want)
	}
	_, _, err = loadFiles(t, File{Name: "bad.yaml", Data: []byte(fmt.Sprintf(doc, "yesterday"))})
	if err == nil || !strings.Contains(err.Error(), `bad.yaml:0: PeerAuthentication foo/a: metadata.creationTimestamp: "yesterday" is not an RFC 3339 time`) {
		t.Fatalf("load with a bad creationTimestamp: err = %v, want a problem naming the field", err)
	}
}

// TestDefaultMeshDigest: the digest NewSnapshot uses for the default mesh config is the
// digest of the defaults, so a snapshot built without a mesh config and one built with
// the defaults given explicitly get the same version.
func TestDefaultMeshDigest(t *testing.T) {
	if got := meshDigest(DefaultMeshConfig()); got != defaultMeshDigest {
		t.Fatalf("DefaultMeshConfig changed: set defaultMeshDigest in loader.go to %q", got)
	}
	objs := func() []*Object {
		return []*Object{{Kind: KindPeerAuthentication, Meta: Meta{Namespace: "default", Name: "default"}, Spec: &securityv1beta1.PeerAuthentication{}}}
	}
	a, b := NewSnapshot(objs(), nil), NewSnapshot(objs(), DefaultMeshConfig())
	if a.Version != b.Version {
		t.Errorf("version with the defaults implied %s, given %s; want equal", a.Version, b.Version)
	}
	if a.GivenMesh() != nil || b.GivenMesh() == nil || a.Mesh == nil {
		t.Errorf("GivenMesh: %v with the defaults implied (want nil), %v given (want it)", a.GivenMesh(), b.GivenMesh())
	}
}
