package config

import (
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	typev1beta1 "istio.io/api/type/v1beta1"
)

// validateObject applies the validation Istio's admission webhook (and the CRD schema
// rules the API server checks) would apply to o, plus the checks that need the mesh
// config. empty holds the paths of lists and objects given but empty, which decoding
// cannot tell from absent ones.
func validateObject(r *reporter, o *Object, empty map[string]bool, mesh *meshv1alpha1.MeshConfig) {
	v := &validator{r: r, empty: empty, mesh: mesh, ns: o.Namespace}
	v.dryRunAnnotation(o)
	switch o.Kind {
	case KindAuthorizationPolicy:
		v.authorizationPolicy(o.AuthorizationPolicy())
	case KindPeerAuthentication:
		v.peerAuthentication(o.PeerAuthentication())
	case KindRequestAuthentication:
		v.requestAuthentication(o.RequestAuthentication())
	case KindDestinationRule:
		v.destinationRule(o.DestinationRule())
	case KindServiceEntry:
		v.serviceEntry(o.ServiceEntry())
	case KindWorkloadEntry:
		v.workloadEntry("spec", o.WorkloadEntry(), false)
	}
}

type validator struct {
	r     *reporter
	empty map[string]bool
	mesh  *meshv1alpha1.MeshConfig
	ns    string
}

func (v *validator) errorf(field, format string, args ...any) { v.r.errorf(field, format, args...) }
func (v *validator) warnf(field, format string, args ...any)  { v.r.warnf(field, format, args...) }

// givenEmpty reports, as an error, a list or object that is present but empty.
func (v *validator) givenEmpty(path, why string) bool {
	if v.empty[path] {
		v.errorf(path, "must not be empty if given: %s", why)
		return true
	}
	return false
}

// oneOfSelector enforces Istio's rule that a policy is scoped by at most one of
// selector, targetRef and targetRefs.
func (v *validator) oneOfSelector(sel *typev1beta1.WorkloadSelector, ref *typev1beta1.PolicyTargetReference, refs []*typev1beta1.PolicyTargetReference) {
	var set []string
	if sel != nil {
		set = append(set, "selector")
	}
	if ref != nil {
		set = append(set, "targetRef")
	}
	if len(refs) > 0 {
		set = append(set, "targetRefs")
	}
	if len(set) > 1 {
		v.errorf("spec."+set[1], "only one of selector, targetRef or targetRefs may be set; found %s", strings.Join(set, " and "))
	}
	v.workloadSelector("spec.selector", sel)
	if ref != nil {
		v.targetRef("spec.targetRef", ref)
	}
	if len(refs) > 16 {
		v.errorf("spec.targetRefs", "at most 16 entries allowed, got %d", len(refs))
	}
	for i, t := range refs {
		v.targetRef(idx("spec.targetRefs", i), t)
	}
}

func (v *validator) workloadSelector(path string, sel *typev1beta1.WorkloadSelector) {
	if sel == nil {
		return
	}
	v.labels(path+".matchLabels", sel.MatchLabels)
	if len(sel.MatchLabels) == 0 {
		v.warnf(path, "selector without matchLabels selects every workload in the namespace")
	}
}

func (v *validator) labels(path string, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		val := labels[k]
		switch {
		case k == "":
			v.errorf(path, "empty label key is not supported in a selector")
		case strings.Contains(k, "*") || strings.Contains(val, "*"):
			v.errorf(path+"["+k+"]", "wildcard is not supported in a selector: %q", k+"="+val)
		}
	}
}

// allowedTargetRefs are the kinds Istio lets a policy's targetRef point at, by group.
var allowedTargetRefs = map[string]bool{
	"/Service":                               true,
	"core/Service":                           true,
	"networking.istio.io/ServiceEntry":       true,
	"gateway.networking.k8s.io/Gateway":      true,
	"gateway.networking.k8s.io/GatewayClass": true,
}

func (v *validator) targetRef(path string, t *typev1beta1.PolicyTargetReference) {
	if t.Name == "" {
		v.errorf(path+".name", "must be set")
	}
	if t.Namespace != "" {
		v.errorf(path+".namespace", "must not be set: cross-namespace references are not supported")
	}
	if !allowedTargetRefs[t.Group+"/"+t.Kind] {
		v.errorf(path+".kind", "targetRef must be a Service, ServiceEntry, Gateway or GatewayClass, got %s/%s", t.Group, t.Kind)
	}
}

// checkValues reports empty strings in a list of match values and, with wildcard set,
// a '*' anywhere but alone, first or last: Istio matches values exactly, by prefix
// ("abc*"), by suffix ("*abc") or by presence ("*"), so a '*' elsewhere is taken
// literally and almost certainly not what was meant.
func (v *validator) checkValues(path string, vals []string, wildcard bool) {
	v.givenEmpty(path, "an empty list matches nothing and is rejected; remove the field to match anything")
	for i, s := range vals {
		p := idx(path, i)
		if s == "" {
			v.errorf(p, "empty value not allowed")
			continue
		}
		if wildcard {
			if n := strings.Count(s, "*"); n > 1 || n == 1 && len(s) > 1 && !strings.HasPrefix(s, "*") && !strings.HasSuffix(s, "*") {
				v.errorf(p, "%q: '*' is only allowed alone, as a prefix or as a suffix", s)
			}
		}
	}
}

func (v *validator) checkIPs(path string, vals []string) {
	for i, s := range vals {
		if s == "" {
			continue // reported by checkValues
		}
		if strings.Contains(s, "/") {
			if _, err := netip.ParsePrefix(s); err != nil {
				v.errorf(idx(path, i), "bad CIDR range %q: %v", s, err)
			}
		} else if _, err := netip.ParseAddr(s); err != nil {
			v.errorf(idx(path, i), "bad IP address %q", s)
		}
	}
}

func (v *validator) checkPorts(path string, vals []string) {
	for i, s := range vals {
		if s == "" {
			continue
		}
		if p, err := strconv.ParseUint(s, 10, 32); err != nil || p < 1 || p > 65535 {
			v.errorf(idx(path, i), "bad port %q: want a number from 1 to 65535 (no wildcards)", s)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func portInRange(p uint32) bool { return p >= 1 && p <= 65535 }

var portName = regexp.MustCompile(`^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
