package config

import (
	"sort"
	"strings"
)

// istioOperatorSpecFields are the fields of an IstioOperator's spec (install.istio.io
// v1alpha1). meshguard reads meshConfig and ignores the rest, which configure how
// Istio itself is installed.
var istioOperatorSpecFields = map[string]bool{
	"profile": true, "installPackagePath": true, "hub": true, "tag": true, "namespace": true,
	"revision": true, "compatibilityVersion": true, "meshConfig": true, "components": true,
	"values": true, "unvalidatedValues": true,
}

func decodeIstioOperator(r *reporter, d *rawDoc) (meshSource, bool) {
	checkTopLevel(r, d.body, "apiVersion", "kind", "metadata", "spec", "status")
	m := meshSource{src: d.src, kind: d.kind, path: "spec.meshConfig", rep: r.base}
	spec, ok := d.body["spec"].(map[string]any)
	if !ok {
		if d.body["spec"] != nil {
			r.errorf("spec", "got %s, want an object", jsonType(d.body["spec"]))
		} else {
			r.warnf("spec.meshConfig", "skipped: IstioOperator without spec.meshConfig gives no mesh config")
		}
		return m, false
	}
	var ignored []string
	for k := range spec {
		switch {
		case !istioOperatorSpecFields[k]:
			r.errorf("spec."+k, "unknown field %q in IstioOperator spec", k)
		case k != "meshConfig":
			ignored = append(ignored, "spec."+k)
		}
	}
	if len(ignored) > 0 {
		sort.Strings(ignored)
		r.warnf("spec", "ignored: %s configure(s) installing Istio; meshguard reads only spec.meshConfig", strings.Join(ignored, ", "))
	}
	mc, ok := spec["meshConfig"]
	if !ok || mc == nil {
		r.warnf("spec.meshConfig", "skipped: IstioOperator without spec.meshConfig gives no mesh config")
		return m, false
	}
	user, fields, ok := decodeMesh(r, m.path, mc)
	if !ok {
		return m, false
	}
	m.user, m.fields = user, fields
	return m, true
}

// decodeConfigMap reads the `istio` ConfigMap's mesh key; other ConfigMaps are skipped.
func decodeConfigMap(r *reporter, d *rawDoc) (meshSource, bool) {
	m := meshSource{src: d.src, kind: d.kind, path: "data.mesh", rep: r.base}
	if d.meta.Name != "istio" {
		r.warnf("", "skipped: ConfigMap is not the istio mesh config (only the ConfigMap named istio is read)")
		return m, false
	}
	checkTopLevel(r, d.body, "apiVersion", "kind", "metadata", "data", "binaryData", "immutable")
	data := stringMap(r, "data", d.body["data"])
	text, ok := data["mesh"]
	if !ok {
		r.warnf("data.mesh", "the istio ConfigMap has no mesh key: Istio's defaults apply")
	}
	user, fields, ok := decodeMeshYAML(r, m.path, text)
	if !ok {
		return m, false
	}
	m.user, m.fields = user, fields
	return m, true
}

// decodeObject decodes a document of one of the kinds meshguard reads. Other kinds are
// skipped with a warning.
func decodeObject(r *reporter, d *rawDoc) (*Object, map[string]bool, bool) {
	ki, ok := kinds[d.apiVersion+" "+d.kind]
	if !ok {
		if vs := supportedVersions(d.kind); len(vs) > 0 {
			r.errorf("apiVersion", "%s %s is not supported; use %s", d.apiVersion, d.kind, strings.Join(vs, " or "))
			return nil, nil, false
		}
		group, _, _ := strings.Cut(d.apiVersion, "/")
		if group == "authentication.istio.io" {
			r.warnf("", "skipped: %s %s is Istio's pre-1.6 authentication API; rewrite it as PeerAuthentication and RequestAuthentication", d.apiVersion, d.kind)
			return nil, nil, false
		}
		r.warnf("", "skipped: meshguard does not use %s %s", d.apiVersion, d.kind)
		return nil, nil, false
	}
	checkTopLevel(r, d.body, "apiVersion", "kind", "metadata", "spec", "status")
	if d.meta.Name == "" {
		r.errorf("metadata.name", "missing; every object needs a name")
	}
	spec := d.body["spec"]
	if spec == nil {
		// No spec is an empty spec, as for the API server: for an AuthorizationPolicy
		// that is Istio's "allow nothing".
		spec = map[string]any{}
	}
	msg := ki.new()
	empty, ok := decodeSpec(r, "spec", spec, msg)
	if !ok || d.meta.Name == "" {
		return nil, nil, false
	}
	return &Object{Kind: ki.kind, Meta: d.meta, Spec: msg}, empty, true
}
