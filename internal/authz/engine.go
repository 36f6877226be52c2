package authz

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/meshguard/meshguard/internal/config"
)

// Options tune an Engine. The zero value is usable.
type Options struct {
	// HTTPClient calls envoyExtAuthzHttp providers for CUSTOM policies. Default: a
	// client with its own transport and no redirects.
	HTTPClient *http.Client
	// ResolveProvider turns a provider's service ("[ns/]host") and port into a dialable
	// "host:port". Default: drop the namespace and join host and port.
	ResolveProvider func(service string, port uint32) (string, error)
	// Logger receives CUSTOM authorizer failures. Default: discard.
	Logger *slog.Logger
	// TrustDomain is the workload's own trust domain, the one its certificate names.
	// Principals in that trust domain, in MeshConfig's trustDomainAliases or in
	// cluster.local match the same identity in all of them, as in Istio. Default:
	// MeshConfig's trustDomain.
	TrustDomain string
}

// Engine decides requests for one workload. It is immutable and safe for concurrent use.
type Engine struct {
	norm      Normalization
	custom    []*compiledPolicy
	deny      []*compiledPolicy
	allow     []*compiledPolicy
	audit     []*compiledPolicy
	dryAllow  []*compiledPolicy
	dryDeny   []*compiledPolicy
	providers map[string]*provider
	// brokenCustom is set when a CUSTOM policy names a provider meshguard cannot use;
	// Istio then denies every request to the workload, and so does the engine.
	brokenCustom string
	// readsHeaders: some decision depends on Request.Headers (see ReadsHeaders).
	readsHeaders bool

	client  *http.Client
	resolve func(string, uint32) (string, error)
	logger  *slog.Logger

	noAllowReason    string
	noAllowTCPReason string
	defaultReason    string
}

// New compiles the AuthorizationPolicies that apply to one workload (internal/policy
// selects them) under the mesh's path normalization and extension providers. It fails on
// a policy it cannot compile, naming the policy and field; the caller keeps its previous
// Engine.
func New(policies []*config.Object, mesh *meshv1alpha1.MeshConfig, opts Options) (*Engine, error) {
	e := &Engine{
		norm:    NormalizationFromMesh(mesh),
		client:  opts.HTTPClient,
		resolve: opts.ResolveProvider,
		logger:  opts.Logger,
	}
	if e.client == nil {
		e.client = &http.Client{
			Transport:     &http.Transport{Proxy: nil},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if e.resolve == nil {
		e.resolve = defaultResolve
	}
	if e.logger == nil {
		e.logger = slog.New(slog.DiscardHandler)
	}
	local := opts.TrustDomain
	if local == "" {
		local = mesh.GetTrustDomain()
	}
	tds := newTrustDomains(local, mesh.GetTrustDomainAliases())
	var allowKeys []string
	allowHTTP := false
	for _, o := range policies {
		p, err := compilePolicy(o, tds)
		if err != nil {
			return nil, err
		}
		switch {
		case p.action == ActionCustom:
			if p.dryRun {
				// Istio supports dry-run for ALLOW and DENY only; a dry-run CUSTOM
				// policy is neither enforced nor sent to its provider.
				continue
			}
			if _, ok := e.providers[p.provider]; !ok {
				pr, why := newProvider(p.provider, mesh)
				if pr == nil {
					e.brokenCustom = fmt.Sprintf("denied: CUSTOM policy %s: %s, so every request is denied (fail closed)", p.key, why)
					continue
				}
				if e.providers == nil {
					e.providers = map[string]*provider{}
				}
				e.providers[p.provider] = pr
			}
			e.custom = append(e.custom, p)
		case p.action == ActionAudit:
			e.audit = append(e.audit, p)
		case p.action == ActionDeny && p.dryRun:
			e.dryDeny = append(e.dryDeny, p)
		case p.action == ActionDeny:
			e.deny = append(e.deny, p)
		case p.action == ActionAllow && p.dryRun:
			e.dryAllow = append(e.dryAllow, p)
		default:
			e.allow = append(e.allow, p)
			allowKeys = append(allowKeys, p.key)
			for i := range p.rules {
				allowHTTP = allowHTTP || p.rules[i].hasHTTP
			}
		}
	}
	e.readsHeaders = len(e.custom) > 0
	for _, ps := range [][]*compiledPolicy{e.deny, e.allow, e.audit, e.dryAllow, e.dryDeny} {
		for _, p := range ps {
			e.readsHeaders = e.readsHeaders || p.readsHeaders()
		}
	}
	list := strings.Join(allowKeys, ", ")
	if len(allowKeys) > 8 {
		list = strings.Join(allowKeys[:8], ", ") + fmt.Sprintf(" and %d more", len(allowKeys)-8)
	}
	e.noAllowReason = "denied: no ALLOW policy matched (ALLOW policies: " + list + ")"
	e.noAllowTCPReason = e.noAllowReason
	if allowHTTP {
		e.noAllowTCPReason += "; on plain TCP, ALLOW rules that use HTTP-only fields never match"
	}
	e.defaultReason = "allowed: no ALLOW policy applies to the workload and no DENY policy matched"
	return e, nil
}

// ReadsHeaders reports whether a decision of e can depend on the request's headers: a
// policy has a request.headers condition, or a CUSTOM provider is sent them. When it
// is false, Evaluate never looks at Request.Headers, and a caller may leave them out
// rather than convert every header line per request.
func (e *Engine) ReadsHeaders() bool { return e.readsHeaders }

// Normalization returns the path normalization the engine applies.
func (e *Engine) Normalization() Normalization { return e.norm }

// Evaluate decides one request. It never fails: a malformed request is a Decision with
// Invalid set (400), and a CUSTOM authorizer that errors denies unless its provider is
// configured to fail open. ctx bounds the call to a CUSTOM authorizer.
func (e *Engine) Evaluate(ctx context.Context, r *Request) Decision {
	d := Decision{Rule: -1, Audit: Mark{Rule: -1}}
	d.DryRunAllow.Rule, d.DryRunDeny.Rule = -1, -1
	var ec evalCtx
	if !r.TCP {
		if err := validMethod(r.Method); err != nil {
			return invalid(d, err)
		}
		np, err := NormalizePath(r.Path, e.norm)
		if err != nil {
			return invalid(d, err)
		}
		d.Path = np
		ec.init(r, matchPath(np))
	} else {
		ec.init(r, "")
	}

	if p, i := firstMatch(e.audit, &ec); p != nil {
		d.Audit = Mark{Policy: p.key, Rule: p.rules[i].index}
	}
	if len(e.dryDeny) > 0 {
		d.DryRunDeny.Evaluated, d.DryRunDeny.Allow = true, true
		if p, i := firstMatch(e.dryDeny, &ec); p != nil {
			d.DryRunDeny = DryRun{Evaluated: true, Policy: p.key, Rule: p.rules[i].index}
		}
	}
	if len(e.dryAllow) > 0 {
		d.DryRunAllow.Evaluated = true
		if p, i := firstMatch(e.dryAllow, &ec); p != nil {
			d.DryRunAllow = DryRun{Evaluated: true, Allow: true, Policy: p.key, Rule: p.rules[i].index}
		}
	}

	if e.brokenCustom != "" {
		d.Status, d.Action, d.Reason = http.StatusForbidden, ActionCustom, e.brokenCustom
		return d
	}
	// CUSTOM: Istio's HTTP ext_authz providers apply to HTTP traffic only.
	if !ec.tcp {
		if p, i := firstMatch(e.custom, &ec); p != nil {
			if !e.checkCustom(ctx, r, d.Path, p, i, &d) {
				return d
			}
		}
	}
	if p, i := firstMatch(e.deny, &ec); p != nil {
		rl := &p.rules[i]
		d.Allow, d.Status, d.Action, d.Policy, d.Rule, d.Reason = false, http.StatusForbidden, ActionDeny, p.key, rl.index, rl.reason
		return d
	}
	if len(e.allow) == 0 {
		d.Allow, d.Status, d.Action, d.Policy, d.Rule = true, 0, ActionNone, "", -1
		if d.Reason == "" {
			d.Reason = e.defaultReason
		}
		return d
	}
	if p, i := firstMatch(e.allow, &ec); p != nil {
		rl := &p.rules[i]
		d.Allow, d.Status, d.Action, d.Policy, d.Rule, d.Reason = true, 0, ActionAllow, p.key, rl.index, rl.reason
		return d
	}
	d.Allow, d.Status, d.Action, d.Policy, d.Rule = false, http.StatusForbidden, ActionNone, "", -1
	d.Reason = e.noAllowReason
	if ec.tcp {
		d.Reason = e.noAllowTCPReason
	}
	return d
}

func firstMatch(ps []*compiledPolicy, ec *evalCtx) (*compiledPolicy, int) {
	for _, p := range ps {
		if i := p.firstMatch(ec); i >= 0 {
			return p, i
		}
	}
	return nil, -1
}

func invalid(d Decision, err error) Decision {
	d.Invalid, d.Allow, d.Status = true, false, http.StatusBadRequest
	d.Reason = "rejected as invalid (400): " + err.Error()
	return d
}

// validMethod rejects what Istio rejects: an empty method or one not in upper case.
func validMethod(m string) error {
	if m == "" {
		return &InvalidRequestError{Field: "method", Reason: "missing"}
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if 'a' <= c && c <= 'z' {
			return &InvalidRequestError{Field: "method", Reason: fmt.Sprintf("%q is not upper case", truncate(m))}
		}
		if c <= ' ' || c >= 0x7f {
			return &InvalidRequestError{Field: "method", Reason: fmt.Sprintf("%q is not a token", truncate(m))}
		}
	}
	return nil
}
