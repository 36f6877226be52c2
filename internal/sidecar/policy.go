package sidecar

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/meshguard/meshguard/internal/authn/jwt"
	"github.com/meshguard/meshguard/internal/authz"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/proxy"
)

// BuildPolicy compiles what snap says about workload w into the proxy's Policy: the
// effective PeerAuthentication, the AuthorizationPolicy engine, the
// RequestAuthentication verifier, DestinationRule TLS lookups and the service registry
// (identities in trust domain td). Any error rejects the whole snapshot.
func BuildPolicy(snap *config.Snapshot, w policy.Workload, td spiffeid.TrustDomain, httpClient *http.Client, log *slog.Logger) (*proxy.Policy, error) {
	ix := policy.NewIndex(snap)
	eng, err := authz.New(ix.AuthorizationPolicies(w), ix.Mesh(), authz.Options{Logger: log, TrustDomain: td.Name()})
	if err != nil {
		return nil, fmt.Errorf("authorization policies for %s/%s: %w", w.Namespace, w.Name, err)
	}
	pol := &proxy.Policy{
		PeerAuthn:    peerAuthn(ix.PeerAuthentication(w)),
		Authorizer:   newAuthorizer(eng),
		Destinations: destinationRules{ix: ix, w: w},
	}
	for i, a := range ix.Mesh().GetTrustDomainAliases() {
		td, err := spiffeid.TrustDomainFromString(a)
		if err != nil {
			return nil, fmt.Errorf("meshConfig.trustDomainAliases[%d] %q: %w", i, a, err)
		}
		pol.TrustDomainAliases = append(pol.TrustDomainAliases, td)
	}
	if ras := ix.RequestAuthentications(w); len(ras) > 0 {
		a, err := jwt.New(ras, jwt.Options{HTTPClient: httpClient, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("request authentications for %s/%s: %w", w.Namespace, w.Name, err)
		}
		pol.RequestAuthn = jwtAuthn{a}
	}
	if pol.Services, err = proxy.ServicesFromSnapshot(snap, td); err != nil {
		return nil, fmt.Errorf("service registry: %w", err)
	}
	return pol, nil
}

type peerAuthn policy.MTLS

func (m peerAuthn) MTLSMode(port uint32) security.PeerAuthentication_MutualTLS_Mode {
	switch policy.MTLS(m).ForPort(port) {
	case policy.MTLSStrict:
		return security.PeerAuthentication_MutualTLS_STRICT
	case policy.MTLSDisable:
		return security.PeerAuthentication_MutualTLS_DISABLE
	}
	return security.PeerAuthentication_MutualTLS_PERMISSIVE
}

// authorizer adapts *authz.Engine to proxy.Authorizer. Its authz.Requests are reused:
// Evaluate keeps a pointer to its request out of the caller's frame (escape analysis
// cannot see through the matchers), so a fresh one per request would be a heap
// allocation on every inbound request.
type authorizer struct {
	e    *authz.Engine
	reqs sync.Pool // *authz.Request
}

func newAuthorizer(e *authz.Engine) *authorizer { return &authorizer{e: e} }

func (a *authorizer) Authorize(ctx context.Context, r *proxy.Request) proxy.Decision {
	ar, _ := a.reqs.Get().(*authz.Request)
	if ar == nil {
		ar = new(authz.Request)
	}
	headers := ar.Headers[:0]
	*ar = authz.Request{
		TCP:             !r.HTTP,
		SourceIP:        r.Source.Addr(),
		DestinationIP:   r.Destination.Addr(),
		DestinationPort: uint32(r.Destination.Port()),
		SourcePrincipal: r.SourcePrincipal,
		SNI:             r.SNI,
		Method:          r.Method,
		Host:            r.Host,
		Path:            r.Path,
	}
	// Each header line becomes two strings, so they are made only for an engine that
	// can look at them.
	if r.Headers != nil && a.e.ReadsHeaders() {
		headers = appendHeaders(headers, r.Headers)
	}
	ar.Headers = headers
	if r.Auth != nil {
		ar.RequestPrincipal, ar.Audiences, ar.Presenter, ar.Claims = r.Auth.Principal, r.Auth.Audiences, r.Auth.Presenter, r.Auth.Claims
	}
	d := a.e.Evaluate(ctx, ar)
	clear(headers) // keep the slice, not the request's strings
	if cap(headers) > 64 {
		headers = nil // nor a large one
	}
	*ar = authz.Request{Headers: headers[:0]}
	a.reqs.Put(ar)
	return proxy.Decision{Allow: d.Allow, Status: d.Status, Policy: d.Policy, Rule: d.Rule,
		AuditPolicy: d.Audit.Policy, AuditRule: d.Audit.Rule, Reason: d.Reason}
}

func appendHeaders(dst []authz.Header, h proxy.HeaderGetter) []authz.Header {
	h.Each(func(name, value string) { dst = append(dst, authz.Header{Name: name, Value: value}) })
	return dst
}

// jwtAuthn adapts *jwt.Authenticator (which reads an *http.Request) to the proxy.
type jwtAuthn struct{ a *jwt.Authenticator }

func (j jwtAuthn) Authenticate(ctx context.Context, h proxy.HeaderGetter, target string) (*proxy.Auth, error) {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		u = &url.URL{Path: "/"}
	}
	req := &http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}}
	h.Each(func(name, value string) { req.Header.Add(name, value) })
	res, err := j.a.Authenticate(ctx, req.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	if res == nil || !res.Authenticated {
		return nil, nil
	}
	return &proxy.Auth{Principal: res.Principal, Audiences: res.Audiences, Presenter: res.Presenter, Claims: res.Claims}, nil
}

// destinationRules answers the proxy's TLS lookups from the policy index: the rule
// policy picks for the host, port-level settings before the rule-wide ones.
type destinationRules struct {
	ix *policy.Index
	w  policy.Workload
}

func (d destinationRules) ClientTLS(host string, port uint32) *networking.ClientTLSSettings {
	o := d.ix.DestinationRule(d.w, host)
	if o == nil {
		return nil
	}
	tp := o.DestinationRule().GetTrafficPolicy()
	for _, pl := range tp.GetPortLevelSettings() {
		if pl.GetPort().GetNumber() == port && pl.GetTls() != nil {
			return pl.GetTls()
		}
	}
	return tp.GetTls()
}
