package metrics

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultBuckets are Envoy's default histogram buckets, which Istio uses for
// istio_request_duration_milliseconds and the request/response size histograms.
var DefaultBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
	30000, 60000, 300000, 600000, 1800000, 3600000}

// istioVecs are Istio's standard metrics: on Sidecar with every label free, on Conn
// curried with a connection's fixed labels.
type istioVecs struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	reqBytes    *prometheus.HistogramVec
	respBytes   *prometheus.HistogramVec
	tcpSent     *prometheus.CounterVec
	tcpReceived *prometheus.CounterVec
	tcpOpened   *prometheus.CounterVec
	tcpClosed   *prometheus.CounterVec
}

func (v *istioVecs) curry(l prometheus.Labels) istioVecs {
	return istioVecs{
		requests:    v.requests.MustCurryWith(l),
		duration:    v.duration.MustCurryWith(l).(*prometheus.HistogramVec),
		reqBytes:    v.reqBytes.MustCurryWith(l).(*prometheus.HistogramVec),
		respBytes:   v.respBytes.MustCurryWith(l).(*prometheus.HistogramVec),
		tcpSent:     v.tcpSent.MustCurryWith(l),
		tcpReceived: v.tcpReceived.MustCurryWith(l),
		tcpOpened:   v.tcpOpened.MustCurryWith(l),
		tcpClosed:   v.tcpClosed.MustCurryWith(l),
	}
}

// Sidecar holds a sidecar's collectors. Create it with NewSidecar; record through Conn
// handles.
type Sidecar struct {
	istioVecs

	authzDenials *prometheus.CounterVec
	tlsFailures  *prometheus.CounterVec
	rotations    *prometheus.CounterVec

	// AccessLogDropped counts access-log entries dropped because the log could not keep
	// up; pass it as accesslog.WriterOptions.Dropped.
	AccessLogDropped prometheus.Counter
	// Certs reports the expiry of the certificates the sidecar serves and trusts.
	Certs *CertExpiry

	mu    sync.RWMutex
	conns map[ConnLabels]*Conn
}

// NewSidecar creates the sidecar collectors and registers them on reg. now is the
// clock used for "seconds left" at scrape time (nil means time.Now).
func NewSidecar(reg prometheus.Registerer, now func() time.Time) (*Sidecar, error) {
	httpLabels := append(append([]string{}, peerLabelNames...), responseLabelNames...)
	tcpLabels := append(append([]string{}, peerLabelNames...), tcpLabelNames...)
	s := &Sidecar{istioVecs: istioVecs{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_requests_total", Help: "Requests handled by the proxy.",
		}, httpLabels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_request_duration_milliseconds", Help: "Request duration in milliseconds.", Buckets: DefaultBuckets,
		}, httpLabels),
		reqBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_request_bytes", Help: "HTTP request body size in bytes.", Buckets: DefaultBuckets,
		}, httpLabels),
		respBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_response_bytes", Help: "HTTP response body size in bytes.", Buckets: DefaultBuckets,
		}, httpLabels),
		tcpSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_sent_bytes_total", Help: "Bytes sent during response on TCP connections.",
		}, tcpLabels),
		tcpReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_received_bytes_total", Help: "Bytes received during request on TCP connections.",
		}, tcpLabels),
		tcpOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_opened_total", Help: "TCP connections opened.",
		}, tcpLabels),
		tcpClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_closed_total", Help: "TCP connections closed.",
		}, tcpLabels)},
		authzDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_authz_denials_total",
			Help: "Requests and connections denied by authorization, by deciding policy (none = no ALLOW policy matched); mode dry_run counts denials a dry-run policy would have made.",
		}, []string{"policy", "mode"}),
		tlsFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_tls_handshake_failures_total", Help: "TLS handshakes that failed, by direction (inbound, outbound) and reason.",
		}, []string{"direction", "reason"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_cert_rotations_total", Help: "Workload certificate renewals, by result (success, failure).",
		}, []string{"result"}),
		AccessLogDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_accesslog_dropped_entries_total", Help: "Access-log entries dropped because the log could not keep up.",
		}),
		Certs: NewCertExpiry("meshguard_cert", "certificates the sidecar serves and trusts", now),
		conns: map[ConnLabels]*Conn{},
	}
	for _, c := range []prometheus.Collector{s.requests, s.duration, s.reqBytes, s.respBytes,
		s.tcpSent, s.tcpReceived, s.tcpOpened, s.tcpClosed,
		s.authzDenials, s.tlsFailures, s.rotations, s.AccessLogDropped, s.Certs} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register sidecar metrics: %w", err)
		}
	}
	// Rotation results are a closed set: expose both at zero from the start so rate()
	// and alerts work before the first failure.
	s.rotations.WithLabelValues("success")
	s.rotations.WithLabelValues("failure")
	return s, nil
}

// Conn returns the recording handle for a connection's labels. The proxy calls it once
// per connection (or per peer) and keeps the handle; handles are shared between equal
// label sets, so calling it again is cheap too.
func (s *Sidecar) Conn(l ConnLabels) *Conn {
	return loadOrCreate(&s.mu, s.conns, l, func() *Conn {
		vals := l.values()
		curry := make(prometheus.Labels, len(peerLabelNames))
		for i, n := range peerLabelNames {
			curry[n] = vals[i]
		}
		return &Conn{
			istioVecs: s.curry(curry),
			children:  map[respKey]*respChildren{},
			tcp:       map[string]*tcpChildren{},
		}
	})
}

// loadOrCreate returns m[k], creating it with mk under the write lock if missing. The
// hit path takes only the read lock and allocates nothing.
func loadOrCreate[K comparable, V any](mu *sync.RWMutex, m map[K]*V, k K, mk func() *V) *V {
	mu.RLock()
	v := m[k]
	mu.RUnlock()
	if v != nil {
		return v
	}
	mu.Lock()
	defer mu.Unlock()
	if v = m[k]; v == nil {
		v = mk()
		m[k] = v
	}
	return v
}

// RecordRequest records one HTTP request for labels l: it is Conn(*l).RecordRequest(r).
func (s *Sidecar) RecordRequest(l *ConnLabels, r Request) { s.Conn(*l).RecordRequest(r) }

// AuthzDenied counts a denial by policy (Istio's RBAC policy ID, or "" when no ALLOW
// policy matched). dryRun marks a denial a dry-run policy would have made.
func (s *Sidecar) AuthzDenied(policy string, dryRun bool) {
	if policy == "" {
		policy = "none"
	}
	mode := "enforced"
	if dryRun {
		mode = "dry_run"
	}
	s.authzDenials.WithLabelValues(policy, mode).Inc()
}

// TLSHandshakeFailed counts a failed TLS handshake. direction is "inbound" or
// "outbound"; reason is a short, bounded token such as "unknown_ca",
// "bad_certificate", "peer_identity_mismatch", "peer_trust_domain_mismatch",
// "protocol_version", "timeout" — never
// the raw error text, which would explode cardinality.
func (s *Sidecar) TLSHandshakeFailed(direction, reason string) {
	s.tlsFailures.WithLabelValues(direction, reason).Inc()
}

// CertRotated counts a workload certificate renewal attempt.
func (s *Sidecar) CertRotated(ok bool) {
	if ok {
		s.rotations.WithLabelValues("success").Inc()
	} else {
		s.rotations.WithLabelValues("failure").Inc()
	}
}

// Request is what varies per HTTP request.
type Request struct {
	ResponseCode  int
	GRPCStatus    string // gRPC status code number as text; "" for non-gRPC
	ResponseFlags string // Envoy flags; "" is reported as "-"
	Duration      time.Duration
	RequestBytes  uint64 // body bytes
	ResponseBytes uint64
}

// Conn records metrics for one fixed label set; see Sidecar.Conn.
type Conn struct {
	istioVecs // curried with the connection's labels

	mu       sync.RWMutex
	children map[respKey]*respChildren
	tcp      map[string]*tcpChildren
}

type respKey struct {
	code        int
	grpc, flags string
}

type respChildren struct {
	requests            prometheus.Counter
	duration, req, resp prometheus.Observer
}

type tcpChildren struct {
	sent, received, opened, closed prometheus.Counter
}

func flagsOrDash(f string) string {
	if f == "" {
		return "-"
	}
	return f
}

// RecordRequest records one HTTP request: count, duration, request and response size.
func (c *Conn) RecordRequest(r Request) {
	k := respKey{r.ResponseCode, r.GRPCStatus, r.ResponseFlags}
	ch := loadOrCreate(&c.mu, c.children, k, func() *respChildren {
		vals := []string{strconv.Itoa(k.code), k.grpc, flagsOrDash(k.flags)}
		return &respChildren{
			requests: c.requests.WithLabelValues(vals...),
			duration: c.duration.WithLabelValues(vals...),
			req:      c.reqBytes.WithLabelValues(vals...),
			resp:     c.respBytes.WithLabelValues(vals...),
		}
	})
	ch.requests.Inc()
	ch.duration.Observe(float64(r.Duration) / float64(time.Millisecond))
	ch.req.Observe(float64(r.RequestBytes))
	ch.resp.Observe(float64(r.ResponseBytes))
}

func (c *Conn) tcpFor(flags string) *tcpChildren {
	return loadOrCreate(&c.mu, c.tcp, flags, func() *tcpChildren {
		f := flagsOrDash(flags)
		return &tcpChildren{
			sent:     c.tcpSent.WithLabelValues(f),
			received: c.tcpReceived.WithLabelValues(f),
			opened:   c.tcpOpened.WithLabelValues(f),
			closed:   c.tcpClosed.WithLabelValues(f),
		}
	})
}

// TCPOpened counts an opened TCP connection.
func (c *Conn) TCPOpened() { c.tcpFor("").opened.Inc() }

// TCPBytes adds bytes sent to and received from the downstream; the proxy may call it
// periodically on long connections, as Envoy reports them, not only at close.
func (c *Conn) TCPBytes(sent, received uint64) {
	ch := c.tcpFor("")
	ch.sent.Add(float64(sent))
	ch.received.Add(float64(received))
}

// TCPClosed counts a closed TCP connection with its response flags ("" = none).
func (c *Conn) TCPClosed(flags string) { c.tcpFor(flags).closed.Inc() }
