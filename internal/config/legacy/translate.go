package legacy

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/meshguard/meshguard/internal/config"
)

// The API version and kinds this package reads.
const (
	APIVersion     = "authentication.istio.io/v1alpha1"
	KindPolicy     = "Policy"
	KindMeshPolicy = "MeshPolicy"
)

// Translator is the config.Translator for Istio 1.0's authentication policies: set it
// as a config.Loader's Translator and Policy and MeshPolicy documents load as the
// PeerAuthentication, RequestAuthentication and AuthorizationPolicy that replace them.
// It also reads v1 Service documents, which map a Policy's target services to the
// workload labels modern policies select by. The zero value is ready to use; it holds
// no state, so one value may serve any number of Loaders at once.
type Translator struct{}

var _ config.Translator = Translator{}

// Translates reports whether apiVersion and kind are a Policy, a MeshPolicy or a Service.
func (Translator) Translates(apiVersion, kind string) bool {
	return apiVersion == APIVersion && (kind == KindPolicy || kind == KindMeshPolicy) ||
		apiVersion == "v1" && kind == "Service"
}

// Translate converts docs; see the package documentation for what converts and what is
// refused.
func (Translator) Translate(rootNamespace string, docs []config.Document) config.Translation {
	_, tr := translate(rootNamespace, docs)
	return tr
}

// Conversion is one legacy policy and the modern objects that replace it, in the order
// PeerAuthentication, RequestAuthentication, AuthorizationPolicy (per target service).
type Conversion struct {
	Source config.Source
	Kind   string // KindPolicy or KindMeshPolicy
	// Namespace is empty for a MeshPolicy, which is cluster-scoped.
	Namespace string
	Name      string
	Objects   []*config.Object
}

// Origin names the legacy object: "authentication.istio.io/v1alpha1 Policy ns/name
// (file:doc)", or "… MeshPolicy name (file:doc)".
func (c Conversion) Origin() string {
	return fmt.Sprintf("%s %s %s (%s)", APIVersion, c.Kind, objectName(c.Namespace, c.Name), c.Source)
}

func objectName(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// policyDoc is one Policy or MeshPolicy on its way through translation.
type policyDoc struct {
	doc    config.Document
	kind   string
	ns     string // "" for a MeshPolicy
	name   string
	spec   Policy
	failed bool
	out    *config.Translation

	// Computed from spec by check.
	mode     security.PeerAuthentication_MutualTLS_Mode
	jwtRules []*security.JWTRule
	deny     []*security.Rule // nil when the policy requires no token
}

func (p *policyDoc) problem(field, format string, args ...any) config.Problem {
	return config.Problem{Source: p.doc.Source, Kind: p.kind, Namespace: p.ns, Name: p.name, Field: field, Reason: fmt.Sprintf(format, args...)}
}

func (p *policyDoc) errorf(field, format string, args ...any) {
	p.failed = true
	p.out.Problems = append(p.out.Problems, p.problem(field, format, args...))
}

func (p *policyDoc) warnf(field, format string, args ...any) {
	p.out.Warnings = append(p.out.Warnings, p.problem(field, format, args...))
}

func (p *policyDoc) meshWide() bool      { return p.kind == KindMeshPolicy }
func (p *policyDoc) namespaceWide() bool { return p.kind == KindPolicy && len(p.spec.Targets) == 0 }

// translate converts docs. Conversions come only from policies without problems; the
// Loader fails the whole load when there is any problem, and Convert returns none.
func translate(root string, docs []config.Document) ([]Conversion, config.Translation) {
	var out config.Translation
	services := newServiceIndex()
	var pols []*policyDoc
	for _, d := range docs {
		if d.APIVersion == "v1" && d.Kind == "Service" {
			services.add(d)
			continue
		}
		p := &policyDoc{doc: d, kind: d.Kind, ns: d.Namespace, name: d.Name, out: &out}
		if p.kind == KindMeshPolicy {
			p.ns = "" // cluster-scoped: Kubernetes ignores a namespace given in metadata
		}
		p.check(root)
		pols = append(pols, p)
	}
	checkOverrides(pols)
	var convs []Conversion
	for _, p := range pols {
		if p.failed {
			continue
		}
		objs := p.convert(root, services)
		if p.failed {
			continue
		}
		names := make([]string, len(objs))
		for i, o := range objs {
			names[i] = fmt.Sprintf("%s %s", o.Kind, o.Key())
		}
		p.warnf("", "converted to %s: %s %s is Istio's pre-1.6 authentication API (meshguard ctl convert prints the replacement YAML)",
			strings.Join(names, ", "), APIVersion, p.kind)
		out.Objects = append(out.Objects, objs...)
		convs = append(convs, Conversion{Source: p.doc.Source, Kind: p.kind, Namespace: p.ns, Name: p.name, Objects: objs})
	}
	services.warnUnused(&out)
	if len(out.Problems) > 0 {
		return nil, out
	}
	return convs, out
}

// check decodes the spec and applies Istio 1.0's validation and this package's rules
// for each field on its own.
func (p *policyDoc) check(root string) {
	for _, k := range sortedKeys(p.doc.Body) {
		switch k {
		case "apiVersion", "kind", "metadata", "spec", "status":
		default:
			p.errorf(k, "unknown top-level field %q; want apiVersion, kind, metadata, spec, status", k)
		}
	}
	if p.name == "" {
		p.errorf("metadata.name", "missing; every object needs a name")
	}
	for _, e := range decodeStrict("spec", p.doc.Body["spec"], &p.spec) {
		p.errorf(e.field, "%s", e.reason)
	}
	if p.failed {
		return
	}
	s := &p.spec
	// Istio 1.0's validation: these names were refused, so such a policy never applied.
	switch {
	case p.meshWide() && p.name != "default":
		p.errorf("metadata.name", "a MeshPolicy must be named %q (Istio refused %q)", "default", p.name)
	case p.meshWide() && len(s.Targets) > 0:
		p.errorf("spec.targets", "a MeshPolicy must not have targets: it applies to the whole mesh")
	case p.namespaceWide() && p.name != "default":
		p.errorf("metadata.name", "a Policy without targets must be named %q (Istio refused %q): it is the namespace-wide policy", "default", p.name)
	case !p.meshWide() && len(s.Targets) > 0 && p.name == "default":
		p.errorf("metadata.name", "a Policy named %q must not have targets (Istio refused it): give the service policy another name", "default")
	}
	if !p.meshWide() && p.ns == root {
		p.errorf("metadata.namespace", "a Policy in the root namespace %q cannot be converted: modern policies there apply to the whole mesh (with a selector, to matching workloads of every namespace), where this Policy applied to %q only; move it to the workloads' namespace or write a MeshPolicy", root, root)
	}
	p.checkTargets()
	p.checkPeers()
	p.checkOrigins()
}

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func (p *policyDoc) checkTargets() {
	seen := map[string]int{}
	for i, t := range p.spec.Targets {
		tp := fmt.Sprintf("spec.targets[%d]", i)
		if len(t.Name) > 63 || !dns1123Label.MatchString(t.Name) {
			p.errorf(tp+".name", "%q must be a service's short name (a DNS-1123 label) in namespace %q", t.Name, p.ns)
		}
		if prev, dup := seen[t.Name]; dup {
			p.errorf(tp+".name", "service %q is already a target at spec.targets[%d]; list it once with all its ports", t.Name, prev)
		}
		seen[t.Name] = i
		if len(t.Labels) > 0 {
			p.errorf(tp+".labels", "refused: Istio never implemented target labels (it selected by name only), so converting them to a selector would change which workloads the policy covers; remove them")
		}
		for j, ps := range t.Ports {
			pp := fmt.Sprintf("%s.ports[%d]", tp, j)
			switch {
			case (ps.Number == nil) == (ps.Name == nil):
				p.errorf(pp, "give exactly one of number or name")
			case ps.Number != nil && (*ps.Number < 1 || *ps.Number > 65535):
				p.errorf(pp+".number", "port %d is not in the range 1-65535", *ps.Number)
			case ps.Name != nil && *ps.Name == "":
				p.errorf(pp+".name", "must not be empty")
			}
		}
	}
}

func (p *policyDoc) checkPeers() {
	s := &p.spec
	if len(s.Peers) == 0 {
		// No peer method means no peer authentication: the sidecar did not terminate
		// mTLS for these workloads, whatever a wider policy said.
		p.mode = security.PeerAuthentication_MutualTLS_DISABLE
		if s.PeerIsOptional {
			p.warnf("spec.peerIsOptional", "ignored, as Istio ignored it: there are no peer methods")
		}
		return
	}
	if s.PeerIsOptional {
		p.errorf("spec.peerIsOptional", "refused: accepting a request whose peer authentication failed, to leave the decision to authorization, has no modern equivalent (PERMISSIVE also accepts plaintext; STRICT rejects the request); remove it, or use mode PERMISSIVE with an AuthorizationPolicy on source.principals")
	}
	for i, m := range s.Peers {
		mp := fmt.Sprintf("spec.peers[%d]", i)
		switch {
		case m.MTLS == nil && m.JWT == nil:
			p.errorf(mp, "give one peer method: mtls")
			continue
		case m.MTLS != nil && m.JWT != nil:
			p.errorf(mp, "give exactly one of mtls or jwt")
			continue
		case m.JWT != nil:
			p.errorf(mp+".jwt", "refused: peer JWT authentication was never available in Istio and has no modern equivalent; use mtls for peers and origins for JWTs")
			continue
		case i > 0:
			p.errorf(mp, "refused: only one mtls peer method can be converted; a PeerAuthentication has a single mode")
			continue
		}
		if m.MTLS.AllowTLS {
			p.errorf(mp+".mtls.allowTls", "refused: TLS without a client certificate has no modern equivalent (PERMISSIVE also accepts plaintext, STRICT requires a client certificate); remove it and choose a mode")
		}
		switch m.MTLS.Mode {
		case "", "STRICT":
			p.mode = security.PeerAuthentication_MutualTLS_STRICT
		case "PERMISSIVE":
			p.mode = security.PeerAuthentication_MutualTLS_PERMISSIVE
		default:
			p.errorf(mp+".mtls.mode", "unknown mode %q; want STRICT or PERMISSIVE", m.MTLS.Mode)
		}
	}
}

func (p *policyDoc) checkOrigins() {
	s := &p.spec
	switch s.PrincipalBinding {
	case "", "USE_PEER":
	case "USE_ORIGIN":
		// The binding chose which identity Istio reported as the request principal; it
		// never decided whether a request was accepted. Modern policies name both
		// identities explicitly (principals, requestPrincipals), so there is nothing to
		// bind, unless there is no origin, where Istio failed every request.
		if len(s.Origins) == 0 {
			p.errorf("spec.principalBinding", "refused: USE_ORIGIN without origins made Istio's authentication filter fail every request; add origins or use USE_PEER")
		}
	default:
		p.errorf("spec.principalBinding", "unknown binding %q; want USE_PEER or USE_ORIGIN", s.PrincipalBinding)
	}
	if len(s.Origins) == 0 {
		if s.OriginIsOptional {
			p.warnf("spec.originIsOptional", "ignored, as Istio ignored it: there are no origin methods")
		}
		return
	}
	if s.OriginIsOptional {
		p.errorf("spec.originIsOptional", "refused: Istio then accepted a request with an invalid token too, but a RequestAuthentication always rejects an invalid token; remove it to require a token, or write a RequestAuthentication alone (an absent token passes, an invalid one is rejected)")
	}
	issuers := map[string]int{}
	for i, o := range s.Origins {
		op := fmt.Sprintf("spec.origins[%d].jwt", i)
		if o.JWT == nil {
			p.errorf(op, "must be set: JWT is the only origin method")
			continue
		}
		j := o.JWT
		if j.Issuer == "" {
			p.errorf(op+".issuer", "must be set: the issuer (iss claim) the tokens carry")
		} else if prev, dup := issuers[j.Issuer]; dup {
			p.errorf(op+".issuer", "issuer %q is already used by spec.origins[%d] (Istio refused this)", j.Issuer, prev)
		} else {
			issuers[j.Issuer] = i
		}
		for k, a := range j.Audiences {
			if a == "" {
				p.errorf(fmt.Sprintf("%s.audiences[%d]", op, k), "must be a non-empty string")
			}
		}
		if j.JwksURI != "" && j.Jwks != "" {
			p.errorf(op+".jwks", "give only one of jwks and jwksUri")
		}
		if j.JwksURI != "" {
			if u, err := url.Parse(j.JwksURI); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				p.errorf(op+".jwksUri", "%q is not an http:// or https:// URL with a host", j.JwksURI)
			}
		}
		for k, h := range j.JwtHeaders {
			switch {
			case h == "":
				p.errorf(fmt.Sprintf("%s.jwtHeaders[%d]", op, k), "must be a non-empty header name")
			case strings.EqualFold(h, "ingress-authorization"):
				p.errorf(fmt.Sprintf("%s.jwtHeaders[%d]", op, k), "refused: Istio read this header with an \"istio\" value prefix in some releases and not in others, so the token's format is ambiguous; write a RequestAuthentication with fromHeaders and the prefix your clients send")
			}
		}
		for k, q := range j.JwtParams {
			if q == "" {
				p.errorf(fmt.Sprintf("%s.jwtParams[%d]", op, k), "must be a non-empty query parameter name")
			}
		}
		rule := &security.JWTRule{
			Issuer: j.Issuer, Audiences: j.Audiences, JwksUri: j.JwksURI, Jwks: j.Jwks, FromParams: j.JwtParams,
			// Istio's sidecar forwarded the token to the application; a
			// RequestAuthentication removes it unless told otherwise.
			ForwardOriginalToken: true,
		}
		for _, h := range j.JwtHeaders {
			rule.FromHeaders = append(rule.FromHeaders, &security.JWTHeader{Name: h})
		}
		p.jwtRules = append(p.jwtRules, rule)
	}
	p.deny = p.denyRules()
	if s.Origins[0].JWT != nil && len(s.Origins[0].JWT.TriggerRules) > 0 && !p.failed {
		p.warnf("spec.origins[0].jwt.triggerRules", "the AuthorizationPolicy's paths and notPaths carry these rules: a token is required exactly where these rules triggered, but the RequestAuthentication also rejects an invalid token on the paths they excluded, which Istio did not check")
	}
}

// denyRules builds the AuthorizationPolicy rules that reject a request without a valid
// token wherever the trigger rules say a token is checked. Istio triggered a method per
// path and accepted a request when a triggered method validated; a RequestAuthentication
// accepts a token of any of its issuers on any path, so methods with different trigger
// rules cannot be converted faithfully.
func (p *policyDoc) denyRules() []*security.Rule {
	origins := p.spec.Origins
	if len(origins) == 0 || origins[0].JWT == nil {
		return nil
	}
	first := origins[0].JWT.TriggerRules
	for i, o := range origins[1:] {
		if o.JWT != nil && !slices.EqualFunc(first, o.JWT.TriggerRules, triggerRuleEqual) {
			p.errorf(fmt.Sprintf("spec.origins[%d].jwt.triggerRules", i+1), "refused: differs from spec.origins[0]'s trigger rules; a RequestAuthentication accepts a token of any of its issuers on every path, so a token of one issuer would pass where Istio only checked another's; give every origin the same trigger rules or split the policy")
			return nil
		}
	}
	from := []*security.Rule_From{{Source: &security.Source{NotRequestPrincipals: []string{"*"}}}}
	var rules []*security.Rule
	for i, tr := range first {
		tp := fmt.Sprintf("spec.origins[0].jwt.triggerRules[%d]", i)
		op := &security.Operation{}
		for k, m := range tr.IncludedPaths {
			if s, ok := p.pathMatch(fmt.Sprintf("%s.includedPaths[%d]", tp, k), m); ok {
				op.Paths = append(op.Paths, s)
			}
		}
		for k, m := range tr.ExcludedPaths {
			if s, ok := p.pathMatch(fmt.Sprintf("%s.excludedPaths[%d]", tp, k), m); ok {
				op.NotPaths = append(op.NotPaths, s)
			}
		}
		if len(op.Paths)+len(op.NotPaths) == 0 {
			// A rule with no paths triggers everywhere, and so does the policy.
			return []*security.Rule{{From: from}}
		}
		rules = append(rules, &security.Rule{From: from, To: []*security.Rule_To{{Operation: op}}})
	}
	if len(rules) == 0 {
		return []*security.Rule{{From: from}}
	}
	return rules
}

func triggerRuleEqual(a, b TriggerRule) bool {
	return slices.EqualFunc(a.ExcludedPaths, b.ExcludedPaths, stringMatchEqual) &&
		slices.EqualFunc(a.IncludedPaths, b.IncludedPaths, stringMatchEqual)
}

func stringMatchEqual(a, b StringMatch) bool {
	eq := func(x, y *string) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return eq(a.Exact, b.Exact) && eq(a.Prefix, b.Prefix) && eq(a.Suffix, b.Suffix) && eq(a.Regex, b.Regex)
}

// pathMatch converts a trigger rule's StringMatch to an AuthorizationPolicy path value.
func (p *policyDoc) pathMatch(field string, m StringMatch) (string, bool) {
	n := 0
	for _, v := range []*string{m.Exact, m.Prefix, m.Suffix, m.Regex} {
		if v != nil {
			n++
		}
	}
	if n != 1 {
		p.errorf(field, "give exactly one of exact, prefix, suffix or regex")
		return "", false
	}
	literal := func(sub, s string) bool {
		if strings.ContainsAny(s, "*{}") {
			p.errorf(field+"."+sub, "refused: %q holds '*', '{' or '}', which Istio matched literally but an AuthorizationPolicy path reads as a wildcard or template", s)
			return false
		}
		return true
	}
	switch {
	case m.Regex != nil:
		p.errorf(field+".regex", "refused: an AuthorizationPolicy matches paths by exact value, prefix or suffix only, so regex %q cannot be converted without matching more or fewer paths; rewrite it as exact, prefix or suffix matches", *m.Regex)
	case m.Exact != nil:
		if *m.Exact == "" {
			p.errorf(field+".exact", "must not be empty")
		} else if literal("exact", *m.Exact) {
			return *m.Exact, true
		}
	case m.Prefix != nil:
		if literal("prefix", *m.Prefix) {
			return *m.Prefix + "*", true
		}
	case m.Suffix != nil:
		if literal("suffix", *m.Suffix) {
			return "*" + *m.Suffix, true
		}
	}
	return "", false
}

// checkOverrides refuses what the modern model would apply on top of a narrower policy.
// Istio 1.0 applied exactly one policy per workload, the narrowest (service, then
// namespace, then mesh), whole; modern RequestAuthentications and AuthorizationPolicies
// from the namespace and the mesh add up instead. A wider policy's origins would then
// also bind workloads a narrower Policy exempted. Two Policies naming one service
// leave Istio's choice arbitrary.
func checkOverrides(pols []*policyDoc) {
	targeted := map[string]*policyDoc{} // "ns/service" → first Policy naming it
	byNS := map[string][]*policyDoc{}
	for _, p := range pols {
		if p.meshWide() {
			continue
		}
		byNS[p.ns] = append(byNS[p.ns], p)
		for i, t := range p.spec.Targets {
			key := p.ns + "/" + t.Name
			if prev, dup := targeted[key]; dup && prev != p {
				p.errorf(fmt.Sprintf("spec.targets[%d].name", i), "refused: service %s is also a target of Policy %s (%s); Istio applied one of them, chosen arbitrarily, so there is no single meaning to convert; merge them", key, objectName(prev.ns, prev.name), prev.doc.Source)
				continue
			}
			targeted[key] = p
		}
	}
	for _, p := range pols {
		if len(p.spec.Origins) == 0 {
			continue
		}
		var narrower *policyDoc
		switch {
		case p.meshWide():
			for _, q := range pols {
				if !q.meshWide() {
					narrower = q
					break
				}
			}
		case p.namespaceWide():
			for _, q := range byNS[p.ns] {
				if q != p && !q.namespaceWide() {
					narrower = q
					break
				}
			}
		}
		if narrower != nil {
			p.errorf("spec.origins", "refused: Policy %s (%s) overrides this policy for its workloads in Istio 1.0, but the converted RequestAuthentication and AuthorizationPolicy would still apply to them and require this token there too; copy these origins into the narrower policies and remove them here, or merge the policies", objectName(narrower.ns, narrower.name), narrower.doc.Source)
		}
	}
}

// convert builds the modern objects: per scope (the namespace, the mesh, or each target
// service) a PeerAuthentication, and when there are origins a RequestAuthentication
// and a DENY AuthorizationPolicy.
func (p *policyDoc) convert(root string, services *serviceIndex) []*config.Object {
	ns := p.ns
	if p.meshWide() {
		ns = root
	}
	if len(p.spec.Targets) == 0 {
		return p.objects(ns, p.name, nil, nil, "")
	}
	var objs []*config.Object
	for i, t := range p.spec.Targets {
		tp := fmt.Sprintf("spec.targets[%d]", i)
		svc, reason := services.lookup(p.ns, t.Name)
		if reason != "" {
			p.errorf(tp+".name", "%s", reason)
			continue
		}
		var ports []uint32
		for j, ps := range t.Ports {
			port, reason := svc.workloadPort(ps)
			if reason != "" {
				p.errorf(fmt.Sprintf("%s.ports[%d]", tp, j), "%s", reason)
				continue
			}
			if !slices.Contains(ports, port) {
				ports = append(ports, port)
			}
		}
		if len(ports) > 0 && len(p.spec.Origins) > 0 {
			p.errorf(tp+".ports", "refused: origins limited to some ports cannot be converted: a RequestAuthentication applies to every port of a workload, so tokens would be checked on the other ports too; drop the ports or split the policy")
			continue
		}
		base := p.name
		if len(p.spec.Targets) > 1 {
			base = p.name + "-" + t.Name
		}
		objs = append(objs, p.objects(ns, base, svc.selector, ports, tp)...)
	}
	return objs
}

// objects builds one scope's objects named base in namespace ns; selector nil means
// the whole namespace, ports (workload ports) limit the peer authentication.
func (p *policyDoc) objects(ns, base string, selector map[string]string, ports []uint32, field string) []*config.Object {
	apName := base + "-require-jwt"
	if len(apName) > 253 {
		p.errorf(joinField(field, "name"), "the generated AuthorizationPolicy name %q is longer than 253 characters; shorten the policy name", apName)
		return nil
	}
	meta := func(name string) config.Meta {
		return config.Meta{Namespace: ns, Name: name, Source: p.doc.Source}
	}
	var sel *typev1beta1.WorkloadSelector
	if selector != nil {
		sel = &typev1beta1.WorkloadSelector{MatchLabels: selector}
	}
	pa := &security.PeerAuthentication{Selector: sel}
	if len(ports) == 0 {
		pa.Mtls = &security.PeerAuthentication_MutualTLS{Mode: p.mode}
	} else {
		// Other ports keep what the namespace or mesh says, as they did in Istio 1.0.
		pa.PortLevelMtls = map[uint32]*security.PeerAuthentication_MutualTLS{}
		for _, port := range ports {
			pa.PortLevelMtls[port] = &security.PeerAuthentication_MutualTLS{Mode: p.mode}
		}
	}
	objs := []*config.Object{{Kind: config.KindPeerAuthentication, Meta: meta(base), Spec: pa}}
	if len(p.jwtRules) == 0 {
		return objs
	}
	objs = append(objs, &config.Object{Kind: config.KindRequestAuthentication, Meta: meta(base),
		Spec: &security.RequestAuthentication{Selector: sel, JwtRules: p.jwtRules}})
	if p.deny != nil {
		objs = append(objs, &config.Object{Kind: config.KindAuthorizationPolicy, Meta: meta(apName),
			Spec: &security.AuthorizationPolicy{Selector: sel, Action: security.AuthorizationPolicy_DENY, Rules: p.deny}})
	}
	return objs
}
