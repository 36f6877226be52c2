package authz

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
)

// provider is a compiled envoyExtAuthzHttp extension provider.
type provider struct {
	name            string
	service         string
	port            uint32
	timeout         time.Duration
	pathPrefix      string
	failOpen        bool
	statusOnError   int
	include         []strMatch // request header names sent to the authorizer
	additional      []Header   // fixed headers added to the check
	upstreamOnAllow []strMatch // authorizer response headers copied upstream on allow
}

// Istio's default when timeout is unset.
const defaultExtAuthzTimeout = 600 * time.Second

func newProvider(name string, mesh *meshv1alpha1.MeshConfig) (*provider, string) {
	for _, ep := range mesh.GetExtensionProviders() {
		if ep.GetName() != name {
			continue
		}
		h := ep.GetEnvoyExtAuthzHttp()
		if h == nil {
			return nil, fmt.Sprintf("extension provider %q is not an envoyExtAuthzHttp provider, the only kind meshguard supports", name)
		}
		p := &provider{
			name: name, service: h.GetService(), port: h.GetPort(), pathPrefix: h.GetPathPrefix(),
			failOpen: h.GetFailOpen(), statusOnError: http.StatusForbidden, timeout: defaultExtAuthzTimeout,
		}
		if p.service == "" || p.port == 0 || p.port > 65535 {
			return nil, fmt.Sprintf("extension provider %q needs a service and a port", name)
		}
		if d := h.GetTimeout(); d != nil {
			p.timeout = d.AsDuration()
		}
		if s := h.GetStatusOnError(); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 200 || n > 599 {
				return nil, fmt.Sprintf("extension provider %q: statusOnError %q is not an HTTP status", name, s)
			}
			p.statusOnError = n
		}
		//nolint:staticcheck // the deprecated field is still honoured, as Istio does
		for _, v := range append(append([]string(nil), h.GetIncludeHeadersInCheck()...), h.GetIncludeRequestHeadersInCheck()...) {
			p.include = append(p.include, compileStr(v))
		}
		for k, v := range h.GetIncludeAdditionalHeadersInCheck() {
			p.additional = append(p.additional, Header{Name: k, Value: v})
		}
		for _, v := range h.GetHeadersToUpstreamOnAllow() {
			p.upstreamOnAllow = append(p.upstreamOnAllow, compileStr(v))
		}
		return p, ""
	}
	return nil, fmt.Sprintf("extension provider %q is not defined in meshConfig.extensionProviders", name)
}

func defaultResolve(service string, port uint32) (string, error) {
	if _, host, ok := strings.Cut(service, "/"); ok {
		service = host
	}
	return net.JoinHostPort(service, strconv.FormatUint(uint64(port), 10)), nil
}

// checkCustom asks the provider of a matching CUSTOM policy, as Envoy's HTTP ext_authz
// filter does: same method, the provider's pathPrefix before the request path, the Host
// header and the configured headers, no body. 200 allows; another status denies with that
// status; a transport error or 5xx denies with statusOnError unless failOpen. It fills d
// and reports whether evaluation continues (the authorizer allowed).
func (e *Engine) checkCustom(ctx context.Context, r *Request, path string, p *compiledPolicy, ri int, d *Decision) bool {
	pr := e.providers[p.provider]
	rule := p.rules[ri].index
	deny := func(status int, why string) bool {
		d.Allow, d.Status, d.Action, d.Policy, d.Rule = false, status, ActionCustom, p.key, rule
		d.Reason = fmt.Sprintf("denied by CUSTOM policy %s rule %d: external authorizer %q %s", p.key, rule, pr.name, why)
		return false
	}
	fail := func(why string) bool {
		e.logger.LogAttrs(ctx, slog.LevelWarn, "external authorizer failed",
			slog.String("provider", pr.name), slog.String("policy", p.key), slog.String("error", why))
		if pr.failOpen {
			return true
		}
		return deny(pr.statusOnError, why+" (fail closed)")
	}
	addr, err := e.resolve(pr.service, pr.port)
	if err != nil {
		return fail(fmt.Sprintf("cannot resolve %s:%d: %v", pr.service, pr.port, err))
	}
	ctx, cancel := context.WithTimeout(ctx, pr.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+addr+pr.pathPrefix+path, http.NoBody)
	if err != nil {
		return fail(fmt.Sprintf("cannot build the check request: %v", err))
	}
	req.Host = r.Host
	for _, h := range r.Headers {
		for _, m := range pr.include {
			if m.matchFold(h.Name) {
				req.Header.Add(h.Name, h.Value)
				break
			}
		}
	}
	for _, h := range pr.additional {
		req.Header.Set(h.Name, h.Value)
	}
	req.ContentLength = 0
	resp, err := e.client.Do(req)
	if err != nil {
		return fail(fmt.Sprintf("unreachable: %v", err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		for name, vals := range resp.Header {
			for _, m := range pr.upstreamOnAllow {
				if m.matchFold(name) {
					for _, v := range vals {
						d.UpstreamHeaders = append(d.UpstreamHeaders, Header{Name: name, Value: v})
					}
					break
				}
			}
		}
		return true
	case resp.StatusCode >= 500:
		return fail(fmt.Sprintf("answered %d", resp.StatusCode))
	default:
		return deny(resp.StatusCode, fmt.Sprintf("answered %d", resp.StatusCode))
	}
}
