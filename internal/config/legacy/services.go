package legacy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/meshguard/meshguard/internal/config"
)

// serviceIndex holds the v1 Service documents of a load. A Policy names services; a
// modern policy selects workloads by label; a Service's spec.selector is the one
// faithful bridge between the two, so a target converts only when its Service is part
// of the same input. Services are Kubernetes objects, not meshguard's, so only the
// fields read here are checked.
type serviceIndex struct {
	docs  map[string][]config.Document // "ns/name" → documents (more than one is an error when used)
	order []string
	used  map[string]bool
}

type service struct {
	key      string
	src      config.Source
	selector map[string]string
	ports    []servicePort
}

type servicePort struct {
	name   string
	port   uint32
	target json.Number // empty: same as port
	named  string      // a named targetPort
}

func newServiceIndex() *serviceIndex {
	return &serviceIndex{docs: map[string][]config.Document{}, used: map[string]bool{}}
}

func (ix *serviceIndex) add(d config.Document) {
	key := d.Namespace + "/" + d.Name
	if _, ok := ix.docs[key]; !ok {
		ix.order = append(ix.order, key)
	}
	ix.docs[key] = append(ix.docs[key], d)
}

// lookup returns service name of namespace ns, or the reason a target naming it
// cannot convert.
func (ix *serviceIndex) lookup(ns, name string) (*service, string) {
	key := ns + "/" + name
	docs := ix.docs[key]
	ix.used[key] = true
	switch len(docs) {
	case 0:
		return nil, fmt.Sprintf("refused: Service %s is not in the input; modern policies select workloads by label, and the Service's spec.selector is what says which workloads service %q means: add its manifest (kubectl get service %s -n %s -o yaml) to the files converted", key, name, name, ns)
	case 1:
	default:
		return nil, fmt.Sprintf("Service %s is defined more than once (%s and %s); keep one", key, docs[0].Source, docs[1].Source)
	}
	d := docs[0]
	svc := &service{key: key, src: d.Source}
	bad := func(format string, args ...any) (*service, string) {
		return nil, fmt.Sprintf("Service %s (%s): %s", key, d.Source, fmt.Sprintf(format, args...))
	}
	spec, ok := d.Body["spec"].(map[string]any)
	if !ok {
		return bad("has no spec")
	}
	sel, ok := spec["selector"].(map[string]any)
	if !ok || len(sel) == 0 {
		return bad("has no spec.selector, so it names no workloads (a Service without a selector, or of type ExternalName, has no pods to apply a policy to)")
	}
	svc.selector = map[string]string{}
	for k, v := range sel {
		s, ok := v.(string)
		if !ok {
			return bad("spec.selector[%s]: got %s, want a string", k, jsonType(v))
		}
		svc.selector[k] = s
	}
	ports, _ := spec["ports"].([]any)
	for i, pv := range ports {
		pm, ok := pv.(map[string]any)
		if !ok {
			return bad("spec.ports[%d]: got %s, want an object", i, jsonType(pv))
		}
		var sp servicePort
		sp.name, _ = pm["name"].(string)
		n, ok := pm["port"].(json.Number)
		port, err := strconv.ParseUint(n.String(), 10, 32)
		if !ok || err != nil || port < 1 || port > 65535 {
			return bad("spec.ports[%d].port: want a port number 1-65535", i)
		}
		sp.port = uint32(port)
		switch t := pm["targetPort"].(type) {
		case nil:
		case json.Number:
			sp.target = t
		case string:
			sp.named = t
		default:
			return bad("spec.ports[%d].targetPort: got %s, want a number or a name", i, jsonType(t))
		}
		svc.ports = append(svc.ports, sp)
	}
	return svc, ""
}

// workloadPort maps a Policy's service port to the workload port a PeerAuthentication's
// portLevelMtls is keyed by.
func (s *service) workloadPort(ps PortSelector) (uint32, string) {
	var found *servicePort
	for i := range s.ports {
		sp := &s.ports[i]
		if ps.Number != nil && sp.port == *ps.Number || ps.Name != nil && sp.name == *ps.Name {
			found = sp
			break
		}
	}
	if found == nil {
		want := ""
		if ps.Number != nil {
			want = strconv.FormatUint(uint64(*ps.Number), 10)
		} else {
			want = strconv.Quote(*ps.Name)
		}
		var have []string
		for _, sp := range s.ports {
			have = append(have, strings.TrimSpace(sp.name+" "+strconv.FormatUint(uint64(sp.port), 10)))
		}
		return 0, fmt.Sprintf("Service %s (%s) has no port %s (it has: %s)", s.key, s.src, want, strings.Join(have, ", "))
	}
	switch {
	case found.named != "":
		return 0, fmt.Sprintf("refused: port %d of Service %s targets the named container port %q; portLevelMtls needs the workload's port number, which only the pod spec knows: give targetPort as a number in the Service", found.port, s.key, found.named)
	case found.target == "":
		return found.port, ""
	}
	t, err := strconv.ParseUint(found.target.String(), 10, 32)
	if err != nil || t < 1 || t > 65535 {
		return 0, fmt.Sprintf("Service %s (%s): targetPort %s of port %d is not a port number 1-65535", s.key, s.src, found.target, found.port)
	}
	return uint32(t), ""
}

// warnUnused says which Services no Policy target used, as the Loader would have
// said for any kind it skips.
func (ix *serviceIndex) warnUnused(out *config.Translation) {
	for _, key := range ix.order {
		if ix.used[key] {
			continue
		}
		for _, d := range ix.docs[key] {
			out.Warnings = append(out.Warnings, config.Problem{Source: d.Source, Kind: d.Kind, Namespace: d.Namespace, Name: d.Name,
				Reason: "skipped: meshguard reads a Service only to map the targets of " + APIVersion + " Policies, and none names this one"})
		}
	}
}
