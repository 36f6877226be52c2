package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/durationpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	security "istio.io/api/security/v1beta1"
)

func (v *validator) authorizationPolicy(ap *security.AuthorizationPolicy) {
	v.oneOfSelector(ap.Selector, ap.TargetRef, ap.TargetRefs)
	if len(ap.Rules) > 512 {
		v.errorf("spec.rules", "at most 512 rules allowed, got %d", len(ap.Rules))
	}
	noRules := "%s action without rules is meaningless as it will never be triggered; add an empty rule {} to trigger it for every request"
	switch ap.Action {
	case security.AuthorizationPolicy_CUSTOM:
		if len(ap.Rules) == 0 {
			v.errorf("spec.rules", noRules, ap.Action)
		}
		v.customProvider(ap.GetProvider())
		for i, rule := range ap.Rules {
			v.customRule(idx("spec.rules", i), rule)
		}
	case security.AuthorizationPolicy_DENY, security.AuthorizationPolicy_AUDIT:
		// Istio's webhook rejects this for DENY; for AUDIT it accepts a policy that can
		// never match, which meshguard rejects too rather than let an audit silently
		// record nothing.
		if len(ap.Rules) == 0 {
			v.errorf("spec.rules", noRules, ap.Action)
		}
	}
	if ap.GetProvider() != nil && ap.Action != security.AuthorizationPolicy_CUSTOM {
		v.errorf("spec.provider", "must only be set with action CUSTOM, found action %s", ap.Action)
	}
	for i, rule := range ap.Rules {
		v.rule(idx("spec.rules", i), rule, ap.Action)
	}
}

// customProvider checks that a CUSTOM policy names an external authorizer that the
// mesh config defines: an unknown provider would otherwise deny (Istio) or be ignored.
func (v *validator) customProvider(p *security.AuthorizationPolicy_ExtensionProvider) {
	name := p.GetName()
	if name == "" {
		v.errorf("spec.provider.name", "must be set for action CUSTOM")
		return
	}
	var defined []string
	for _, e := range v.mesh.GetExtensionProviders() {
		if e.Name != name {
			defined = append(defined, e.Name)
			continue
		}
		switch e.Provider.(type) {
		case *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExtAuthzHttp, *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExtAuthzGrpc:
			return
		}
		v.errorf("spec.provider.name", "extension provider %q is not an external authorizer (envoyExtAuthzHttp or envoyExtAuthzGrpc)", name)
		return
	}
	v.errorf("spec.provider.name", "extension provider %q is not defined in meshConfig.extensionProviders (defined: %s)", name, strings.Join(defined, ", "))
}

// customRule reports the fields Istio does not support with CUSTOM: the external
// authorizer runs before peer and JWT identities are checked.
func (v *validator) customRule(path string, rule *security.Rule) {
	for j, from := range rule.GetFrom() {
		src := from.GetSource()
		if src == nil {
			continue
		}
		sp := idx(path+".from", j) + ".source"
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"namespaces", len(src.Namespaces) > 0}, {"notNamespaces", len(src.NotNamespaces) > 0},
			{"serviceAccounts", len(src.ServiceAccounts) > 0}, {"notServiceAccounts", len(src.NotServiceAccounts) > 0},
			{"principals", len(src.Principals) > 0}, {"notPrincipals", len(src.NotPrincipals) > 0},
			{"requestPrincipals", len(src.RequestPrincipals) > 0}, {"notRequestPrincipals", len(src.NotRequestPrincipals) > 0},
		} {
			if f.set {
				v.errorf(sp+"."+f.name, "not supported with action CUSTOM")
			}
		}
	}
	for j, c := range rule.GetWhen() {
		k := c.GetKey()
		if k == "source.namespace" || k == "source.serviceAccount" || k == "source.principal" || strings.HasPrefix(k, "request.auth.") {
			v.errorf(idx(path+".when", j)+".key", "%s is not supported with action CUSTOM", k)
		}
	}
}

func (v *validator) rule(path string, rule *security.Rule, action security.AuthorizationPolicy_Action) {
	v.givenEmpty(path+".from", "list at least one source or remove from")
	v.givenEmpty(path+".to", "list at least one operation or remove to")
	v.givenEmpty(path+".when", "list at least one condition or remove when")
	if len(rule.From) > 512 {
		v.errorf(path+".from", "at most 512 entries allowed, got %d", len(rule.From))
	}
	var fromHTTPOnly, fromTCP, toHTTPOnly, toTCP bool
	for j, from := range rule.From {
		fp := idx(path+".from", j)
		if from.Source == nil {
			v.errorf(fp+".source", "must be set")
			continue
		}
		if v.source(fp+".source", from.Source) {
			fromTCP = true
		} else {
			fromHTTPOnly = true
		}
	}
	for j, to := range rule.To {
		tp := idx(path+".to", j)
		if to.Operation == nil {
			v.errorf(tp+".operation", "must be set")
			continue
		}
		if v.operation(tp+".operation", to.Operation) {
			toTCP = true
		} else {
			toHTTPOnly = true
		}
	}
	for j, c := range rule.When {
		v.condition(idx(path+".when", j), c)
	}
	// A DENY rule that only uses HTTP attributes matches every TCP connection (it fails
	// closed), which is rarely what was meant; Istio warns about it too.
	if action == security.AuthorizationPolicy_DENY && (fromHTTPOnly && !fromTCP && !toTCP || toHTTPOnly && !toTCP) {
		v.warnf(path, "this DENY rule uses only HTTP attributes, so it denies all TCP traffic to ports under its scope; specify the ports explicitly")
	}
}

// source validates a Source and reports whether it uses a field that applies to TCP.
func (v *validator) source(path string, s *security.Source) (tcp bool) {
	if len(s.ServiceAccounts)+len(s.NotServiceAccounts) > 0 && len(s.Principals)+len(s.NotPrincipals)+len(s.Namespaces)+len(s.NotNamespaces) > 0 {
		v.errorf(path+".serviceAccounts", "cannot set serviceAccounts with namespaces or principals")
	}
	lists := []struct {
		name     string
		vals     []string
		wildcard bool
		ip       bool
		tcp      bool
	}{
		{"principals", s.Principals, true, false, true},
		{"notPrincipals", s.NotPrincipals, true, false, true},
		{"requestPrincipals", s.RequestPrincipals, true, false, false},
		{"notRequestPrincipals", s.NotRequestPrincipals, true, false, false},
		{"namespaces", s.Namespaces, true, false, true},
		{"notNamespaces", s.NotNamespaces, true, false, true},
		{"serviceAccounts", s.ServiceAccounts, false, false, true},
		{"notServiceAccounts", s.NotServiceAccounts, false, false, true},
		{"ipBlocks", s.IpBlocks, false, true, true},
		{"notIpBlocks", s.NotIpBlocks, false, true, true},
		{"remoteIpBlocks", s.RemoteIpBlocks, false, true, true},
		{"notRemoteIpBlocks", s.NotRemoteIpBlocks, false, true, true},
		{"trustDomains", s.TrustDomains, true, false, true},
		{"notTrustDomains", s.NotTrustDomains, true, false, true},
	}
	given := false
	for _, l := range lists {
		p := path + "." + l.name
		v.checkValues(p, l.vals, l.wildcard)
		if l.ip {
			v.checkIPs(p, l.vals)
		}
		given = given || len(l.vals) > 0
		tcp = tcp || l.tcp && len(l.vals) > 0
	}
	for _, sa := range []struct {
		name string
		vals []string
	}{{"serviceAccounts", s.ServiceAccounts}, {"notServiceAccounts", s.NotServiceAccounts}} {
		if len(sa.vals) > 16 {
			v.errorf(path+"."+sa.name, "at most 16 entries allowed, got %d", len(sa.vals))
		}
		for i, a := range sa.vals {
			v.serviceAccount(idx(path+"."+sa.name, i), a)
		}
	}
	if !given {
		v.errorf(path, "must not be empty: set at least one field")
	}
	return tcp
}

// serviceAccount checks the "<namespace>/<serviceaccount>" or "<serviceaccount>" form.
func (v *validator) serviceAccount(path, a string) {
	if a == "" {
		return
	}
	if len(a) > 320 {
		v.errorf(path, "longer than 320 characters")
	}
	if strings.Contains(a, "*") {
		v.errorf(path, "%q: wildcards are not allowed in service accounts", a)
		return
	}
	parts := strings.Split(a, "/")
	if len(parts) > 2 {
		v.errorf(path, "%q: want <namespace>/<serviceaccount> or <serviceaccount>", a)
		return
	}
	for _, p := range parts {
		if !isDNS1123Subdomain(p) {
			v.errorf(path, "%q: want <namespace>/<serviceaccount> or <serviceaccount> with valid Kubernetes names", a)
			return
		}
	}
}

// knownMethods are the HTTP methods of RFC 9110 and RFC 5789 (PATCH).
var knownMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// operation validates an Operation and reports whether it uses a field that applies to
// TCP (ports).
func (v *validator) operation(path string, o *security.Operation) (tcp bool) {
	if len(o.Hosts)+len(o.NotHosts)+len(o.Ports)+len(o.NotPorts)+len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths) == 0 {
		v.errorf(path, "must not be empty: set at least one field")
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"hosts", o.Hosts}, {"notHosts", o.NotHosts}} {
		v.checkValues(path+"."+l.name, l.vals, true)
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"ports", o.Ports}, {"notPorts", o.NotPorts}} {
		v.checkValues(path+"."+l.name, l.vals, false)
		v.checkPorts(path+"."+l.name, l.vals)
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"methods", o.Methods}, {"notMethods", o.NotMethods}} {
		p := path + "." + l.name
		v.checkValues(p, l.vals, true)
		for i, m := range l.vals {
			v.method(idx(p, i), m)
		}
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"paths", o.Paths}, {"notPaths", o.NotPaths}} {
		p := path + "." + l.name
		v.givenEmpty(p, "an empty list matches nothing and is rejected; remove the field to match anything")
		for i, s := range l.vals {
			v.path(idx(p, i), s)
		}
	}
	return len(o.Ports)+len(o.NotPorts) > 0
}

// method warns about methods no request can carry. Istio accepts any string here (a
// gRPC method is always POST), so this is a warning, not an error.
func (v *validator) method(path, m string) {
	if m == "" || m == "*" {
		return
	}
	if strings.ToUpper(m) != m {
		v.warnf(path, "%q: methods are matched case-sensitively and requests with lower-case methods are rejected; use %q", m, strings.ToUpper(m))
		return
	}
	core := strings.Trim(m, "*")
	for _, k := range knownMethods {
		if k == m || strings.HasPrefix(m, "*") && strings.HasSuffix(k, core) || strings.HasSuffix(m, "*") && strings.HasPrefix(k, core) {
			return
		}
	}
	v.warnf(path, "%q is not a standard HTTP method (%s)", m, strings.Join(knownMethods, ", "))
}

// path checks a path match value: exact, prefix ("/api/*"), suffix ("*.html"),
// presence ("*"), or an Envoy URI template with {*} and {**}, which Istio's reference
// describes: no '*', '{' or '}' outside an operator, an operator alone in its segment,
// and {**} the last operator.
func (v *validator) path(p, s string) {
	if s == "" {
		v.errorf(p, "empty value not allowed")
		return
	}
	if !strings.Contains(s, "{*}") && !strings.Contains(s, "{**}") {
		if strings.ContainsAny(s, "{}") {
			v.errorf(p, "%q: invalid or unsupported path template; only {*} and {**} are supported", s)
			return
		}
		if n := strings.Count(s, "*"); n > 1 || n == 1 && len(s) > 1 && !strings.HasPrefix(s, "*") && !strings.HasSuffix(s, "*") {
			v.errorf(p, "%q: '*' is only allowed alone, as a prefix or as a suffix (or use the {*} and {**} templates)", s)
		} else if s != "*" && !strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "*") {
			v.warnf(p, "%q does not start with '/' and will never match a request path", s)
		}
		return
	}
	if !strings.HasPrefix(s, "/") {
		v.errorf(p, "%q: a path template must start with '/'", s)
		return
	}
	sawAny := false
	for _, seg := range strings.Split(s[1:], "/") {
		switch {
		case seg == "{*}" || seg == "{**}":
			if sawAny {
				v.errorf(p, "%q: {**} must be the last operator in a path template", s)
				return
			}
			sawAny = seg == "{**}"
		case strings.ContainsAny(seg, "*{}"):
			v.errorf(p, "%q: invalid path template segment %q: an operator must be {*} or {**} alone in its segment, and '*' is not allowed outside an operator", s, seg)
			return
		}
	}
}

// attribute keys a condition may use, as Istio's "Authorization Policy Conditions"
// reference lists them.
const (
	attrRequestHeader = "request.headers"
	attrRequestClaims = "request.auth.claims"
	attrExperimental  = "experimental.envoy.filters."

	// dryRunAnnotation marks an AuthorizationPolicy as evaluated but not enforced.
	dryRunAnnotation = "istio.io/dry-run"
)

// dryRunAnnotation applies the webhook's rule for istio.io/dry-run: only
// AuthorizationPolicies with action ALLOW or DENY may carry it, and its value is a
// boolean. The authorization engine refuses anything else, so it must not validate.
func (v *validator) dryRunAnnotation(o *Object) {
	val, ok := o.Annotations[dryRunAnnotation]
	if !ok {
		return
	}
	field := "metadata.annotations[" + dryRunAnnotation + "]"
	ap := o.AuthorizationPolicy()
	switch {
	case ap == nil:
		v.errorf(field, "not supported on %s, only on AuthorizationPolicy; remove the annotation", o.Kind)
	case ap.Action != security.AuthorizationPolicy_ALLOW && ap.Action != security.AuthorizationPolicy_DENY:
		v.errorf(field, "dry run is only supported for action ALLOW or DENY, found action %s", ap.Action)
	default:
		if _, err := strconv.ParseBool(val); err != nil {
			v.errorf(field, "%q is not a boolean: want \"true\" or \"false\"", val)
		}
	}
}

func (v *validator) condition(path string, c *security.Condition) {
	key := c.GetKey()
	if key == "" {
		v.errorf(path+".key", "must not be empty")
		return
	}
	v.givenEmpty(path+".values", "remove it or list values")
	v.givenEmpty(path+".notValues", "remove it or list values")
	if len(c.Values) == 0 && len(c.NotValues) == 0 {
		v.errorf(path, "at least one of values or notValues must be set for key %s", key)
		return
	}
	if reason := checkAttributeKey(key); reason != "" {
		v.errorf(path+".key", "%s", reason)
		return
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"values", c.Values}, {"notValues", c.NotValues}} {
		p := path + "." + l.name
		switch key {
		case "source.ip", "remote.ip", "destination.ip":
			v.checkValues(p, l.vals, false)
			v.checkIPs(p, l.vals)
		case "destination.port":
			v.checkValues(p, l.vals, false)
			v.checkPorts(p, l.vals)
		case "source.serviceAccount":
			v.checkValues(p, l.vals, false)
			for i, a := range l.vals {
				v.serviceAccount(idx(p, i), a)
			}
		default:
			v.checkValues(p, l.vals, true)
		}
	}
}

// checkAttributeKey returns why key is not a supported condition key, or "".
func checkAttributeKey(key string) string {
	switch key {
	case "source.ip", "remote.ip", "source.namespace", "source.principal", "source.serviceAccount",
		"request.auth.principal", "request.auth.audiences", "request.auth.presenter",
		"destination.ip", "destination.port", "connection.sni":
		return ""
	case "destination.namespace":
		return "attribute destination.namespace is replaced by the policy's metadata.namespace"
	case "destination.name", "destination.user":
		return fmt.Sprintf("deprecated attribute %s: only supported in v1alpha1", key)
	}
	switch {
	case strings.HasPrefix(key, attrExperimental):
		// Istio's webhook accepts these; they read Envoy filter metadata, which a
		// meshguard proxy does not produce, so a rule using one could never be enforced
		// as written. Rejected rather than silently never (or always) matching.
		return fmt.Sprintf("attribute %s reads Envoy filter metadata, which meshguard does not have; it cannot be enforced", key)
	case strings.HasPrefix(key, attrRequestHeader), strings.HasPrefix(key, attrRequestClaims):
		// a[b]: one bracketed, non-empty name; claims may nest as a[b][c].
		open := strings.Index(key, "[")
		if !strings.HasSuffix(key, "]") || open <= 0 || open >= len(key)-2 {
			return fmt.Sprintf("bad key %q: should have the format %s[name]", key, key[:max(open, 0)])
		}
		if prefix := key[:open]; prefix != attrRequestHeader && prefix != attrRequestClaims {
			return fmt.Sprintf("unknown attribute: %s", key)
		}
		return ""
	case strings.HasPrefix(key, "destination.labels"):
		return fmt.Sprintf("attribute %s is replaced by the workload selector", key)
	}
	return fmt.Sprintf("unknown attribute: %s", key)
}

func (v *validator) peerAuthentication(pa *security.PeerAuthentication) {
	v.workloadSelector("spec.selector", pa.Selector)
	if v.empty["spec.portLevelMtls"] {
		v.errorf("spec.portLevelMtls", "if given, must have at least one port")
	}
	if len(pa.PortLevelMtls) > 0 && len(pa.GetSelector().GetMatchLabels()) == 0 {
		v.errorf("spec.portLevelMtls", "portLevelMtls requires a workload selector: mesh- and namespace-wide peer authentication cannot have port-level mTLS")
	}
	for _, port := range sortedUint32Keys(pa.PortLevelMtls) {
		if !portInRange(port) {
			v.errorf(fmt.Sprintf("spec.portLevelMtls[%d]", port), "port must be in the range 1-65535")
		}
	}
}

// httpHeaderName is the token syntax of RFC 9110 that Istio checks header names with.
var httpHeaderName = regexp.MustCompile("^[a-zA-Z0-9!#$%&'*+.^_`|~-]+$")

func (v *validator) requestAuthentication(ra *security.RequestAuthentication) {
	v.oneOfSelector(ra.Selector, ra.TargetRef, ra.TargetRefs)
	if len(ra.JwtRules) > 4096 {
		v.errorf("spec.jwtRules", "at most 4096 rules allowed, got %d", len(ra.JwtRules))
	}
	issuers := map[string]int{}
	for i, rule := range ra.JwtRules {
		p := idx("spec.jwtRules", i)
		v.jwtRule(p, rule)
		if prev, dup := issuers[rule.Issuer]; dup && rule.Issuer != "" {
			v.warnf(p+".issuer", "issuer %q is also used by spec.jwtRules[%d]; Istio uses only one rule per issuer", rule.Issuer, prev)
		} else {
			issuers[rule.Issuer] = i
		}
	}
}

func (v *validator) jwtRule(p string, rule *security.JWTRule) {
	if rule.Issuer == "" {
		v.errorf(p+".issuer", "must be set: a JWT rule needs the issuer (iss claim) it accepts")
	}
	for i, a := range rule.Audiences {
		if a == "" {
			v.errorf(idx(p+".audiences", i), "audience must be a non-empty string")
		}
	}
	if rule.JwksUri != "" && rule.Jwks != "" {
		v.errorf(p+".jwks", "only one of jwks or jwksUri may be set")
	}
	if rule.JwksUri != "" {
		if reason := checkJwksURI(rule.JwksUri); reason != "" {
			v.errorf(p+".jwksUri", "%q: %s", rule.JwksUri, reason)
		}
	}
	if rule.Jwks != "" {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal([]byte(rule.Jwks), &set); err != nil {
			v.errorf(p+".jwks", "jwks parse error: %v", err)
		} else if len(set.Keys) == 0 {
			v.errorf(p+".jwks", "jwks holds no keys")
		}
	}
	for i, h := range rule.FromHeaders {
		hp := idx(p+".fromHeaders", i)
		if h.Name == "" {
			v.errorf(hp+".name", "header name must be a non-empty string")
		} else if !httpHeaderName.MatchString(h.Name) {
			v.errorf(hp+".name", "%q is not a valid HTTP header name", h.Name)
		}
	}
	for i, q := range rule.FromParams {
		if q == "" {
			v.errorf(idx(p+".fromParams", i), "query parameter name must be a non-empty string")
		}
	}
	for i, c := range rule.FromCookies {
		if c == "" {
			v.errorf(idx(p+".fromCookies", i), "cookie name must be a non-empty string")
		}
	}
	if h := rule.OutputPayloadToHeader; h != "" && !httpHeaderName.MatchString(h) {
		v.errorf(p+".outputPayloadToHeader", "%q is not a valid HTTP header name", h)
	}
	for i, ch := range rule.OutputClaimToHeaders {
		cp := idx(p+".outputClaimToHeaders", i)
		if ch.Claim == "" || ch.Header == "" {
			v.errorf(cp, "header and claim must both be non-empty strings")
			continue
		}
		if !httpHeaderName.MatchString(ch.Header) || strings.HasPrefix(ch.Header, ":") {
			v.errorf(cp+".header", "%q is not a valid HTTP header name", ch.Header)
		}
	}
	if rule.Timeout != nil {
		v.duration(p+".timeout", rule.Timeout)
	}
	if len(rule.SpaceDelimitedClaims) > 64 {
		v.errorf(p+".spaceDelimitedClaims", "at most 64 entries allowed, got %d", len(rule.SpaceDelimitedClaims))
	}
	v.checkValues(p+".spaceDelimitedClaims", rule.SpaceDelimitedClaims, false)
}

// checkJwksURI applies Istio's rules: an http or https URL with a host, at most 2048
// characters.
func checkJwksURI(s string) string {
	if len(s) > 2048 {
		return "longer than 2048 characters"
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("not a valid URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "url must have scheme http:// or https://"
	}
	if u.Hostname() == "" {
		return "url has no host"
	}
	if port := u.Port(); port != "" {
		var n int
		if _, err := fmt.Sscanf(port, "%d", &n); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("bad port %q", port)
		}
	}
	return ""
}

// duration applies Istio's ValidateDuration: at least 1ms, to millisecond precision.
func (v *validator) duration(p string, d *durationpb.Duration) {
	if err := d.CheckValid(); err != nil {
		v.errorf(p, "invalid duration: %v", err)
		return
	}
	dur := d.AsDuration()
	switch {
	case dur.Milliseconds() < 1:
		v.errorf(p, "duration must be at least 1ms, got %s", dur)
	case dur%1e6 != 0:
		v.errorf(p, "only durations to millisecond precision are supported, got %s", dur)
	}
}

func sortedUint32Keys[V any](m map[uint32]V) []uint32 {
	keys := make([]uint32, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
