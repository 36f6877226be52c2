package authz

import (
	"slices"
	"strings"
)

// defaultTrustDomain is Istio's default trust domain. A principal in a policy that names
// it stands for the local trust domain whatever that is, so that policies written for
// the default keep working in a mesh with another trust domain.
const defaultTrustDomain = "cluster.local"

// trustDomains is the local trust domain followed by MeshConfig's trustDomainAliases.
// Istio treats td1/ns/foo/sa/bar and alias/ns/foo/sa/bar as the same identity, which is
// how a mesh migrates to a new trust domain without editing its policies.
type trustDomains []string

// newTrustDomains returns local and its aliases, without repeats or empty entries.
func newTrustDomains(local string, aliases []string) trustDomains {
	var t trustDomains
	for _, td := range append([]string{local}, aliases...) {
		if td != "" && !slices.Contains(t, td) {
			t = append(t, td)
		}
	}
	return t
}

// expandPrincipals applies Istio's trust-domain aliasing to principal values
// ("<trust domain>/ns/<ns>/sa/<sa>"), as istiod does before it writes the RBAC filter:
// a value whose trust domain is the local one, an alias, or cluster.local becomes one
// value per trust domain of the set. Values that do not enforce a trust domain ("*",
// "*/ns/…", anything not of the five-segment form) and values of a foreign trust
// domain stay as they are. A trust domain written with a leading or trailing "*" is
// matched as a pattern: the value is kept as written for the trust domains it already
// covers.
func (t trustDomains) expandPrincipals(vs []string) []string {
	if len(t) == 0 {
		return vs
	}
	var out []string
	for _, v := range vs {
		parts := strings.Split(v, "/")
		if len(parts) != 5 || parts[0] == "*" {
			out = appendNew(out, v)
			continue
		}
		vtd := parts[0]
		if vtd != defaultTrustDomain && !slices.ContainsFunc(t, func(td string) bool { return trustDomainMatch(vtd, td) }) {
			out = appendNew(out, v)
			continue
		}
		pattern := compileStr(vtd)
		for _, td := range t {
			if pattern.kind == strSuffix && pattern.match(td) {
				out = appendNew(out, v)
			} else {
				out = appendNew(out, td+v[len(vtd):])
			}
		}
	}
	return out
}

// expandTrustDomains widens trustDomains values: one that names a trust domain of the
// set stands for all of them.
func (t trustDomains) expandTrustDomains(vs []string) []string {
	var out []string
	for _, v := range vs {
		if slices.Contains(t, v) {
			for _, td := range t {
				out = appendNew(out, td)
			}
			continue
		}
		out = appendNew(out, v)
	}
	return out
}

// trustDomainMatch reports whether a and b are equal or one is a "*" pattern (prefix
// or suffix, as policy values are) that matches the other, as Istio compares a
// policy's trust domain with the mesh's.
func trustDomainMatch(a, b string) bool {
	return compileStr(b).match(a) || compileStr(a).match(b)
}

func appendNew(out []string, v string) []string {
	if slices.Contains(out, v) {
		return out
	}
	return append(out, v)
}
