package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// apiVersions are the versions Encode writes: the newest Istio serves for each kind.
var apiVersions = map[Kind]string{
	KindPeerAuthentication:    "security.istio.io/v1",
	KindAuthorizationPolicy:   "security.istio.io/v1",
	KindRequestAuthentication: "security.istio.io/v1",
	KindDestinationRule:       "networking.istio.io/v1",
	KindServiceEntry:          "networking.istio.io/v1",
	KindWorkloadEntry:         "networking.istio.io/v1",
}

// Encode writes s as multi-document YAML that a Loader reads back into an equal
// Snapshot (same objects, same MeshConfig, same Version): the effective MeshConfig as
// an IstioOperator's spec.meshConfig, with every field spelled out, then each object.
// It is the config dump format.
func Encode(s *Snapshot) ([]byte, error) {
	var buf bytes.Buffer
	mesh, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(s.Mesh)
	if err != nil {
		return nil, fmt.Errorf("encode mesh config: %w", err)
	}
	if err := writeDoc(&buf, map[string]any{
		"apiVersion": "install.istio.io/v1alpha1",
		"kind":       "IstioOperator",
		"spec":       map[string]any{"meshConfig": json.RawMessage(mesh)},
	}); err != nil {
		return nil, fmt.Errorf("encode mesh config: %w", err)
	}
	for _, o := range s.Objects {
		if err := writeObject(&buf, o); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// EncodeObject writes o as one YAML document, starting with "---", in the newest
// apiVersion Istio serves for its kind: the form Encode writes each object in.
func EncodeObject(o *Object) ([]byte, error) {
	var buf bytes.Buffer
	if err := writeObject(&buf, o); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeObject(buf *bytes.Buffer, o *Object) error {
	spec, err := protojson.Marshal(o.Spec)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", o.Kind, o.Key(), err)
	}
	meta := map[string]any{"name": o.Name, "namespace": o.Namespace}
	if len(o.Labels) > 0 {
		meta["labels"] = o.Labels
	}
	if len(o.Annotations) > 0 {
		meta["annotations"] = o.Annotations
	}
	if !o.CreationTime.IsZero() {
		meta["creationTimestamp"] = o.CreationTime.UTC().Format(time.RFC3339)
	}
	if err := writeDoc(buf, map[string]any{
		"apiVersion": apiVersions[o.Kind],
		"kind":       string(o.Kind),
		"metadata":   meta,
		"spec":       json.RawMessage(spec),
	}); err != nil {
		return fmt.Errorf("encode %s %s: %w", o.Kind, o.Key(), err)
	}
	return nil
}

func writeDoc(buf *bytes.Buffer, doc map[string]any) error {
	js, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		return err
	}
	buf.WriteString("---\n")
	buf.Write(y)
	return nil
}
