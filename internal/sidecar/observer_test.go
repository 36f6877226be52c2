package sidecar

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/meshguard/meshguard/internal/metrics"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/proxy"
)

func TestRBACID(t *testing.T) {
	for _, tc := range []struct {
		policy string
		rule   int
		want   string
	}{
		{"foo/deny-get", 0, "ns[foo]-policy[deny-get]-rule[0]"},
		{"istio-system/allow", 3, "ns[istio-system]-policy[allow]-rule[3]"},
		{"", 0, ""},
	} {
		if got := rbacID(tc.policy, tc.rule); got != tc.want {
			t.Errorf("rbacID(%q, %d) = %q, want %q", tc.policy, tc.rule, got, tc.want)
		}
	}
}

func TestFormatHeaders(t *testing.T) {
	got := formatHeaders(`[%START_TIME%] %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(user-agent)% %REQUEST_HEADER(X-Request-Id)% %REQ(HOST)% %REQ(User-Agent)%`)
	want := []string{"X-Envoy-Original-Path", "User-Agent", "X-Request-Id"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("formatHeaders = %v, want %v", got, want)
	}
}

// TestAccessLogReopenAndSwap: the access log follows MeshConfig (a new format applies
// to the next entry), a bad format is refused before anything changes, and a reopen
// (SIGHUP) after logrotate moved the file writes to a new file at the configured path.
func TestAccessLogReopenAndSwap(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	m, err := metrics.NewSidecar(prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	obs := newObserver(m, policy.Workload{Namespace: "default", Name: "web"})
	ctx, cancel := context.WithCancel(context.Background())
	reopen := make(chan struct{})
	logs := &accessLogs{obs: obs, log: discard(), ctx: ctx}
	done := make(chan error, 1)
	go func() { done <- logs.Run(ctx, reopen) }()
	defer func() { cancel(); <-done }()

	apply := func(format string) error {
		p, err := logs.prepare(&meshv1alpha1.MeshConfig{AccessLogFile: path, AccessLogFormat: format})
		if err != nil {
			return err
		}
		logs.swap(p)
		return nil
	}
	rec := func(path string) *proxy.Record {
		return &proxy.Record{Direction: proxy.Inbound, Protocol: "http/1.1", Start: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
			Method: "GET", Path: path, Status: 200, Source: netip.MustParseAddrPort("10.0.0.1:5555")}
	}
	waitFor := func(file, want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, _ := os.ReadFile(file)
			if strings.Contains(string(b), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %q, want it to contain %q", file, b, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := apply("%REQ(:METHOD)% %REQ(:PATH)% -> %RESPONSE_CODE%"); err != nil {
		t.Fatal(err)
	}
	obs.Observe(rec("/one"))
	waitFor(path, "GET /one -> 200\n")

	if err := apply("%NOT_AN_OPERATOR%"); err == nil {
		t.Fatal("a format with an unknown operator was accepted")
	}
	obs.Observe(rec("/two"))
	waitFor(path, "GET /two -> 200\n") // the last good format stays

	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	reopen <- struct{}{}
	// The writer reopens asynchronously: entries logged before it has are still
	// written to the moved file, as with any logrotate "create" rotation.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("access log not reopened at its path 5s after the reopen signal")
		}
	}
	obs.Observe(rec("/three"))
	waitFor(path, "GET /three -> 200\n")
	if b, _ := os.ReadFile(path + ".1"); strings.Contains(string(b), "/three") {
		t.Errorf("entry after the reopen went to the rotated file")
	}

	if err := apply("%DOWNSTREAM_REMOTE_ADDRESS% %REQ(:PATH)%"); err != nil {
		t.Fatal(err)
	}
	obs.Observe(rec("/four"))
	waitFor(path, "10.0.0.1:5555 /four\n")
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestServiceLabelIsBounded: destination_service comes from the registry, never from
// what a client sends. Varying the Host header must not create a metric series per
// value (a caller could otherwise exhaust the sidecar's memory, istio#18818).
func TestServiceLabelIsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.NewSidecar(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	obs := newObserver(m, policy.Workload{Namespace: "default", Name: "reviews"})
	obs.setServices([]proxy.Service{{Host: "reviews.default.svc.cluster.local"}})
	for _, host := range []string{"a.example", "b.example", "c.example:8080", "Reviews.default.svc.cluster.local:9080", "reviews.default.svc.cluster.local"} {
		obs.Observe(&proxy.Record{Direction: proxy.Inbound, Protocol: "http/1.1", Authority: host, Status: 200})
	}
	obs.Observe(&proxy.Record{Direction: proxy.Outbound, Protocol: "http/1.1", Host: "random-1.example", Status: 200})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "istio_requests_total" {
			continue
		}
		for _, mm := range mf.GetMetric() {
			for _, lp := range mm.GetLabel() {
				if lp.GetName() == "destination_service" {
					got[lp.GetValue()] += mm.GetCounter().GetValue()
				}
			}
		}
	}
	want := map[string]float64{"reviews.default.svc.cluster.local": 2, "unknown": 4}
	if len(got) != len(want) || got["reviews.default.svc.cluster.local"] != 2 || got["unknown"] != 4 {
		t.Errorf("istio_requests_total by destination_service = %v, want %v", got, want)
	}
}

func TestServiceLabels(t *testing.T) {
	tests := []struct{ host, name, ns string }{
		{"reviews.default.svc.cluster.local", "reviews", "default"},
		{"reviews.default.svc", "reviews", "default"},
		{"reviews.default", "reviews", ""},
		{"reviews", "reviews", ""},
		{"api.example.com", "api", ""},
		{"a.b.svcx", "a", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			name, ns := serviceLabels(tt.host)
			if name != tt.name || ns != tt.ns {
				t.Errorf("serviceLabels(%q) = %q, %q; want %q, %q", tt.host, name, ns, tt.name, tt.ns)
			}
		})
	}
}

// TestURICacheBounded: the cache answers the same URI as building it, and stops
// growing at maxCachedURIs (a caller presenting many identities cannot grow it).
func TestURICacheBounded(t *testing.T) {
	var c uriCache
	if got := c.uri(""); got != "" {
		t.Errorf(`uri("") = %q, want ""`, got)
	}
	for i := range maxCachedURIs + 10 {
		p := "cluster.local/ns/default/sa/sa-" + strconv.Itoa(i)
		if got, want := c.uri(p), "spiffe://"+p; got != want {
			t.Fatalf("uri(%q) = %q, want %q", p, got, want)
		}
	}
	if n := len(*c.m.Load()); n != maxCachedURIs {
		t.Errorf("cache holds %d URIs, want the bound %d", n, maxCachedURIs)
	}
}

// TestObserveMetricsAllocs: recording a request's metrics allocates nothing once its
// series exists; it runs on the data path for every request, and each allocation
// there makes the collector run more often under load.
func TestObserveMetricsAllocs(t *testing.T) {
	m, err := metrics.NewSidecar(prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	obs := newObserver(m, policy.Workload{Namespace: "default", Name: "web", Labels: map[string]string{"app": "web"}})
	obs.setServices([]proxy.Service{{Host: "reviews.default.svc.cluster.local"}})
	for _, r := range []*proxy.Record{
		{Direction: proxy.Outbound, Protocol: "http/1.1", Host: "reviews.default.svc.cluster.local:9080", Status: 200,
			LocalPrincipal: "cluster.local/ns/default/sa/web", PeerPrincipal: "cluster.local/ns/default/sa/reviews"},
		{Direction: proxy.Inbound, Protocol: "http/1.1", Authority: "reviews.default.svc.cluster.local", Status: 200, TLSVersion: 0x0304,
			LocalPrincipal: "cluster.local/ns/default/sa/reviews", SourcePrincipal: "cluster.local/ns/default/sa/web"},
	} {
		t.Run(r.Direction.String(), func(t *testing.T) {
			obs.record(r) // creates the series
			if n := testing.AllocsPerRun(100, func() { obs.record(r) }); n != 0 {
				t.Errorf("record allocates %.1f times per request, want 0", n)
			}
		})
	}
}
