package meshtest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	"sigs.k8s.io/yaml"
)

// IstioObject is one decoded Istio document of a test fixture. It deliberately does not
// use internal/config (whose own tests may import meshtest); tests turn it into a
// config.Object with a struct literal.
type IstioObject struct {
	Kind        string
	Namespace   string
	Name        string
	Labels      map[string]string
	Annotations map[string]string
	// CreationTime is metadata.creationTimestamp (RFC 3339), zero when absent.
	CreationTime time.Time
	Spec         proto.Message
}

// IstioObjects decodes multi-document YAML of security and networking kinds into
// istio.io/api messages, failing the test on anything it cannot decode. It is a fixture
// for writing policies as users do in tests, not the product's loader: no validation,
// no defaults. A document without a namespace gets "default".
func IstioObjects(tb testing.TB, src string) []IstioObject {
	tb.Helper()
	var out []IstioObject
	for i, doc := range strings.Split(src, "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var d struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name        string            `json:"name"`
				Namespace   string            `json:"namespace"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
				Created     time.Time         `json:"creationTimestamp"`
			} `json:"metadata"`
			Spec json.RawMessage `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &d); err != nil {
			tb.Fatalf("meshtest: document %d: %v", i, err)
		}
		var m proto.Message
		switch d.Kind {
		case "AuthorizationPolicy":
			m = &security.AuthorizationPolicy{}
		case "PeerAuthentication":
			m = &security.PeerAuthentication{}
		case "RequestAuthentication":
			m = &security.RequestAuthentication{}
		case "DestinationRule":
			m = &networking.DestinationRule{}
		default:
			tb.Fatalf("meshtest: document %d: kind %q not supported by this fixture", i, d.Kind)
		}
		if len(d.Spec) > 0 && string(d.Spec) != "null" {
			if err := protojson.Unmarshal(d.Spec, m); err != nil {
				tb.Fatalf("meshtest: document %d (%s %s): spec: %v", i, d.Kind, d.Metadata.Name, err)
			}
		}
		ns := d.Metadata.Namespace
		if ns == "" {
			ns = "default"
		}
		out = append(out, IstioObject{Kind: d.Kind, Namespace: ns, Name: d.Metadata.Name,
			Labels: d.Metadata.Labels, Annotations: d.Metadata.Annotations, CreationTime: d.Metadata.Created, Spec: m})
	}
	return out
}

// MeshConfig decodes a MeshConfig from YAML (the `meshConfig:` body), failing the test
// on error.
func MeshConfig(tb testing.TB, src string) *meshv1alpha1.MeshConfig {
	tb.Helper()
	js, err := yaml.YAMLToJSON([]byte(src))
	if err != nil {
		tb.Fatalf("meshtest: mesh config: %v", err)
	}
	m := &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(js, m); err != nil {
		tb.Fatalf("meshtest: mesh config: %v", err)
	}
	return m
}
