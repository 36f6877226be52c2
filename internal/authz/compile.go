package authz

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	security "istio.io/api/security/v1beta1"

	"github.com/meshguard/meshguard/internal/config"
)

// DryRunAnnotation marks an AuthorizationPolicy to be evaluated and recorded, never
// enforced.
const DryRunAnnotation = "istio.io/dry-run"

// compiledPolicy is one AuthorizationPolicy ready to evaluate.
type compiledPolicy struct {
	key      string // namespace/name
	action   Action
	dryRun   bool
	provider string // CUSTOM
	rules    []compiledRule
}

// compiledRule is one spec.rules entry: any source AND any operation AND every condition.
type compiledRule struct {
	index   int
	from    [][]fieldMatcher // OR of sources; each source ANDs its fields; empty = any
	to      [][]fieldMatcher // OR of operations; empty = any
	when    []fieldMatcher   // AND
	hasHTTP bool             // uses an HTTP-only field anywhere
	reason  string           // precomputed: "denied by DENY policy ns/name rule 0"
}

// readsHeaders reports whether a rule of p has a request.headers field.
func (p *compiledPolicy) readsHeaders() bool {
	for i := range p.rules {
		rl := &p.rules[i]
		for _, fs := range append(append([][]fieldMatcher{rl.when}, rl.from...), rl.to...) {
			for j := range fs {
				if fs[j].attr == attrHeader {
					return true
				}
			}
		}
	}
	return false
}

// firstMatch returns the index (in p.rules) of the first rule that matches, or -1.
func (p *compiledPolicy) firstMatch(ec *evalCtx) int {
	for i := range p.rules {
		if p.rules[i].match(ec, p.action) {
			return i
		}
	}
	return -1
}

// match applies Istio's TCP rule: on a plain TCP connection an ALLOW rule that uses any
// HTTP-only field does not match at all, while for the other actions those fields are
// left out, which makes the rule match more (fail closed).
func (r *compiledRule) match(ec *evalCtx, action Action) bool {
	if ec.tcp && r.hasHTTP && action == ActionAllow {
		return false
	}
	if len(r.from) > 0 && !anyGroup(r.from, ec) {
		return false
	}
	if len(r.to) > 0 && !anyGroup(r.to, ec) {
		return false
	}
	return allMatch(r.when, ec)
}

func anyGroup(groups [][]fieldMatcher, ec *evalCtx) bool {
	for _, g := range groups {
		if allMatch(g, ec) {
			return true
		}
	}
	return false
}

func allMatch(ms []fieldMatcher, ec *evalCtx) bool {
	for i := range ms {
		if ec.tcp && ms[i].httpOnly() {
			continue
		}
		if !ms[i].match(ec) {
			return false
		}
	}
	return true
}

func compilePolicy(o *config.Object, tds trustDomains) (*compiledPolicy, error) {
	spec := o.AuthorizationPolicy()
	key := o.Key()
	if spec == nil {
		return nil, &CompileError{Policy: key, Field: "kind", Reason: fmt.Sprintf("is %s, want AuthorizationPolicy", o.Kind)}
	}
	p := &compiledPolicy{key: key}
	switch spec.GetAction() {
	case security.AuthorizationPolicy_ALLOW:
		p.action = ActionAllow
	case security.AuthorizationPolicy_DENY:
		p.action = ActionDeny
	case security.AuthorizationPolicy_AUDIT:
		p.action = ActionAudit
	case security.AuthorizationPolicy_CUSTOM:
		p.action = ActionCustom
		p.provider = spec.GetProvider().GetName()
		if p.provider == "" {
			return nil, &CompileError{Policy: key, Field: "spec.provider.name", Reason: "a CUSTOM policy needs an extension provider"}
		}
	default:
		return nil, &CompileError{Policy: key, Field: "spec.action", Reason: fmt.Sprintf("unknown action %v", spec.GetAction())}
	}
	if v, ok := o.Annotations[DryRunAnnotation]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, &CompileError{Policy: key, Field: "metadata.annotations[" + DryRunAnnotation + "]", Reason: fmt.Sprintf("%q is not a boolean", v)}
		}
		p.dryRun = b
	}
	for i, r := range spec.GetRules() {
		cr, err := compileRule(r, o.Namespace, fmt.Sprintf("spec.rules[%d]", i), tds)
		if err != nil {
			if ce, ok := errors.AsType[*CompileError](err); ok {
				ce.Policy = key
			}
			return nil, err
		}
		cr.index = i
		if p.action != ActionAllow {
			cr.widen()
		}
		verb := map[Action]string{ActionAllow: "allowed by", ActionDeny: "denied by", ActionAudit: "audited by", ActionCustom: "sent to the external authorizer by"}[p.action]
		cr.reason = fmt.Sprintf("%s %s policy %s rule %d", verb, p.action, key, i)
		p.rules = append(p.rules, cr)
	}
	return p, nil
}

func compileRule(r *security.Rule, policyNS, path string, tds trustDomains) (compiledRule, error) {
	var cr compiledRule
	for i, f := range r.GetFrom() {
		g, err := compileSource(f.GetSource(), policyNS, fmt.Sprintf("%s.from[%d].source", path, i), tds)
		if err != nil {
			return cr, err
		}
		cr.from = append(cr.from, g)
	}
	for i, t := range r.GetTo() {
		g, err := compileOperation(t.GetOperation(), fmt.Sprintf("%s.to[%d].operation", path, i))
		if err != nil {
			return cr, err
		}
		cr.to = append(cr.to, g)
	}
	for i, c := range r.GetWhen() {
		ms, err := compileCondition(c, policyNS, fmt.Sprintf("%s.when[%d]", path, i), tds)
		if err != nil {
			return cr, err
		}
		cr.when = append(cr.when, ms...)
	}
	for _, gs := range [][][]fieldMatcher{cr.from, cr.to, {cr.when}} {
		for _, g := range gs {
			for i := range g {
				cr.hasHTTP = cr.hasHTTP || g[i].httpOnly()
			}
		}
	}
	return cr, nil
}

// widen marks every matcher of the rule wide (see fieldMatcher.match).
func (r *compiledRule) widen() {
	for _, gs := range [][][]fieldMatcher{r.from, r.to, {r.when}} {
		for _, g := range gs {
			for i := range g {
				g[i].wide = true
			}
		}
	}
}

// pair compiles a positive and a negative list for one attribute into 0–2 matchers.
type pairFn func(values []string, field string) (fieldMatcher, error)

func pair(out *[]fieldMatcher, fn pairFn, pos, neg []string, field, notField string) error {
	if len(pos) > 0 {
		m, err := fn(pos, field)
		if err != nil {
			return err
		}
		*out = append(*out, m)
	}
	if len(neg) > 0 {
		m, err := fn(neg, notField)
		if err != nil {
			return err
		}
		m.not = true
		*out = append(*out, m)
	}
	return nil
}

func strs(a attr) pairFn {
	return func(vs []string, _ string) (fieldMatcher, error) {
		m := fieldMatcher{attr: a}
		for _, v := range vs {
			m.strs = append(m.strs, compileStr(v))
		}
		return m, nil
	}
}

// principals compiles principal values after trust-domain aliasing (expandPrincipals),
// for the principals fields and the source.principal condition alike, as Istio does.
func principals(tds trustDomains) pairFn {
	return func(vs []string, field string) (fieldMatcher, error) {
		return strs(attrPrincipal)(tds.expandPrincipals(vs), field)
	}
}

// sourceTrustDomains compiles trustDomains values, a trust domain of the set standing
// for all of them.
func sourceTrustDomains(tds trustDomains) pairFn {
	return func(vs []string, field string) (fieldMatcher, error) {
		return strs(attrTrustDomain)(tds.expandTrustDomains(vs), field)
	}
}

func cidrs(a attr) pairFn {
	return func(vs []string, field string) (fieldMatcher, error) {
		m := fieldMatcher{attr: a}
		for i, v := range vs {
			p, err := parseIPBlock(v)
			if err != nil {
				return m, &CompileError{Field: fmt.Sprintf("%s[%d]", field, i), Reason: err.Error()}
			}
			m.cidrs = append(m.cidrs, p)
		}
		return m, nil
	}
}

func parseIPBlock(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return p, fmt.Errorf("%q is not an IP address or CIDR block", v)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR block", v)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func ports(vs []string, field string) (fieldMatcher, error) {
	m := fieldMatcher{attr: attrDestPort}
	for i, v := range vs {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return m, &CompileError{Field: fmt.Sprintf("%s[%d]", field, i), Reason: fmt.Sprintf("%q is not a port number (1-65535)", v)}
		}
		m.ports = append(m.ports, uint32(n))
	}
	return m, nil
}

func paths(vs []string, field string) (fieldMatcher, error) {
	m := fieldMatcher{attr: attrPath}
	for i, v := range vs {
		if isPathTemplate(v) {
			re, why := compilePathTemplate(v)
			if re == nil {
				return m, &CompileError{Field: fmt.Sprintf("%s[%d]", field, i), Reason: fmt.Sprintf("%q: %s", v, why)}
			}
			m.paths = append(m.paths, pathMatch{tmpl: re})
			continue
		}
		m.paths = append(m.paths, pathMatch{str: compileStr(v)})
	}
	return m, nil
}

// requestPrincipals compiles "<iss>/<sub>" values as Istio does: split at the last "/"
// and matched against the token's iss and sub claims separately, so that a wildcard
// applies to one of them only ("https://issuer.example/*" is that exact issuer with any
// subject). A value without "/" is a prefix of the issuer ("iss*"), a suffix of the
// subject ("*sub"), or an exact issuer.
func requestPrincipals(vs []string, _ string) (fieldMatcher, error) {
	m := fieldMatcher{attr: attrRequestPrincipal}
	present := strMatch{kind: strPresence}
	for _, v := range vs {
		iss, sub, found := v, "", false
		if i := strings.LastIndexByte(v, '/'); i >= 0 {
			iss, sub, found = v[:i], v[i+1:], true
		}
		var rp principalMatch
		switch {
		case v == "*":
			rp = principalMatch{present, present}
		case strings.HasPrefix(v, "*") && found:
			rp = principalMatch{strMatch{kind: strSuffix, s: iss[1:]}, strMatch{kind: strExact, s: sub}}
			if iss == "*" {
				rp.iss = present
			}
		case strings.HasPrefix(v, "*"):
			rp = principalMatch{present, strMatch{kind: strSuffix, s: v[1:]}}
		case strings.HasSuffix(v, "*") && found:
			rp = principalMatch{strMatch{kind: strExact, s: iss}, strMatch{kind: strPrefix, s: strings.TrimSuffix(sub, "*")}}
			if sub == "*" {
				rp.sub = present
			}
		case strings.HasSuffix(v, "*"):
			rp = principalMatch{strMatch{kind: strPrefix, s: v[:len(v)-1]}, present}
		default:
			rp = principalMatch{strMatch{kind: strExact, s: iss}, strMatch{kind: strExact, s: sub}}
		}
		m.principals = append(m.principals, rp)
	}
	return m, nil
}

func serviceAccounts(policyNS string) pairFn {
	return func(vs []string, field string) (fieldMatcher, error) {
		m := fieldMatcher{attr: attrServiceAccount}
		for i, v := range vs {
			ns, sa, ok := strings.Cut(v, "/")
			if !ok {
				ns, sa = policyNS, v
			}
			if ns == "" || sa == "" || strings.Contains(v, "*") || strings.Contains(sa, "/") {
				return m, &CompileError{Field: fmt.Sprintf("%s[%d]", field, i), Reason: fmt.Sprintf("%q: want <namespace>/<serviceaccount> or <serviceaccount>, no wildcards", v)}
			}
			m.sas = append(m.sas, saMatch{ns: ns, sa: sa})
		}
		return m, nil
	}
}

func compileSource(s *security.Source, policyNS, path string, tds trustDomains) ([]fieldMatcher, error) {
	var out []fieldMatcher
	steps := []struct {
		fn       pairFn
		pos, neg []string
		name     string
	}{
		{principals(tds), s.GetPrincipals(), s.GetNotPrincipals(), "principals"},
		{requestPrincipals, s.GetRequestPrincipals(), s.GetNotRequestPrincipals(), "requestPrincipals"},
		{strs(attrNamespace), s.GetNamespaces(), s.GetNotNamespaces(), "namespaces"},
		{serviceAccounts(policyNS), s.GetServiceAccounts(), s.GetNotServiceAccounts(), "serviceAccounts"},
		{cidrs(attrSourceIP), s.GetIpBlocks(), s.GetNotIpBlocks(), "ipBlocks"},
		{cidrs(attrRemoteIP), s.GetRemoteIpBlocks(), s.GetNotRemoteIpBlocks(), "remoteIpBlocks"},
		{sourceTrustDomains(tds), s.GetTrustDomains(), s.GetNotTrustDomains(), "trustDomains"},
	}
	for _, st := range steps {
		not := "not" + strings.ToUpper(st.name[:1]) + st.name[1:]
		if err := pair(&out, st.fn, st.pos, st.neg, path+"."+st.name, path+"."+not); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func compileOperation(o *security.Operation, path string) ([]fieldMatcher, error) {
	var out []fieldMatcher
	steps := []struct {
		fn       pairFn
		pos, neg []string
		name     string
	}{
		{strs(attrHost), o.GetHosts(), o.GetNotHosts(), "hosts"},
		{ports, o.GetPorts(), o.GetNotPorts(), "ports"},
		{strs(attrMethod), o.GetMethods(), o.GetNotMethods(), "methods"},
		{paths, o.GetPaths(), o.GetNotPaths(), "paths"},
	}
	for _, st := range steps {
		not := "not" + strings.ToUpper(st.name[:1]) + st.name[1:]
		if err := pair(&out, st.fn, st.pos, st.neg, path+"."+st.name, path+"."+not); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// compileCondition maps a `when` key to its attribute. The keys are Istio's
// (reference: Authorization Policy Conditions).
func compileCondition(c *security.Condition, policyNS, path string, tds trustDomains) ([]fieldMatcher, error) {
	key := c.GetKey()
	var fn pairFn
	switch {
	case key == "source.ip":
		fn = cidrs(attrSourceIP)
	case key == "remote.ip":
		fn = cidrs(attrRemoteIP)
	case key == "destination.ip":
		fn = cidrs(attrDestIP)
	case key == "destination.port":
		fn = ports
	case key == "source.namespace":
		fn = strs(attrNamespace)
	case key == "source.principal":
		fn = principals(tds)
	case key == "source.serviceAccount":
		fn = serviceAccounts(policyNS)
	case key == "connection.sni":
		fn = strs(attrSNI)
	case key == "request.auth.principal":
		fn = requestPrincipals
	case key == "request.auth.audiences":
		fn = strs(attrAudiences)
	case key == "request.auth.presenter":
		fn = strs(attrPresenter)
	case strings.HasPrefix(key, "request.headers["):
		name, ok := bracketed(strings.TrimPrefix(key, "request.headers"))
		if !ok || len(name) != 1 || name[0] == "" {
			return nil, &CompileError{Field: path + ".key", Reason: fmt.Sprintf("%q: want request.headers[<name>]", key)}
		}
		fn = func(vs []string, f string) (fieldMatcher, error) {
			m, err := strs(attrHeader)(vs, f)
			m.name = name[0]
			return m, err
		}
	case strings.HasPrefix(key, "request.auth.claims["):
		claim, ok := bracketed(strings.TrimPrefix(key, "request.auth.claims"))
		if !ok {
			return nil, &CompileError{Field: path + ".key", Reason: fmt.Sprintf("%q: want request.auth.claims[<name>] or nested request.auth.claims[<a>][<b>]", key)}
		}
		fn = func(vs []string, f string) (fieldMatcher, error) {
			m, err := strs(attrClaim)(vs, f)
			m.claim = claim
			return m, err
		}
	default:
		return nil, &CompileError{Field: path + ".key", Reason: fmt.Sprintf("unsupported condition key %q", key)}
	}
	if len(c.GetValues()) == 0 && len(c.GetNotValues()) == 0 {
		return nil, &CompileError{Field: path, Reason: "at least one of values or notValues must be set"}
	}
	var out []fieldMatcher
	if err := pair(&out, fn, c.GetValues(), c.GetNotValues(), path+".values", path+".notValues"); err != nil {
		return nil, err
	}
	return out, nil
}

// bracketed parses "[a][b]…" into its non-empty parts.
func bracketed(s string) ([]string, bool) {
	var parts []string
	for s != "" {
		if s[0] != '[' {
			return nil, false
		}
		end := strings.IndexByte(s, ']')
		if end < 2 {
			return nil, false
		}
		parts = append(parts, s[1:end])
		s = s[end+1:]
	}
	return parts, len(parts) > 0
}
