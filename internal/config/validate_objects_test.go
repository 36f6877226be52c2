package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
)

// loadedExamples loads every valid example under testdata, with the mesh config the
// Istio examples need.
func loadedExamples(t testing.TB) []*Snapshot {
	t.Helper()
	mesh, err := os.ReadFile("testdata/istio-examples-mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []*Snapshot
	for _, dir := range []string{"testdata/istio-examples", "testdata/seeds"} {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			snap, _, err := loadFiles(t, File{Name: "mesh.yaml", Data: mesh}, File{Name: p, Data: data})
			if err != nil {
				continue // seeds include configurations that are meant to be refused
			}
			out = append(out, snap)
		}
	}
	if len(out) == 0 {
		t.Fatal("no loadable examples under testdata")
	}
	return out
}

// TestValidateObjectsAcceptsLoaded: whatever the Loader accepts, ValidateObjects accepts.
func TestValidateObjectsAcceptsLoaded(t *testing.T) {
	for _, snap := range loadedExamples(t) {
		if err := ValidateObjects(snap.Objects, snap.Mesh); err != nil {
			t.Errorf("ValidateObjects(%s) = %v, want nil", snap.Objects[0].Source.File, err)
		}
	}
}

// problemLines formats problems without their source, which differs between a decoded
// object and its YAML form.
func problemLines(err error) []string {
	var ps Problems
	if !errors.As(err, &ps) {
		return nil
	}
	var out []string
	for _, p := range ps {
		out = append(out, p.Kind+" "+p.Namespace+"/"+p.Name+": "+p.Field+": "+p.Reason)
	}
	return out
}

// loadEncoded validates objs the Loader's way: through their YAML form.
func loadEncoded(t testing.TB, objs []*Object, mesh *meshv1alpha1.MeshConfig) error {
	t.Helper()
	var buf []byte
	for _, o := range objs {
		y, err := EncodeObject(o)
		if err != nil {
			t.Fatalf("EncodeObject(%s): %v", o.Key(), err)
		}
		buf = append(buf, y...)
	}
	files := []File{{Name: "objects.yaml", Data: buf}}
	if mesh != nil {
		m, err := Encode(&Snapshot{Mesh: mesh})
		if err != nil {
			t.Fatal(err)
		}
		files = append([]File{{Name: "mesh.yaml", Data: m}}, files...)
	}
	_, _, err := loadFiles(t, files...)
	return err
}

func TestValidateObjects(t *testing.T) {
	ap := func(name string, spec *security.AuthorizationPolicy) *Object {
		return &Object{Kind: KindAuthorizationPolicy, Meta: Meta{Namespace: "default", Name: name, Source: Source{File: "push"}}, Spec: spec}
	}
	allow := &security.AuthorizationPolicy{Rules: []*security.Rule{{From: []*security.Rule_From{{Source: &security.Source{Principals: []string{"cluster.local/ns/default/sa/sleep"}}}}}}}
	withUnknown := proto.Clone(allow).(*security.AuthorizationPolicy)
	withUnknown.ProtoReflect().SetUnknown(protowire.AppendTag(protowire.AppendVarint(nil, 0), 99, protowire.VarintType))
	for _, tc := range []struct {
		name string
		objs []*Object
		// want are the problems, without their source.
		want []string
		// sameAsLoader: the YAML form of objs gets the same problems from the Loader.
		sameAsLoader bool
	}{
		{"valid", []*Object{ap("a", allow)}, nil, true},
		{"empty method", []*Object{ap("a", &security.AuthorizationPolicy{Rules: []*security.Rule{{To: []*security.Rule_To{{Operation: &security.Operation{Methods: []string{""}}}}}}})},
			[]string{"AuthorizationPolicy default/a: spec.rules[0].to[0].operation.methods[0]: empty value not allowed"}, true},
		{"deny without rules", []*Object{ap("a", &security.AuthorizationPolicy{Action: security.AuthorizationPolicy_DENY})},
			[]string{"AuthorizationPolicy default/a: spec.rules: DENY action without rules is meaningless as it will never be triggered; add an empty rule {} to trigger it for every request"}, true},
		{"CUSTOM provider not in the mesh config", []*Object{ap("a", &security.AuthorizationPolicy{
			Action: security.AuthorizationPolicy_CUSTOM, ActionDetail: &security.AuthorizationPolicy_Provider{Provider: &security.AuthorizationPolicy_ExtensionProvider{Name: "ext"}},
			Rules: []*security.Rule{{}}})}, nil, true},
		{"duplicate", []*Object{ap("a", allow), ap("a", allow)},
			[]string{"AuthorizationPolicy default/a: metadata.name: duplicate AuthorizationPolicy default/a: already defined at push:0"}, false},
		{"bad name", []*Object{ap("A_b", allow)},
			[]string{`AuthorizationPolicy default/A_b: metadata.name: "A_b" is not a valid name: lower-case letters, digits, '-' and '.', at most 253 characters`}, true},
		{"no namespace", []*Object{{Kind: KindAuthorizationPolicy, Meta: Meta{Name: "a"}, Spec: allow}},
			[]string{"AuthorizationPolicy /a: metadata.namespace: missing; a decoded object must name its namespace"}, false},
		{"enum value not defined", []*Object{{Kind: KindPeerAuthentication, Meta: Meta{Namespace: "default", Name: "p"},
			Spec: &security.PeerAuthentication{Mtls: &security.PeerAuthentication_MutualTLS{Mode: 42}}}},
			[]string{"PeerAuthentication default/p: spec.mtls.mode: enum value 42 is not one istio.security.v1beta1.PeerAuthentication.MutualTLS.Mode defines"}, false},
		{"enum in a map", []*Object{{Kind: KindPeerAuthentication, Meta: Meta{Namespace: "default", Name: "p"},
			Spec: &security.PeerAuthentication{PortLevelMtls: map[uint32]*security.PeerAuthentication_MutualTLS{8080: {Mode: 9}}}}},
			[]string{"PeerAuthentication default/p: spec.portLevelMtls[8080].mode: enum value 9 is not one istio.security.v1beta1.PeerAuthentication.MutualTLS.Mode defines"}, false},
		{"unknown field", []*Object{ap("a", withUnknown)},
			[]string{"AuthorizationPolicy default/a: spec: has fields this meshguard does not know (a newer API?); refusing rather than ignoring them"}, false},
		{"spec of another kind", []*Object{{Kind: KindAuthorizationPolicy, Meta: Meta{Namespace: "default", Name: "a"}, Spec: &networking.DestinationRule{Host: "x"}}},
			[]string{"AuthorizationPolicy default/a: spec: is a istio.networking.v1alpha3.DestinationRule, want istio.security.v1beta1.AuthorizationPolicy"}, false},
		{"no spec", []*Object{{Kind: KindAuthorizationPolicy, Meta: Meta{Namespace: "default", Name: "a"}, Spec: (*security.AuthorizationPolicy)(nil)}},
			[]string{"AuthorizationPolicy default/a: spec: missing"}, false},
		{"unknown kind", []*Object{{Kind: "Gateway", Meta: Meta{Namespace: "default", Name: "g"}, Spec: allow}},
			[]string{`Gateway default/g: kind: "Gateway" is not a kind meshguard reads`}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateObjects(tc.objs, nil)
			got := problemLines(err)
			if tc.want == nil && tc.sameAsLoader {
				// The expectation is whatever the Loader says.
				tc.want = problemLines(loadEncoded(t, tc.objs, nil))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ValidateObjects() = %v\nwant %q", err, tc.want)
			}
			if err != nil && (len(got) == 0 || !strings.Contains(err.Error(), "invalid configuration")) {
				t.Errorf("ValidateObjects() = %#v, want Problems", err)
			}
			if tc.sameAsLoader {
				if l := problemLines(loadEncoded(t, tc.objs, nil)); !slices.Equal(got, l) {
					t.Errorf("ValidateObjects() = %q, Loader on the YAML form = %q", got, l)
				}
			}
		})
	}
}

// FuzzValidateObjects checks ValidateObjects against the Loader on arbitrary specs:
// for a message that decodes, has no unknown fields and only defined enum values (the
// two things ValidateObjects refuses that YAML cannot express), ValidateObjects gives
// exactly the problems the Loader gives for the object's YAML form.
func FuzzValidateObjects(f *testing.F) {
	kinds := []Kind{KindAuthorizationPolicy, KindPeerAuthentication, KindRequestAuthentication, KindDestinationRule, KindServiceEntry, KindWorkloadEntry}
	for _, snap := range loadedExamples(f) {
		for _, o := range snap.Objects {
			b, err := proto.Marshal(o.Spec)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(slices.Index(kinds, o.Kind)), b)
		}
	}
	f.Fuzz(func(t *testing.T, k uint8, data []byte) {
		kind := kinds[int(k)%len(kinds)]
		spec := kindsByName()[kind].new()
		if err := proto.Unmarshal(data, spec); err != nil {
			return
		}
		o := &Object{Kind: kind, Meta: Meta{Namespace: "default", Name: "fuzz"}, Spec: spec}
		err := ValidateObjects([]*Object{o}, nil)
		var unrepresentable bool
		for _, line := range problemLines(err) {
			unrepresentable = unrepresentable || strings.Contains(line, "enum value") || strings.Contains(line, "does not know")
		}
		if err != nil && len(problemLines(err)) == 0 {
			t.Fatalf("ValidateObjects() = %v, want Problems", err)
		}
		if unrepresentable {
			return
		}
		y, encErr := EncodeObject(o)
		if encErr != nil {
			return // e.g. a Duration out of range: protojson refuses to write it
		}
		_, _, lerr := loadFiles(t, File{Name: "fuzz.yaml", Data: y})
		if got, want := problemLines(err), problemLines(lerr); !slices.Equal(got, want) {
			t.Fatalf("ValidateObjects() = %q\nLoader on\n%s= %q", got, y, want)
		}
	})
}

// kindsByName lists one kindInfo per Kind.
func kindsByName() map[Kind]kindInfo {
	out := map[Kind]kindInfo{}
	for _, ki := range kinds {
		out[ki.kind] = ki
	}
	return out
}
