package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/meshtest"
)

func TestSidecarCommandFlags(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(root, meshtest.NewCA(t, "cluster.local").RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"sidecar", "--controlplane", "127.0.0.1:1", "--ca-root", root, "--token-file", "tok",
		"--workload", "web", "--namespace", "default"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no app", base, "--app is required"},
		{"no workload", []string{"sidecar", "--controlplane", "127.0.0.1:1", "--ca-root", root, "--token-file", "tok", "--namespace", "default", "--app", "127.0.0.1:8080"}, "--workload is required"},
		{"app without port", append(base, "--app", "127.0.0.1"), `--app "127.0.0.1"`},
		{"app not an IP", append(base, "--app", "localhost:80"), `--app "localhost:80"`},
		{"outbound without local port", append(base, "--app", "127.0.0.1:80", "--outbound", "reviews:9080"), "HOST:PORT=LOCAL_PORT"},
		{"outbound bad port", append(base, "--app", "127.0.0.1:80", "--outbound", "reviews:0=19080"), "destination port"},
		{"bad labels", append(base, "--app", "127.0.0.1:80", "--labels", "app"), "--labels"},
		{"bad memory limit", append(base, "--app", "127.0.0.1:80", "--memory-limit", "lots", "--admin", ""), "--memory-limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Run(context.Background(), tc.args, &stdout, &stderr)
			if code == 0 || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("meshguard %s: exit %d, stderr %q; want a failure mentioning %q", strings.Join(tc.args, " "), code, stderr.String(), tc.want)
			}
		})
	}
}

// freePort returns a loopback port that was free a moment ago (the command binds by
// flag, so the test cannot hand it a listener).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// e2ePolicies are the test's policies beside meshtest.EchoMeshYAML.
const e2ePolicies = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-all, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: AUDIT
  rules: [{to: [{operation: {paths: ["/audited"]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  jwtRules: [{issuer: "ISSUER", jwksUri: "JWKS"}]
---
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  meshConfig:
    accessLogFile: ACCESS_LOG
    accessLogFormat: "[%START_TIME%] %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% -> %RESPONSE_CODE%\n"
`

// runningSidecar is one `meshguard sidecar` command running in this process.
type runningSidecar struct {
	admin     string
	accessLog string
	stop      func() int
	stderr    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startSidecarCmd(t *testing.T, cp *meshtest.ControlPlane, mesh, sa string, args ...string) *runningSidecar {
	t.Helper()
	dir := t.TempDir()
	cfgDir := filepath.Join(dir, "config")
	if err := os.Mkdir(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &runningSidecar{admin: "127.0.0.1:" + strconv.Itoa(freePort(t)), accessLog: filepath.Join(dir, "access.log"), stderr: &syncBuffer{}}
	mesh = strings.ReplaceAll(mesh, "ACCESS_LOG", s.accessLog)
	if err := os.WriteFile(filepath.Join(cfgDir, "mesh.yaml"), []byte(mesh), 0o644); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(cp.Token(t, "default", sa, time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	all := append([]string{"sidecar", "--controlplane", cp.Addr, "--ca-root", cp.RootCertPath, "--token-file", tok,
		"--workload", sa, "--namespace", "default", "--service-account", sa, "--labels", "app=" + sa + ",version=v1",
		"--config-dir", cfgDir, "--admin", s.admin, "--drain-timeout", "1s", "--log-level", "warn"}, args...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- Run(ctx, all, io.Discard, s.stderr) }()
	var once sync.Once
	code := -1
	s.stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(15 * time.Second):
				t.Errorf("meshguard sidecar %s did not stop within 15s", sa)
			}
		})
		return code
	}
	t.Cleanup(func() { s.stop() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + s.admin + "/healthz/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		select {
		case c := <-done:
			t.Fatalf("meshguard sidecar %s exited %d before ready: %s", sa, c, s.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshguard sidecar %s not ready after 20s: %v; stderr: %s", sa, err, s.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricLine matches one sample of the Prometheus text format.
var metricLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// scrape sums the samples of name whose labels include want.
func scrape(t *testing.T, admin, name string, want map[string]string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", admin, err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := metricLine.FindStringSubmatch(sc.Text())
		if m == nil || m[1] != name {
			continue
		}
		got := map[string]string{}
		for _, lp := range labelPair.FindAllStringSubmatch(m[2], -1) {
			got[lp[1]] = lp[2]
		}
		match := true
		for k, v := range want {
			if got[k] != v {
				match = false
			}
		}
		if match {
			v, _ := strconv.ParseFloat(m[3], 64)
			sum += v
		}
	}
	return sum
}

// TestSidecarCommandEndToEnd runs two `meshguard sidecar` commands (the real command
// wiring: agent, directory store, proxy, access log, metrics, admin) against a real
// control plane, with echo apps: mTLS between them, STRICT refusing plaintext, an
// authorization denial, a JWT refusal, the seeds' access-log format, and a /metrics
// scrape after the traffic.
func TestSidecarCommandEndToEnd(t *testing.T) {
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	echo := meshtest.StartEcho(t)
	jwks := meshtest.NewJWKSServer(t)
	serverInbound := freePort(t)
	clientOut := freePort(t)
	mesh := meshtest.EchoMeshYAML(serverInbound) + "---\n" + strings.NewReplacer("ISSUER", jwks.Issuer(), "JWKS", jwks.JWKSURI()).Replace(e2ePolicies)

	server := startSidecarCmd(t, cp, mesh, "server", "--app", echo.Addr.String(), "--inbound-port", strconv.Itoa(serverInbound), "--outbound-port", strconv.Itoa(freePort(t)))
	client := startSidecarCmd(t, cp, mesh, "client", "--app", "127.0.0.1:1", "--inbound-port", strconv.Itoa(freePort(t)),
		"--outbound", fmt.Sprintf("echo.default.svc.cluster.local:80=%d", clientOut))
	base := fmt.Sprintf("http://127.0.0.1:%d", clientOut)
	hc := &http.Client{Timeout: 10 * time.Second}

	do := func(path string, hdr map[string]string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	for _, tc := range []struct {
		name, path string
		hdr        map[string]string
		status     int
		body       string
	}{
		{"mTLS through both sidecars", "/allowed", nil, 200, ""},
		{"a second request on the pooled connection", "/allowed", nil, 200, ""},
		{"AUDIT marks and allows", "/audited", nil, 200, ""},
		{"DENY policy answers 403", "/admin/x", nil, 403, "RBAC: access denied"},
		{"invalid JWT answers 401", "/allowed", map[string]string{"Authorization": "Bearer not-a-jwt"}, 401, ""},
		{"valid JWT passes", "/allowed", map[string]string{"Authorization": "Bearer " + jwks.Mint(meshtest.Claims{})}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, h := do(tc.path, tc.hdr)
			if status != tc.status || (tc.body != "" && body != tc.body) {
				t.Fatalf("GET %s = %d %q, want %d %q", tc.path, status, body, tc.status, tc.body)
			}
			if status == 200 && !strings.Contains(h.Get("X-Echo-Xfcc"), "URI=spiffe://cluster.local/ns/default/sa/client") {
				t.Errorf("GET %s: app saw XFCC %q, want the client's SPIFFE ID", tc.path, h.Get("X-Echo-Xfcc"))
			}
		})
	}

	t.Run("STRICT refuses a plaintext client", func(t *testing.T) {
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/allowed", serverInbound))
		if err == nil {
			resp.Body.Close()
			t.Fatalf("plaintext GET to the STRICT inbound = %d, want the connection refused", resp.StatusCode)
		}
	})

	t.Run("access log in the seeds' format", func(t *testing.T) {
		line := regexp.MustCompile(`^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] GET (\S+) -> (\d+)$`)
		want := []string{"/allowed -> 200", "/allowed -> 200", "/audited -> 200", "/admin/x -> 403", "/allowed -> 401", "/allowed -> 200"}
		var got []string
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, _ := os.ReadFile(server.accessLog)
			got = got[:0]
			for l := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
				if m := line.FindStringSubmatch(l); m != nil {
					got = append(got, m[1]+" -> "+m[2])
				} else if l != "" {
					t.Fatalf("access-log line %q is not in the seeds' format", l)
				}
			}
			if len(got) >= len(want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		// Requests multiplexed on one connection are concurrent streams at the server
		// sidecar: each is logged when it ends, so the order of lines is not the order
		// the client sent them in. Compare them as a multiset.
		slices.Sort(got)
		slices.Sort(want)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("server access log (sorted):\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		// The client sidecar writes its log asynchronously too, and finishes each entry
		// after the server's: wait for it as well.
		var b []byte
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			b, _ = os.ReadFile(client.accessLog)
			if strings.Count(string(b), "\n") >= len(want) || time.Now().After(deadline) {
				break
			}
		}
		if strings.Count(string(b), "\n") != len(want) {
			t.Errorf("client access log has %d lines, want %d:\n%s", strings.Count(string(b), "\n"), len(want), b)
		}
	})

	t.Run("metrics after the traffic", func(t *testing.T) {
		clientID, serverID := "spiffe://cluster.local/ns/default/sa/client", "spiffe://cluster.local/ns/default/sa/server"
		for _, tc := range []struct {
			admin, name string
			labels      map[string]string
			want        float64
		}{
			{server.admin, "istio_requests_total", map[string]string{"reporter": "destination", "response_code": "200",
				"source_principal": clientID, "destination_principal": serverID, "destination_workload": "server",
				"destination_app": "server", "destination_version": "v1", "source_workload_namespace": "default",
				"connection_security_policy": "mutual_tls", "request_protocol": "http"}, 4},
			{server.admin, "istio_requests_total", map[string]string{"reporter": "destination", "response_code": "403"}, 1},
			{server.admin, "istio_requests_total", map[string]string{"reporter": "destination", "response_code": "401"}, 1},
			{server.admin, "meshguard_authz_denials_total", map[string]string{"policy": "ns[default]-policy[deny-admin]-rule[0]", "mode": "enforced"}, 1},
			{server.admin, "meshguard_tls_handshake_failures_total", map[string]string{"direction": "inbound", "reason": "plaintext_to_strict"}, 1},
			{client.admin, "istio_requests_total", map[string]string{"reporter": "source", "response_code": "200",
				"source_workload": "client", "source_principal": clientID, "destination_principal": serverID,
				"destination_service": "echo.default.svc.cluster.local", "destination_service_name": "echo",
				"destination_service_namespace": "default", "connection_security_policy": "unknown"}, 4},
			{client.admin, "meshguard_cert_expiry_remaining_seconds", map[string]string{"cert": "workload", "identity": clientID}, -1},
		} {
			got := scrape(t, tc.admin, tc.name, tc.labels)
			if tc.want < 0 {
				if got < 3000 {
					t.Errorf("%s%v = %v, want the workload certificate's remaining lifetime", tc.name, tc.labels, got)
				}
				continue
			}
			if got != tc.want {
				t.Errorf("%s%v on %s = %v, want %v", tc.name, tc.labels, tc.admin, got, tc.want)
			}
		}
	})

	t.Run("SIGTERM drains and exits 0", func(t *testing.T) {
		if code := client.stop(); code != 0 {
			t.Errorf("client sidecar exit = %d, want 0; stderr: %s", code, client.stderr)
		}
		if code := server.stop(); code != 0 {
			t.Errorf("server sidecar exit = %d, want 0; stderr: %s", code, server.stderr)
		}
	})
}
