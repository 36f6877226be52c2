package controlplane_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/controlplane"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/metrics"
	"github.com/meshguard/meshguard/internal/xds"
)

// observed is a control plane with a config push, metrics and the admin endpoint.
type observed struct {
	cp        *meshtest.ControlPlane
	configDir string
	admin     string // http://host:port
}

func startObserved(t *testing.T) *observed {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "httpbin.yaml"), []byte(pushPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := metrics.NewControlPlane(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	push, err := controlplane.NewPush(controlplane.PushConfig{ConfigDir: dir, Observer: m})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{
		Register: []func(*grpc.Server){push.Register}, Push: push, Metrics: m,
		Admin: controlplane.AdminConfig{Listener: lis, Gatherer: reg},
	})
	o := &observed{cp: cp, configDir: dir, admin: "http://" + lis.Addr().String()}
	o.waitFor(t, "ready", func() bool { code, _ := get(t, o.admin+"/healthz/ready"); return code == http.StatusOK })
	return o
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

func (o *observed) scrape(t *testing.T) string {
	t.Helper()
	code, body := get(t, o.admin+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d:\n%s", code, body)
	}
	return body
}

func (o *observed) waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var labelRE = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

// sample returns the value of the first sample of name in a text exposition whose
// labels include want, and whether there is one.
func sample(body, name string, want map[string]string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels := map[string]string{}
		if rest[0] == '{' {
			end := strings.LastIndex(rest, "}")
			for _, m := range labelRE.FindAllStringSubmatch(rest[:end], -1) {
				labels[m[1]] = m[2]
			}
			rest = rest[end+1:]
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		return v, err == nil
	}
	return 0, false
}

// TestMetricsScrape drives the real control plane — CSRs over its CA service, sidecars
// over xDS, a NACK, a refused config file — and checks the counts and labels on
// /metrics.
func TestMetricsScrape(t *testing.T) {
	o := startObserved(t)
	cp := o.cp
	conn := cp.Dial(t, nil)
	httpbin := issue(t, cp, "default", "httpbin")
	sleep := issue(t, cp, "default", "sleep")
	token := cp.Token(t, "default", "web", time.Hour)
	impersonate, _ := structpb.NewStruct(map[string]any{"ImpersonatedIdentity": "spiffe://cluster.local/ns/default/sa/admin"})
	for _, r := range []struct {
		name, token, csr string
		ttl              time.Duration
		md               *structpb.Struct
	}{
		{"no token", "", newCSR(t, nil, "").pem, time.Hour, nil},
		{"forged token", token + "x", newCSR(t, nil, "").pem, time.Hour, nil},
		{"empty CSR", token, "", time.Hour, nil},
		{"negative TTL", token, newCSR(t, nil, "").pem, -time.Hour, nil},
		{"impersonation", token, newCSR(t, nil, "").pem, time.Hour, impersonate},
	} {
		if _, err := call(t, conn, r.token, r.csr, r.ttl, r.md); err == nil {
			t.Fatalf("%s: CreateCertificate succeeded, want a refusal", r.name)
		}
	}

	// One sidecar through the real xDS client, one raw stream that NACKs.
	side := meshtest.StartXDSClient(t, cp.Dial(t, httpbin), xds.Node{ID: "httpbin-1", WorkloadName: "httpbin", Labels: map[string]string{"app": "httpbin"}})
	side.WaitFor(t, "config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(cp.Dial(t, sleep)).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &core.Node{Id: "sleep-1"}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: xds.TypeAuthorizationPolicy}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: xds.TypeAuthorizationPolicy, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: "test sidecar rejects everything"}}); err != nil {
		t.Fatal(err)
	}

	// A file that fails validation is refused; the last good config stays.
	bad := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: bad, namespace: default}\nspec: {action: DENY, rules: [{from: []}]}\n"
	if err := os.WriteFile(filepath.Join(o.configDir, "bad.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	configErrors := map[string]string{"kind": "AuthorizationPolicy"}
	nacks := map[string]string{"type": xds.TypeAuthorizationPolicy}
	o.waitFor(t, "NACK and config error counted", func() bool {
		body := o.scrape(t)
		n, _ := sample(body, "meshguard_xds_nacks_total", nacks)
		e, _ := sample(body, "meshguard_config_errors_total", configErrors)
		return n == 1 && e == 1
	})

	body := o.scrape(t)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"meshguard_ca_certificates_issued_total", nil, 2},
		{"meshguard_ca_certificates_refused_total", map[string]string{"reason": metrics.RefusedAuthentication}, 2},
		{"meshguard_ca_certificates_refused_total", map[string]string{"reason": metrics.RefusedCSRInvalid}, 1},
		{"meshguard_ca_certificates_refused_total", map[string]string{"reason": metrics.RefusedTTL}, 1},
		{"meshguard_ca_certificates_refused_total", map[string]string{"reason": metrics.RefusedIdentity}, 1},
		{"meshguard_ca_certificates_refused_total", map[string]string{"reason": metrics.RefusedSigning}, 0},
		{"meshguard_xds_connected_sidecars", nil, 2},
		// The client subscribes to every type and gets each once; the raw stream one.
		{"meshguard_xds_pushes_total", map[string]string{"type": xds.TypeAuthorizationPolicy}, 2},
		{"meshguard_xds_pushes_total", map[string]string{"type": xds.TypePeerAuthentication}, 1},
		{"meshguard_xds_nacks_total", nacks, 1},
		{"meshguard_config_errors_total", configErrors, 1},
	} {
		t.Run(tc.name+labelString(tc.labels), func(t *testing.T) {
			got, ok := sample(body, tc.name, tc.labels)
			if !ok || got != tc.want {
				t.Errorf("%s%v = %v (present %v), want %v", tc.name, tc.labels, got, ok, tc.want)
			}
		})
	}
	t.Run("CA certificate expiry", func(t *testing.T) {
		root, ok := sample(body, "meshguard_ca_cert_expiry_remaining_seconds", map[string]string{"cert": "root-0", "role": "root"})
		if !ok || root < 365*24*3600 {
			t.Errorf("root expiry remaining = %v (present %v), want the self-signed root's years", root, ok)
		}
		serving, ok := sample(body, "meshguard_ca_cert_expiry_remaining_seconds",
			map[string]string{"cert": "serving", "role": "serving", "identity": "spiffe://cluster.local/ns/meshguard-system/sa/meshguard"})
		if !ok || serving <= 0 || serving > controlplane.ServingTTL.Seconds() {
			t.Errorf("serving expiry remaining = %v (present %v), want within the serving TTL", serving, ok)
		}
		if _, ok := sample(body, "meshguard_ca_cert_expiry_remaining_seconds", map[string]string{"role": "intermediate"}); ok {
			t.Error("a self-signed CA reports an intermediate")
		}
	})

	// A sidecar that goes away is no longer counted.
	side.Stop()
	o.waitFor(t, "sidecar disconnect counted", func() bool {
		n, _ := sample(o.scrape(t), "meshguard_xds_connected_sidecars", nil)
		return n == 1
	})
}

func labelString(l map[string]string) string {
	if len(l) == 0 {
		return ""
	}
	var parts []string
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	return "{" + strings.Join(parts, ",") + "}"
}
