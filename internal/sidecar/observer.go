package sidecar

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/meshguard/meshguard/internal/accesslog"
	"github.com/meshguard/meshguard/internal/metrics"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/proxy"
)

// observer is the proxy's Observer: one access-log entry and one metrics update per
// HTTP request or TCP connection, and a counter per failed handshake. It runs on the
// data path, so it never blocks: the access-log Writer queues or drops.
type observer struct {
	m    *metrics.Sidecar
	self metrics.Peer // this workload, without its principal (that comes per record)

	log atomic.Pointer[logState] // nil: no access log
	// services are the service hosts the registry knows. Only these become a
	// destination_service label: a label value taken from what a client sends (the
	// Host header) would let any caller grow the metric series without bound, the
	// memory exhaustion Istio fixed in istio#18818.
	services atomic.Pointer[map[string]struct{}]
	entries  sync.Pool // *accesslog.Entry
	headers  sync.Pool // http.Header
	uris     uriCache
}

// maxCachedURIs bounds uriCache: a sidecar sees its own principal and its peers',
// a handful; past the bound (a mesh with more identities calling this workload) URIs
// are built per record again rather than kept without limit.
const maxCachedURIs = 256

// uriCache turns a principal into its "spiffe://" URI without allocating per record.
// The metrics labels need the URI on every request; building it each time was the
// data path's largest allocation (a third of the client sidecar's bytes allocated
// under load), and allocation is what makes the collector run. Copy on write: reads
// take no lock.
type uriCache struct {
	mu sync.Mutex
	m  atomic.Pointer[map[string]string]
}

func (c *uriCache) uri(principal string) string {
	if principal == "" {
		return ""
	}
	if m := c.m.Load(); m != nil {
		if u, ok := (*m)[principal]; ok {
			return u
		}
	}
	u := spiffeURI(principal)
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old == nil {
		old = &map[string]string{}
	}
	if len(*old) >= maxCachedURIs {
		return u
	}
	m := make(map[string]string, len(*old)+1)
	maps.Copy(m, *old)
	m[principal] = u
	c.m.Store(&m)
	return u
}

// logState is one running access-log writer and the request headers its format reads.
type logState struct {
	w *accesslog.Writer
	// headers are the canonical keys of the request headers the format references;
	// only those are copied out of the request.
	headers []string
}

var _ proxy.Observer = (*observer)(nil)

func newObserver(m *metrics.Sidecar, w policy.Workload) *observer {
	o := &observer{m: m, self: selfPeer(w)}
	o.entries.New = func() any { return new(accesslog.Entry) }
	o.headers.New = func() any { return http.Header{} }
	return o
}

// setServices records the registry's service hosts, lower-cased; called on every
// applied configuration.
func (o *observer) setServices(svcs []proxy.Service) {
	m := make(map[string]struct{}, len(svcs))
	for _, s := range svcs {
		m[strings.ToLower(s.Host)] = struct{}{}
	}
	o.services.Store(&m)
}

// knownService returns host (port stripped, lower-cased) when the registry knows it,
// else "" (reported as "unknown", as Istio does for hosts it cannot resolve).
func (o *observer) knownService(host string) string {
	if h, _, ok := strings.Cut(host, ":"); ok {
		host = h
	}
	m := o.services.Load()
	if m == nil {
		return ""
	}
	if _, ok := (*m)[host]; ok {
		return host
	}
	lower := strings.ToLower(host)
	if _, ok := (*m)[lower]; ok {
		return lower
	}
	return ""
}

// selfPeer labels this workload as Istio does from its pod labels.
func selfPeer(w policy.Workload) metrics.Peer {
	l := w.Labels
	app := first(l["app.kubernetes.io/name"], l["app"])
	version := first(l["app.kubernetes.io/version"], l["version"])
	return metrics.Peer{
		Workload: w.Name, Namespace: w.Namespace, App: app, Version: version,
		CanonicalService:  first(l["service.istio.io/canonical-name"], app, w.Name),
		CanonicalRevision: first(l["service.istio.io/canonical-revision"], version, "latest"),
	}
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// HandshakeFailed counts a failed TLS handshake by direction and bounded reason.
func (o *observer) HandshakeFailed(dir proxy.Direction, reason string) {
	o.m.TLSHandshakeFailed(dir.String(), reason)
}

// Observe records one completed request or connection.
func (o *observer) Observe(r *proxy.Record) {
	o.record(r)
	if ls := o.log.Load(); ls != nil {
		e := o.entries.Get().(*accesslog.Entry)
		h := o.headers.Get().(http.Header)
		o.fill(e, r, ls.headers, h)
		ls.w.Log(e)
		clear(h)
		*e = accesslog.Entry{}
		o.headers.Put(h)
		o.entries.Put(e)
	}
}

// rbacID is Istio's RBAC policy ID for rule of policy "NS/NAME":
// ns[NS]-policy[NAME]-rule[RULE]; "" for no policy.
func rbacID(pol string, rule int) string {
	if pol == "" {
		return ""
	}
	ns, name, ok := strings.Cut(pol, "/")
	if !ok {
		return pol
	}
	return "ns[" + ns + "]-policy[" + name + "]-rule[" + strconv.Itoa(rule) + "]"
}

func spiffeURI(principal string) string {
	if principal == "" {
		return ""
	}
	return "spiffe://" + principal
}

// peerFromPrincipal labels a peer known only by its certificate: Istio's principal
// carries the namespace; workload, app and version stay unknown without Istio's
// metadata exchange.
func (o *observer) peerFromPrincipal(principal string) metrics.Peer {
	p := metrics.Peer{Principal: o.uris.uri(principal)}
	if _, rest, ok := strings.Cut(principal, "/ns/"); ok {
		p.Namespace, _, _ = strings.Cut(rest, "/")
	}
	return p
}

// serviceLabels splits "name.ns.svc.cluster.local" (or "name.ns.svc") into its name
// and namespace; a host of another shape has no namespace. Cut, not Split: this runs
// per request and must not allocate.
func serviceLabels(host string) (name, ns string) {
	name, rest, ok := strings.Cut(host, ".")
	if !ok {
		return name, ""
	}
	ns, rest, ok = strings.Cut(rest, ".")
	if ok && (rest == "svc" || strings.HasPrefix(rest, "svc.")) {
		return name, ns
	}
	return name, ""
}

func requestProtocol(r *proxy.Record) string {
	if r.Protocol == "tcp" {
		return "tcp"
	}
	if r.Headers != nil && strings.HasPrefix(r.Headers.Get("content-type"), "application/grpc") {
		return "grpc"
	}
	return "http"
}

func (o *observer) labels(r *proxy.Record) metrics.ConnLabels {
	l := metrics.ConnLabels{RequestProtocol: requestProtocol(r)}
	self := o.self
	self.Principal = o.uris.uri(r.LocalPrincipal)
	if r.Direction == proxy.Inbound {
		l.Reporter = metrics.ReporterDestination
		l.Source = o.peerFromPrincipal(r.SourcePrincipal)
		l.Destination = self
		l.ConnectionSecurityPolicy = metrics.SecurityNone
		if r.TLSVersion != 0 {
			l.ConnectionSecurityPolicy = metrics.SecurityMutualTLS
		}
		// The inbound side has no service host of its own: take the request's authority,
		// but only when it names a service the registry knows (bounded label values).
		host := o.knownService(r.Authority)
		l.DestinationService = host
		if host != "" {
			l.DestinationServiceName, _ = serviceLabels(host)
		}
		l.DestinationServiceNamespace = self.Namespace
	} else {
		l.Reporter = metrics.ReporterSource
		l.Source = self
		l.Destination = o.peerFromPrincipal(r.PeerPrincipal)
		if host := o.knownService(r.Host); host != "" {
			l.DestinationService = host
			l.DestinationServiceName, l.DestinationServiceNamespace = serviceLabels(host)
		}
		l.ConnectionSecurityPolicy = metrics.SecurityUnknown
	}
	return l
}

func (o *observer) record(r *proxy.Record) {
	l := o.labels(r)
	c := o.m.Conn(l)
	if r.Protocol == "tcp" {
		c.TCPOpened()
		c.TCPBytes(uint64(max(r.BytesSent, 0)), uint64(max(r.BytesReceived, 0)))
		c.TCPClosed(r.Flags)
	} else {
		c.RecordRequest(metrics.Request{
			ResponseCode: r.Status, ResponseFlags: r.Flags, Duration: r.Duration,
			RequestBytes: uint64(max(r.BytesReceived, 0)), ResponseBytes: uint64(max(r.BytesSent, 0)),
		})
	}
	if r.Denied {
		o.m.AuthzDenied(rbacID(r.Policy, r.Rule), false)
	}
}

func (o *observer) fill(e *accesslog.Entry, r *proxy.Record, keys []string, h http.Header) {
	e.StartTime, e.Duration = r.Start, r.Duration
	e.ConnectionID = r.ConnectionID
	e.DownstreamRemoteAddress, e.DownstreamLocalAddress = r.Source, r.Local
	e.UpstreamHost = r.Upstream
	e.BytesReceived, e.BytesSent = uint64(max(r.BytesReceived, 0)), uint64(max(r.BytesSent, 0))
	e.ResponseFlags = r.Flags
	e.RequestedServerName = r.SNI
	e.DownstreamTLSVersion, e.DownstreamTLSCipher = r.TLSVersion, r.TLSCipher
	e.UpstreamPeerURISAN = o.uris.uri(r.PeerPrincipal)
	port := strconv.FormatUint(uint64(r.Port), 10)
	if r.Direction == proxy.Inbound {
		e.DownstreamPeerURISAN = o.uris.uri(r.SourcePrincipal)
		if r.TLSVersion != 0 {
			e.DownstreamLocalURISAN = o.uris.uri(r.LocalPrincipal)
		}
		e.UpstreamCluster = "inbound|" + port + "||"
	} else {
		e.UpstreamCluster = "outbound|" + port + "||" + r.Host
	}
	policyID := rbacID(r.Policy, r.Rule)
	e.Authz = accesslog.Authz{Denied: r.Denied, AuditPolicy: rbacID(r.AuditPolicy, r.AuditRule)}
	if r.Denied {
		e.Authz.Policy = policyID
	}
	if r.Protocol == "tcp" {
		if r.Denied {
			e.ConnectionTerminationDetails = accesslog.RBACDeniedDetails(policyID)
		}
		return
	}
	e.Method, e.Path, e.Authority = r.Method, r.Path, r.Authority
	e.Scheme = "http"
	e.Protocol = "HTTP/1.1"
	if r.Protocol == "h2" {
		e.Protocol = "HTTP/2"
	}
	e.ResponseCode = r.Status
	if r.Direction == proxy.Inbound {
		e.RouteName = "default"
	} else {
		e.RouteName = r.Host + ":" + port
	}
	switch {
	case r.Denied:
		e.ResponseCodeDetails = accesslog.RBACDeniedDetails(policyID)
	case r.Status == 401:
		e.ResponseCodeDetails = "jwt_authn_access_denied{Jwt_verification_fails}"
	case r.Flags == "UF":
		e.ResponseCodeDetails = "upstream_reset_before_response_started{connection_failure}"
	case r.Flags == "URX":
		e.ResponseCodeDetails = "upstream_reset_before_response_started{connection_termination}"
	case r.Status != 0:
		e.ResponseCodeDetails = "via_upstream"
	}
	if r.Headers != nil && len(keys) > 0 {
		for _, k := range keys {
			if v := r.Headers.Get(k); v != "" {
				h[k] = append(h[k][:0], v)
			}
		}
		e.RequestHeaders = h
	}
}

// reqHeaderOps finds the request headers a format string reads: %REQ(X?Y)% and
// %REQUEST_HEADER(X)%, pseudo-headers excluded (the Entry carries those).
var reqHeaderOps = regexp.MustCompile(`%(?:REQ|REQUEST_HEADER)\(([^)]*)\)`)

func formatHeaders(format string) []string {
	var keys []string
	seen := map[string]bool{}
	for _, m := range reqHeaderOps.FindAllStringSubmatch(format, -1) {
		for name := range strings.SplitSeq(m[1], "?") {
			if name == "" || name[0] == ':' || strings.EqualFold(name, "host") {
				continue
			}
			k := textproto.CanonicalMIMEHeaderKey(name)
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// accessLogs runs the access-log Writer that MeshConfig asks for and replaces it when
// accessLogFile, accessLogFormat or accessLogEncoding change.
type accessLogs struct {
	obs  *observer
	opts accesslog.WriterOptions
	log  *slog.Logger

	mu   sync.Mutex
	ctx  context.Context // the sidecar's; writers run under it
	key  string
	stop context.CancelFunc
	done chan struct{}
}

// prepared is a validated access-log configuration, ready to swap in.
type prepared struct {
	key string
	w   *accesslog.Writer // nil: access log off
	ls  *logState
}

// logKey identifies mc's access-log settings. The encoding goes in as its number: a
// generated enum's String() looks its name up in the descriptor of the whole
// mesh/v1alpha1 config.proto, which unpacks every message of that file on first use
// and keeps them (~0.2 MB of heap for the sidecar's lifetime, by a heap profile).
func logKey(mc *meshv1alpha1.MeshConfig) string {
	return mc.GetAccessLogFile() + "\x00" + strconv.Itoa(int(mc.GetAccessLogEncoding())) + "\x00" + mc.GetAccessLogFormat()
}

// prepare compiles mc's access-log settings without touching the running writer, so
// a bad format rejects the whole snapshot.
func (a *accessLogs) prepare(mc *meshv1alpha1.MeshConfig) (*prepared, error) {
	k := logKey(mc)
	a.mu.Lock()
	same := k == a.key
	a.mu.Unlock()
	if same {
		return nil, nil
	}
	w, err := accesslog.FromMeshConfig(mc, a.opts)
	if err != nil {
		return nil, err
	}
	p := &prepared{key: k, w: w}
	if w != nil {
		f := mc.GetAccessLogFormat()
		if f == "" {
			f = accesslog.DefaultTextFormat
			if mc.GetAccessLogEncoding() == meshv1alpha1.MeshConfig_JSON {
				f = accesslog.DefaultJSONFormat
			}
		}
		p.ls = &logState{w: w, headers: formatHeaders(f)}
	}
	return p, nil
}

// swap starts p's writer (if any), points the observer at it and stops the old one,
// which writes out what it had queued.
func (a *accessLogs) swap(p *prepared) {
	if p == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctx == nil || a.ctx.Err() != nil {
		return
	}
	oldStop, oldDone := a.stop, a.done
	a.key, a.stop, a.done = p.key, nil, nil
	if p.w != nil {
		ctx, cancel := context.WithCancel(a.ctx)
		done := make(chan struct{})
		a.stop, a.done = cancel, done
		go func() {
			defer close(done)
			if err := p.w.Run(ctx); err != nil {
				a.log.Error("access log stopped; entries are dropped until the configuration changes", "err", err)
			}
		}()
		a.obs.log.Store(p.ls)
	} else {
		a.obs.log.Store(nil)
	}
	if oldStop != nil {
		oldStop()
		<-oldDone
	}
	a.log.Info("access log configured", "file", p.w != nil)
}

// Run owns the writers' lifetime: it reopens the current file on every reopen signal
// (SIGHUP) and stops the writer when ctx ends.
func (a *accessLogs) Run(ctx context.Context, reopen <-chan struct{}) error {
	for {
		select {
		case <-ctx.Done():
			a.obs.log.Store(nil)
			a.mu.Lock()
			stop, done := a.stop, a.done
			a.stop, a.done = nil, nil
			a.mu.Unlock()
			if stop != nil {
				stop()
				<-done
			}
			return nil
		case <-reopen:
			if ls := a.obs.log.Load(); ls != nil {
				ls.w.Reopen()
				a.log.Info("access log reopened")
			}
		}
	}
}
