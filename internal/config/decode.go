package config

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	"sigs.k8s.io/yaml"
)

// kindInfo says how to decode one apiVersion+kind.
type kindInfo struct {
	kind Kind
	new  func() proto.Message
}

// kinds maps "apiVersion kind" to its decoder. Istio serves each kind in several API
// versions with one Go type (istio.io/api aliases them), so all versions decode alike.
var kinds = func() map[string]kindInfo {
	m := map[string]kindInfo{}
	add := func(group string, versions []string, k Kind, f func() proto.Message) {
		for _, v := range versions {
			m[group+"/"+v+" "+string(k)] = kindInfo{k, f}
		}
	}
	sec := []string{"v1", "v1beta1"}
	add("security.istio.io", sec, KindPeerAuthentication, func() proto.Message { return new(security.PeerAuthentication) })
	add("security.istio.io", sec, KindAuthorizationPolicy, func() proto.Message { return new(security.AuthorizationPolicy) })
	add("security.istio.io", sec, KindRequestAuthentication, func() proto.Message { return new(security.RequestAuthentication) })
	netv := []string{"v1", "v1beta1", "v1alpha3"}
	add("networking.istio.io", netv, KindDestinationRule, func() proto.Message { return new(networking.DestinationRule) })
	add("networking.istio.io", netv, KindServiceEntry, func() proto.Message { return new(networking.ServiceEntry) })
	add("networking.istio.io", netv, KindWorkloadEntry, func() proto.Message { return new(networking.WorkloadEntry) })
	return m
}()

// supportedVersions lists the apiVersions meshguard reads for kind k, for error messages.
func supportedVersions(k string) []string {
	var out []string
	for key := range kinds {
		av, kk, _ := strings.Cut(key, " ")
		if kk == k {
			out = append(out, av)
		}
	}
	sort.Strings(out)
	return out
}

// rawDoc is one YAML document after YAML→JSON conversion and the envelope checks.
type rawDoc struct {
	src        Source
	apiVersion string
	kind       string
	meta       Meta
	hasMeta    bool
	body       map[string]any // the whole document, JSON-decoded
}

// splitDocuments splits a multi-document YAML stream at "---" lines, the way kubectl
// does. Documents holding only whitespace and comments are dropped, so DOC_INDEX counts
// the documents a reader sees: a leading or trailing "---" does not shift it.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if !blankDocument(cur.Bytes()) {
			docs = append(docs, bytes.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), len(data)+1)
	for sc.Scan() {
		line := sc.Text()
		if isSeparator(line) {
			flush()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

func isSeparator(line string) bool {
	if !strings.HasPrefix(line, "---") {
		return false
	}
	rest := strings.TrimRight(line[3:], " \t\r")
	return rest == "" || strings.HasPrefix(rest, " #") || strings.HasPrefix(rest, "\t#")
}

func blankDocument(b []byte) bool {
	for _, line := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") && t != "..." {
			return false
		}
	}
	return true
}

// objectMetaFields are the Kubernetes ObjectMeta fields a document may carry. meshguard
// keeps name, namespace, labels and annotations; the others appear in the output of
// `kubectl get -o yaml` and are accepted and ignored so that such output loads.
var objectMetaFields = map[string]bool{
	"name": true, "namespace": true, "labels": true, "annotations": true,
	"generateName": true, "uid": true, "resourceVersion": true, "generation": true,
	"creationTimestamp": true, "deletionTimestamp": true, "deletionGracePeriodSeconds": true,
	"ownerReferences": true, "finalizers": true, "managedFields": true, "selfLink": true,
}

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

func isDNS1123Label(s string) bool     { return len(s) <= 63 && dns1123Label.MatchString(s) }
func isDNS1123Subdomain(s string) bool { return len(s) <= 253 && dns1123Subdomain.MatchString(s) }

// parseDocument converts one YAML document to JSON and checks its envelope: apiVersion,
// kind, metadata and the top-level fields. It reports problems through r (whose base
// it fills in as soon as kind, namespace and name are known) and returns nil when the
// document cannot be used at all.
func parseDocument(r *reporter, doc []byte, defaultNamespace string) *rawDoc {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		r.errorf("", "not valid YAML: %s", strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "))
		return nil
	}
	v, err := decodeJSON(js)
	if err != nil {
		r.errorf("", "not valid JSON: %v", err)
		return nil
	}
	body, ok := v.(map[string]any)
	if !ok {
		r.errorf("", "got %s, want a Kubernetes-style object with apiVersion and kind", jsonType(v))
		return nil
	}
	d := &rawDoc{src: r.base.Source, body: body}
	d.apiVersion, _ = body["apiVersion"].(string)
	d.kind, _ = body["kind"].(string)
	r.base.Kind = d.kind
	d.meta.Namespace = defaultNamespace
	if m, ok := body["metadata"]; ok {
		d.hasMeta = true
		parseMeta(r, m, &d.meta, defaultNamespace)
	}
	d.meta.Source = d.src
	r.base.Namespace, r.base.Name = d.meta.Namespace, d.meta.Name
	if d.apiVersion == "" {
		r.errorf("apiVersion", "missing; every document needs apiVersion and kind")
	}
	if d.kind == "" {
		r.errorf("kind", "missing; every document needs apiVersion and kind")
	}
	return d
}

func parseMeta(r *reporter, v any, m *Meta, defaultNamespace string) {
	obj, ok := v.(map[string]any)
	if !ok {
		r.errorf("metadata", "got %s, want an object", jsonType(v))
		return
	}
	str := func(k string) string {
		switch s := obj[k].(type) {
		case nil:
			return ""
		case string:
			return s
		default:
			r.errorf("metadata."+k, "got %s, want a string", jsonType(s))
			return ""
		}
	}
	// Name and namespace first, so that every later problem names the object.
	m.Name = str("name")
	m.Namespace = str("namespace")
	if m.Namespace == "" {
		m.Namespace = defaultNamespace
	}
	r.base.Name, r.base.Namespace = m.Name, m.Namespace
	if m.Name != "" && !isDNS1123Subdomain(m.Name) {
		r.errorf("metadata.name", "%q is not a valid name: lower-case letters, digits, '-' and '.', at most 253 characters", m.Name)
	}
	if m.Namespace != "" && !isDNS1123Label(m.Namespace) {
		r.errorf("metadata.namespace", "%q is not a valid namespace: lower-case letters, digits and '-', at most 63 characters", m.Namespace)
	}
	keys := sortedKeys(obj)
	for _, k := range keys {
		if !objectMetaFields[k] {
			r.errorf("metadata."+k, "unknown field %q in metadata", k)
		}
	}
	m.Labels = stringMap(r, "metadata.labels", obj["labels"])
	m.Annotations = stringMap(r, "metadata.annotations", obj["annotations"])
	// Istio breaks ties between equally specific policies by age (policy.Meta.Older).
	if ts := str("creationTimestamp"); ts != "" {
		t, err := time.Parse(time.RFC3339, ts)
		if err != nil {
			r.errorf("metadata.creationTimestamp", "%q is not an RFC 3339 time such as 2024-05-01T12:00:00Z", ts)
		} else {
			m.CreationTime = t.UTC()
		}
	}
}

func stringMap(r *reporter, path string, v any) map[string]string {
	if v == nil {
		return nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		r.errorf(path, "got %s, want a map of strings", jsonType(v))
		return nil
	}
	out := make(map[string]string, len(obj))
	for k, e := range obj {
		s, ok := e.(string)
		if !ok {
			// Kubernetes rejects `version: 1` in labels: the value must be quoted.
			r.errorf(fmt.Sprintf("%s[%s]", path, k), "got %s, want a string (quote it)", jsonType(e))
			continue
		}
		out[k] = s
	}
	return out
}

// checkTopLevel reports top-level fields other than the allowed ones.
func checkTopLevel(r *reporter, body map[string]any, allowed ...string) {
	keys := sortedKeys(body)
	for _, k := range keys {
		found := false
		for _, a := range allowed {
			found = found || a == k
		}
		if !found {
			r.errorf(k, "unknown top-level field %q; want %s", k, strings.Join(allowed, ", "))
		}
	}
}
