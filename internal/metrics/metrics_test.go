package metrics

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape serves reg through a real promhttp handler on 127.0.0.1 and parses what a
// Prometheus server would read.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: status %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return mfs
}

// find returns the metric of family name whose labels are exactly want.
func find(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("scrape has no %s", name)
	}
	var seen []map[string]string
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if cmp.Equal(got, want) {
			return m
		}
		seen = append(seen, got)
	}
	t.Fatalf("scrape has no %s%v; it has %v", name, want, seen)
	return nil
}

func withLabels(base map[string]string, extra ...string) map[string]string {
	m := make(map[string]string, len(base)+len(extra)/2)
	for k, v := range base {
		m[k] = v
	}
	for i := 0; i < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

var inbound = ConnLabels{
	Reporter: ReporterDestination,
	Source: Peer{Workload: "productpage-v1", Namespace: "bookinfo", Principal: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
		App: "productpage", Version: "v1", CanonicalService: "productpage", CanonicalRevision: "v1"},
	Destination: Peer{Workload: "reviews-v2", Namespace: "bookinfo", Principal: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
		App: "reviews", Version: "v2", CanonicalService: "reviews", CanonicalRevision: "v2", Cluster: "Kubernetes"},
	DestinationService:          "reviews.bookinfo.svc.cluster.local",
	DestinationServiceName:      "reviews",
	DestinationServiceNamespace: "bookinfo",
	RequestProtocol:             "http",
	ConnectionSecurityPolicy:    SecurityMutualTLS,
}

// inboundLabels is how Istio labels inbound: unset cluster → "unknown".
var inboundLabels = map[string]string{
	"reporter":                       "destination",
	"source_workload":                "productpage-v1",
	"source_workload_namespace":      "bookinfo",
	"source_principal":               "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
	"source_app":                     "productpage",
	"source_version":                 "v1",
	"source_cluster":                 "unknown",
	"source_canonical_service":       "productpage",
	"source_canonical_revision":      "v1",
	"destination_workload":           "reviews-v2",
	"destination_workload_namespace": "bookinfo",
	"destination_principal":          "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
	"destination_app":                "reviews",
	"destination_version":            "v2",
	"destination_service":            "reviews.bookinfo.svc.cluster.local",
	"destination_service_name":       "reviews",
	"destination_service_namespace":  "bookinfo",
	"destination_cluster":            "Kubernetes",
	"destination_canonical_service":  "reviews",
	"destination_canonical_revision": "v2",
	"request_protocol":               "http",
	"connection_security_policy":     "mutual_tls",
}

func TestSidecarMetricsScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := NewSidecar(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Conn(inbound)
	// Concurrent recording, as many connection goroutines would.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			c.RecordRequest(Request{ResponseCode: 200, Duration: 7 * time.Millisecond, RequestBytes: 0, ResponseBytes: 4200})
		})
	}
	wg.Wait()
	s.RecordRequest(&inbound, Request{ResponseCode: 200, Duration: 300 * time.Microsecond, ResponseBytes: 12})
	s.RecordRequest(&inbound, Request{ResponseCode: 503, ResponseFlags: "UF", Duration: 2 * time.Second})
	if s.Conn(inbound) != c {
		t.Error("Conn(same labels) returned a different handle")
	}

	grpcOut := inbound
	grpcOut.Reporter = ReporterSource
	grpcOut.RequestProtocol = "grpc"
	grpcOut.ConnectionSecurityPolicy = SecurityUnknown
	s.Conn(grpcOut).RecordRequest(Request{ResponseCode: 200, GRPCStatus: "14", Duration: time.Millisecond})

	tcp := ConnLabels{Reporter: ReporterDestination, Destination: Peer{Workload: "postgres", Namespace: "db"},
		RequestProtocol: "tcp", ConnectionSecurityPolicy: SecurityNone}
	tc := s.Conn(tcp)
	tc.TCPOpened()
	tc.TCPOpened()
	tc.TCPBytes(78, 84)
	tc.TCPBytes(2, 16)
	tc.TCPClosed("")
	tc.TCPClosed("UF")

	s.AuthzDenied("ns[bookinfo]-policy[deny-delete]-rule[0]", false)
	s.AuthzDenied("ns[bookinfo]-policy[deny-delete]-rule[0]", false)
	s.AuthzDenied("", false)
	s.AuthzDenied("ns[bookinfo]-policy[new-rule]-rule[0]", true)
	s.TLSHandshakeFailed("inbound", "unknown_ca")
	s.CertRotated(true)
	s.CertRotated(true)
	s.AccessLogDropped.Add(5)

	mfs := scrape(t, reg)

	ok := withLabels(inboundLabels, "response_code", "200", "grpc_response_status", "", "response_flags", "-")
	if got := find(t, mfs, "istio_requests_total", ok).GetCounter().GetValue(); got != 4 {
		t.Errorf("istio_requests_total{200} = %v, want 4", got)
	}
	fail := withLabels(inboundLabels, "response_code", "503", "grpc_response_status", "", "response_flags", "UF")
	if got := find(t, mfs, "istio_requests_total", fail).GetCounter().GetValue(); got != 1 {
		t.Errorf("istio_requests_total{503,UF} = %v, want 1", got)
	}
	h := find(t, mfs, "istio_request_duration_milliseconds", ok).GetHistogram()
	if h.GetSampleCount() != 4 || h.GetSampleSum() != 21.3 {
		t.Errorf("duration histogram count=%d sum=%v, want 4 and 21.3 ms", h.GetSampleCount(), h.GetSampleSum())
	}
	var les []float64
	cum := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		les = append(les, b.GetUpperBound())
		cum[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	if diff := cmp.Diff(append(append([]float64{}, DefaultBuckets...), math.Inf(1)), les); diff != "" {
		t.Errorf("duration buckets differ from Istio's (-want +got):\n%s", diff)
	}
	if cum[0.5] != 1 || cum[5] != 1 || cum[10] != 4 {
		t.Errorf("duration buckets le=0.5:%d le=5:%d le=10:%d, want 1, 1, 4", cum[0.5], cum[5], cum[10])
	}
	if got := find(t, mfs, "istio_response_bytes", ok).GetHistogram().GetSampleSum(); got != 3*4200+12 {
		t.Errorf("istio_response_bytes sum = %v, want %d", got, 3*4200+12)
	}
	if got := find(t, mfs, "istio_request_bytes", fail).GetHistogram().GetSampleCount(); got != 1 {
		t.Errorf("istio_request_bytes count = %v, want 1", got)
	}

	grpcLabels := withLabels(inboundLabels, "reporter", "source", "request_protocol", "grpc", "connection_security_policy", "unknown",
		"response_code", "200", "grpc_response_status", "14", "response_flags", "-")
	if got := find(t, mfs, "istio_requests_total", grpcLabels).GetCounter().GetValue(); got != 1 {
		t.Errorf("grpc istio_requests_total = %v, want 1", got)
	}

	tcpLabels := map[string]string{}
	for _, n := range peerLabelNames {
		tcpLabels[n] = "unknown"
	}
	tcpLabels = withLabels(tcpLabels, "reporter", "destination", "destination_workload", "postgres", "destination_workload_namespace", "db",
		"request_protocol", "tcp", "connection_security_policy", "none")
	noFlags := withLabels(tcpLabels, "response_flags", "-")
	for name, want := range map[string]float64{
		"istio_tcp_connections_opened_total": 2,
		"istio_tcp_connections_closed_total": 1,
		"istio_tcp_sent_bytes_total":         80,
		"istio_tcp_received_bytes_total":     100,
	} {
		if got := find(t, mfs, name, noFlags).GetCounter().GetValue(); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := find(t, mfs, "istio_tcp_connections_closed_total", withLabels(tcpLabels, "response_flags", "UF")).GetCounter().GetValue(); got != 1 {
		t.Errorf("closed{UF} = %v, want 1", got)
	}

	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"meshguard_authz_denials_total", map[string]string{"policy": "ns[bookinfo]-policy[deny-delete]-rule[0]", "mode": "enforced"}, 2},
		{"meshguard_authz_denials_total", map[string]string{"policy": "none", "mode": "enforced"}, 1},
		{"meshguard_authz_denials_total", map[string]string{"policy": "ns[bookinfo]-policy[new-rule]-rule[0]", "mode": "dry_run"}, 1},
		{"meshguard_tls_handshake_failures_total", map[string]string{"direction": "inbound", "reason": "unknown_ca"}, 1},
		{"meshguard_cert_rotations_total", map[string]string{"result": "success"}, 2},
		{"meshguard_cert_rotations_total", map[string]string{"result": "failure"}, 0},
		{"meshguard_accesslog_dropped_entries_total", map[string]string{}, 5},
	} {
		if got := find(t, mfs, tc.name, tc.labels).GetCounter().GetValue(); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

// testCert makes a certificate with the given identity and lifetime.
func testCert(t *testing.T, spiffeID string, notAfter time.Time, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(spiffeID)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "cn"}, URIs: []*url.URL{u},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCertExpiryComputedAtScrape(t *testing.T) {
	now := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	reg := prometheus.NewRegistry()
	s, err := NewSidecar(reg, clock)
	if err != nil {
		t.Fatal(err)
	}
	workload := testCert(t, "spiffe://cluster.local/ns/shop/sa/cart", now.Add(12*time.Hour), 0xabc)
	s.Certs.Set("workload", RoleWorkload, workload)
	s.Certs.SetBundle("root", RoleRoot, []*x509.Certificate{
		testCert(t, "spiffe://cluster.local", now.Add(90*24*time.Hour), 1),
		testCert(t, "spiffe://cluster.local", now.Add(400*24*time.Hour), 2),
	})
	wl := map[string]string{"cert": "workload", "role": "workload", "identity": "spiffe://cluster.local/ns/shop/sa/cart", "serial": "abc"}

	mfs := scrape(t, reg)
	if got := find(t, mfs, "meshguard_cert_expiry_remaining_seconds", wl).GetGauge().GetValue(); got != 12*3600 {
		t.Errorf("remaining = %v, want %v", got, 12*3600)
	}
	if got := find(t, mfs, "meshguard_cert_expiry_timestamp_seconds", wl).GetGauge().GetValue(); got != float64(now.Add(12*time.Hour).Unix()) {
		t.Errorf("timestamp = %v", got)
	}

	// Nobody touches the collector; the clock moves; the next scrape is right.
	mu.Lock()
	now = now.Add(13 * time.Hour)
	mu.Unlock()
	mfs = scrape(t, reg)
	if got := find(t, mfs, "meshguard_cert_expiry_remaining_seconds", wl).GetGauge().GetValue(); got != -3600 {
		t.Errorf("remaining after expiry = %v, want -3600", got)
	}
	if n := len(mfs["meshguard_cert_expiry_remaining_seconds"].GetMetric()); n != 3 {
		t.Errorf("%d expiry series, want 3 (workload + 2 roots)", n)
	}

	// Root rotation shrinks the bundle; removed certificates disappear.
	s.Certs.SetBundle("root", RoleRoot, []*x509.Certificate{testCert(t, "spiffe://cluster.local", now.Add(400*24*time.Hour), 2)})
	s.Certs.Set("workload", RoleWorkload, nil)
	mfs = scrape(t, reg)
	find(t, mfs, "meshguard_cert_expiry_remaining_seconds", map[string]string{"cert": "root-0", "role": "root", "identity": "spiffe://cluster.local", "serial": "2"})
	if n := len(mfs["meshguard_cert_expiry_remaining_seconds"].GetMetric()); n != 1 {
		t.Errorf("%d expiry series after rotation, want 1", n)
	}
}

func TestControlPlaneMetricsScrape(t *testing.T) {
	now := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	reg := prometheus.NewRegistry()
	cp, err := NewControlPlane(reg, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		cp.CertIssued()
	}
	cp.CertRefused(RefusedAuthentication)
	cp.CertRefused(RefusedAuthentication)
	cp.CertRefused(RefusedTTL)
	cp.SidecarConnected()
	cp.SidecarConnected()
	cp.SidecarDisconnected()
	cp.Pushed("security.istio.io/v1/AuthorizationPolicy")
	cp.Pushed("security.istio.io/v1/AuthorizationPolicy")
	cp.NACKed("security.istio.io/v1/AuthorizationPolicy")
	cp.ConfigRejected("PeerAuthentication")
	cp.Certs.Set("intermediate", RoleIntermediate, testCert(t, "spiffe://cluster.local/ca/intermediate", now.Add(29*24*time.Hour), 7))

	mfs := scrape(t, reg)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"meshguard_ca_certificates_issued_total", map[string]string{}, 3},
		{"meshguard_ca_certificates_refused_total", map[string]string{"reason": "authentication"}, 2},
		{"meshguard_ca_certificates_refused_total", map[string]string{"reason": "ttl"}, 1},
		{"meshguard_ca_certificates_refused_total", map[string]string{"reason": "signing"}, 0},
		{"meshguard_xds_pushes_total", map[string]string{"type": "security.istio.io/v1/AuthorizationPolicy"}, 2},
		{"meshguard_xds_nacks_total", map[string]string{"type": "security.istio.io/v1/AuthorizationPolicy"}, 1},
		{"meshguard_config_errors_total", map[string]string{"kind": "PeerAuthentication"}, 1},
	} {
		if got := find(t, mfs, tc.name, tc.labels).GetCounter().GetValue(); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if got := find(t, mfs, "meshguard_xds_connected_sidecars", map[string]string{}).GetGauge().GetValue(); got != 1 {
		t.Errorf("connected sidecars = %v, want 1", got)
	}
	im := map[string]string{"cert": "intermediate", "role": "intermediate", "identity": "spiffe://cluster.local/ca/intermediate", "serial": "7"}
	if got := find(t, mfs, "meshguard_ca_cert_expiry_remaining_seconds", im).GetGauge().GetValue(); got != 29*24*3600 {
		t.Errorf("intermediate remaining = %v", got)
	}
}

func TestRegisterTwiceFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewSidecar(reg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSidecar(reg, nil); err == nil {
		t.Error("second NewSidecar on one registry = nil error, want a duplicate-registration error")
	}
	if _, err := NewControlPlane(reg, nil); err != nil {
		t.Errorf("NewControlPlane next to a sidecar: %v (names must not collide)", err)
	}
}

func BenchmarkRecordRequest(b *testing.B) {
	s, err := NewSidecar(prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	r := Request{ResponseCode: 200, Duration: 3 * time.Millisecond, RequestBytes: 120, ResponseBytes: 4096}
	b.Run("conn-handle", func(b *testing.B) {
		c := s.Conn(inbound)
		b.ReportAllocs()
		for b.Loop() {
			c.RecordRequest(r)
		}
	})
	b.Run("conn-handle-parallel", func(b *testing.B) {
		c := s.Conn(inbound)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.RecordRequest(r)
			}
		})
	})
	b.Run("labels-lookup", func(b *testing.B) {
		l := inbound
		b.ReportAllocs()
		for b.Loop() {
			s.RecordRequest(&l, r)
		}
	})
}
