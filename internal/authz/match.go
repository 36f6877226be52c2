package authz

import (
	"net/netip"
	"regexp"
	"strings"
)

// strMatch is Istio's string match: exact "abc", prefix "abc*", suffix "*abc", and
// presence "*" (any non-empty value).
type strMatch struct {
	kind strKind
	s    string
}

type strKind uint8

const (
	strExact strKind = iota
	strPrefix
	strSuffix
	strPresence
)

func compileStr(v string) strMatch {
	switch {
	case v == "*":
		return strMatch{kind: strPresence}
	case strings.HasSuffix(v, "*"):
		return strMatch{kind: strPrefix, s: v[:len(v)-1]}
	case strings.HasPrefix(v, "*"):
		return strMatch{kind: strSuffix, s: v[1:]}
	}
	return strMatch{kind: strExact, s: v}
}

func (m strMatch) match(v string) bool {
	switch m.kind {
	case strPresence:
		return v != ""
	case strPrefix:
		return strings.HasPrefix(v, m.s)
	case strSuffix:
		return strings.HasSuffix(v, m.s)
	}
	return v == m.s
}

// matchFold is match without regard to ASCII case (hosts, header names).
func (m strMatch) matchFold(v string) bool {
	switch m.kind {
	case strPresence:
		return v != ""
	case strPrefix:
		return len(v) >= len(m.s) && strings.EqualFold(v[:len(m.s)], m.s)
	case strSuffix:
		return len(v) >= len(m.s) && strings.EqualFold(v[len(v)-len(m.s):], m.s)
	}
	return strings.EqualFold(v, m.s)
}

// pathMatch is a string match or, when the value uses {*} or {**}, a compiled template.
type pathMatch struct {
	str  strMatch
	tmpl *regexp.Regexp
}

func (m pathMatch) match(p string) bool {
	if m.tmpl != nil {
		return m.tmpl.MatchString(p)
	}
	return m.str.match(p)
}

// isPathTemplate reports whether v uses Istio's {*} / {**} operators.
func isPathTemplate(v string) bool {
	return strings.Contains(v, "{*}") || strings.Contains(v, "{**}")
}

// compilePathTemplate turns an Istio path template into an anchored regexp:
// {*} is one whole, non-empty path segment; {**} is zero or more characters, slashes
// included, and must be the last operator; when it is, the literal text after it must
// follow it somewhere ("/foo/{**}/" matches "/foo/bar/baz.txt" and "/foo//" but not
// "/foo/bar", as Istio's reference shows). Wildcards or braces elsewhere, and other text
// in a segment that holds an operator, are errors.
func compilePathTemplate(v string) (*regexp.Regexp, string) {
	if !strings.HasPrefix(v, "/") {
		return nil, "a path template must start with /"
	}
	segs := strings.Split(v[1:], "/")
	var b strings.Builder
	b.WriteString("^")
	seenDouble := false
	for i, s := range segs {
		b.WriteString("/")
		switch s {
		case "{*}":
			if seenDouble {
				return nil, "{**} must be the last operator in a path template"
			}
			b.WriteString("[^/]+")
		case "{**}":
			if seenDouble {
				return nil, "{**} must be the last operator in a path template"
			}
			seenDouble = true
			b.WriteString(".*")
			if rest := segs[i+1:]; len(rest) > 0 {
				lit := "/" + strings.Join(rest, "/")
				if strings.ContainsAny(lit, "*{}") {
					return nil, "{**} must be the last operator in a path template"
				}
				b.WriteString(regexp.QuoteMeta(lit))
				b.WriteString(".*")
			}
			b.WriteString("$")
			return regexp.MustCompile(b.String()), ""
		default:
			if strings.ContainsAny(s, "*{}") {
				return nil, "a path template segment must be exactly {*} or {**}, with no other * { or } in the path"
			}
			b.WriteString(regexp.QuoteMeta(s))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String()), ""
}

// attr names the request attribute a matcher reads. Attributes from attrRequestPrincipal
// on are HTTP-only: they do not exist on a plain TCP connection.
type attr uint8

const (
	attrPrincipal attr = iota
	attrNamespace
	attrServiceAccount
	attrTrustDomain
	attrSourceIP
	attrRemoteIP
	attrDestIP
	attrDestPort
	attrSNI

	attrRequestPrincipal
	attrHost
	attrMethod
	attrPath
	attrHeader
	attrAudiences
	attrPresenter
	attrClaim
)

// fieldMatcher matches one field (or one condition) against the request: true when any
// value matches, inverted for the not* form.
type fieldMatcher struct {
	attr       attr
	not        bool
	strs       []strMatch
	cidrs      []netip.Prefix
	ports      []uint32
	paths      []pathMatch
	sas        []saMatch
	principals []principalMatch
	name       string // header name for attrHeader
	// wide is set for the matchers of DENY, AUDIT and CUSTOM policies: see match.
	wide  bool
	claim []string // claim path for attrClaim
}

type saMatch struct{ ns, sa string }

// principalMatch is one requestPrincipals value: its issuer and subject parts.
type principalMatch struct{ iss, sub strMatch }

func (f *fieldMatcher) httpOnly() bool { return f.attr >= attrRequestPrincipal }

// match reports whether the field (or condition) holds for the request, not* form
// applied. Two attributes can be read more than one way: the authority with or without
// its port, and a repeated header as its comma-joined value (Envoy's reading) or as one of
// its lines. ALLOW rules use exactly Istio's reading — the authority as sent, the joined
// header — so they never allow more than Istio would. Rules of the other actions (wide)
// also match when any other reading makes the field hold, not* form included, so a DENY
// cannot be dodged by adding a port or repeating a header (fail closed).
func (f *fieldMatcher) match(ec *evalCtx) bool {
	switch f.attr {
	case attrHost:
		if f.anyFold(ec.host) != f.not {
			return true
		}
		return f.wide && ec.hostNoPort != ec.host && f.anyFold(ec.hostNoPort) != f.not
	case attrHeader:
		return f.matchHeader(ec.r)
	}
	return f.matchAny(ec) != f.not
}

func (f *fieldMatcher) matchAny(ec *evalCtx) bool {
	switch f.attr {
	case attrPrincipal:
		return f.anyStr(ec.principal)
	case attrNamespace:
		return f.anyStr(ec.namespace)
	case attrTrustDomain:
		return f.anyStr(ec.trustDomain)
	case attrServiceAccount:
		for _, m := range f.sas {
			if ec.sa != "" && m.ns == ec.namespace && m.sa == ec.sa {
				return true
			}
		}
		return false
	case attrSourceIP:
		return f.anyIP(ec.r.SourceIP)
	case attrRemoteIP:
		return f.anyIP(ec.remoteIP)
	case attrDestIP:
		return f.anyIP(ec.r.DestinationIP)
	case attrDestPort:
		for _, p := range f.ports {
			if p == ec.r.DestinationPort {
				return true
			}
		}
		return false
	case attrSNI:
		return f.anyStr(ec.r.SNI)
	case attrRequestPrincipal:
		if !ec.authenticated {
			return false
		}
		for _, m := range f.principals {
			if m.iss.match(ec.iss) && m.sub.match(ec.sub) {
				return true
			}
		}
		return false
	case attrPresenter:
		return f.anyStr(ec.r.Presenter)
	case attrMethod:
		return f.anyStr(ec.r.Method)
	case attrPath:
		for _, m := range f.paths {
			if m.match(ec.path) {
				return true
			}
		}
		return false
	case attrAudiences:
		for _, a := range ec.r.Audiences {
			if f.anyStr(a) {
				return true
			}
		}
		return false
	case attrClaim:
		return f.matchClaim(ec.r.Claims)
	}
	return false
}

func (f *fieldMatcher) anyStr(v string) bool {
	for _, m := range f.strs {
		if m.match(v) {
			return true
		}
	}
	return false
}

func (f *fieldMatcher) anyFold(v string) bool {
	for _, m := range f.strs {
		if m.matchFold(v) {
			return true
		}
	}
	return false
}

func (f *fieldMatcher) anyIP(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, p := range f.cidrs {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// matchHeader matches request.headers[name] as Envoy does: the values of a repeated
// header joined with ",", and "*" means the header is present, even with an empty value.
// Wide matchers also try each line on its own (see match).
func (f *fieldMatcher) matchHeader(r *Request) bool {
	n, first := 0, ""
	for i := range r.Headers {
		if strings.EqualFold(r.Headers[i].Name, f.name) {
			if n == 0 {
				first = r.Headers[i].Value
			}
			n++
		}
	}
	if n <= 1 {
		return f.headerValue(first, n == 1) != f.not
	}
	vals := make([]string, 0, n)
	for i := range r.Headers {
		if strings.EqualFold(r.Headers[i].Name, f.name) {
			vals = append(vals, r.Headers[i].Value)
		}
	}
	if f.headerValue(strings.Join(vals, ","), true) != f.not {
		return true
	}
	if f.wide {
		for _, v := range vals {
			if f.headerValue(v, true) != f.not {
				return true
			}
		}
	}
	return false
}

func (f *fieldMatcher) headerValue(v string, present bool) bool {
	if !present {
		return false
	}
	for _, m := range f.strs {
		if m.kind == strPresence || m.match(v) {
			return true
		}
	}
	return false
}

// matchClaim walks request.auth.claims[a][b]… and matches a string claim, or any string
// in a list claim. Other JSON types never match a value (but do satisfy notValues).
func (f *fieldMatcher) matchClaim(claims map[string]any) bool {
	var v any = claims
	for _, k := range f.claim {
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = m[k]; !ok {
			return false
		}
	}
	switch t := v.(type) {
	case string:
		return f.anyStr(t)
	case []any:
		for _, e := range t {
			if s, ok := e.(string); ok && f.anyStr(s) {
				return true
			}
		}
	case []string:
		for _, s := range t {
			if f.anyStr(s) {
				return true
			}
		}
	}
	return false
}

// evalCtx is the request with derived attributes, computed once per evaluation.
type evalCtx struct {
	r           *Request
	principal   string // without spiffe://
	trustDomain string
	namespace   string
	sa          string
	remoteIP    netip.Addr
	// iss and sub are the token's, for requestPrincipals; authenticated is false
	// without a request principal.
	iss, sub      string
	authenticated bool
	host          string
	hostNoPort    string
	path          string // normalized, no query
	tcp           bool
}

func (ec *evalCtx) init(r *Request, path string) {
	ec.r = r
	ec.tcp = r.TCP
	ec.principal = strings.TrimPrefix(r.SourcePrincipal, "spiffe://")
	ec.trustDomain, ec.namespace, ec.sa = splitPrincipal(ec.principal)
	if ec.namespace == "" {
		ec.namespace = r.SourceNamespace
	}
	if r.RequestPrincipal != "" {
		ec.authenticated = true
		ec.iss, ec.sub = splitRequestPrincipal(r)
	}
	ec.remoteIP = r.RemoteIP
	if !ec.remoteIP.IsValid() {
		ec.remoteIP = r.SourceIP
	}
	ec.host = r.Host
	ec.hostNoPort = stripPort(r.Host)
	ec.path = path
}

// splitRequestPrincipal returns the token's issuer and subject: its iss and sub claims
// when the claims carry them and agree with RequestPrincipal, else RequestPrincipal split
// at its last "/" (subjects rarely hold a "/", issuer URLs often do).
func splitRequestPrincipal(r *Request) (iss, sub string) {
	iss, _ = r.Claims["iss"].(string)
	sub, _ = r.Claims["sub"].(string)
	if len(iss)+1+len(sub) == len(r.RequestPrincipal) && strings.HasPrefix(r.RequestPrincipal, iss) &&
		r.RequestPrincipal[len(iss)] == '/' && strings.HasSuffix(r.RequestPrincipal, sub) {
		return iss, sub
	}
	i := strings.LastIndexByte(r.RequestPrincipal, '/')
	if i < 0 {
		return r.RequestPrincipal, ""
	}
	return r.RequestPrincipal[:i], r.RequestPrincipal[i+1:]
}

// splitPrincipal splits "td/ns/<ns>/sa/<sa>"; parts that are absent come back empty.
func splitPrincipal(p string) (td, ns, sa string) {
	td, rest, ok := strings.Cut(p, "/")
	if !ok {
		return p, "", ""
	}
	rest, ok = strings.CutPrefix(rest, "ns/")
	if !ok {
		return td, "", ""
	}
	ns, rest, ok = strings.Cut(rest, "/")
	if !ok {
		return td, ns, ""
	}
	sa, _ = strings.CutPrefix(rest, "sa/")
	if sa == rest || strings.Contains(sa, "/") {
		sa = ""
	}
	return td, ns, sa
}

// stripPort removes a trailing ":digits" port from an authority, IPv6 literals included.
func stripPort(h string) string {
	i := strings.LastIndexByte(h, ':')
	if i < 0 || strings.LastIndexByte(h, ']') > i || i == len(h)-1 {
		return h
	}
	for j := i + 1; j < len(h); j++ {
		if h[j] < '0' || h[j] > '9' {
			return h
		}
	}
	if strings.IndexByte(h[:i], ':') >= 0 && !strings.HasPrefix(h, "[") {
		return h // a bare IPv6 address, not host:port
	}
	return h[:i]
}
