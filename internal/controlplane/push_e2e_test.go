package controlplane_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/meshguard/meshguard/internal/agent"
	"github.com/meshguard/meshguard/internal/controlplane"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/pki"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/proxy"
	"github.com/meshguard/meshguard/internal/sidecar"
)

// e2ePolicy allows the client to call the server and denies the given paths.
func e2ePolicy(deny ...string) string {
	p := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-allow, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/default/sa/client"]}}]}]
`
	if len(deny) > 0 {
		p += fmt.Sprintf(`---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-deny, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules: [{to: [{operation: {paths: [%q]}}]}]
`, strings.Join(deny, `", "`))
	}
	return p
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(b []byte) (int, error) { w.tb.Logf("%s", b); return len(b), nil }

func tbLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// pushMesh is a control plane serving a watched config directory, and two real
// sidecars (agent, xDS client, proxy: what `meshguard sidecar` runs) of an echo app
// and its client, configured only by the push.
type pushMesh struct {
	tb        testing.TB
	dataDir   string
	configDir string
	addr      string
	push      *controlplane.Push
	stopCP    func()
	// base is the client sidecar's outbound listener for echo.default.svc.cluster.local:80.
	base string
}

// startCP runs the control plane on m.addr (the same address on a restart, as sidecars
// know only that) with m.dataDir, so its CA root survives restarts.
func (m *pushMesh) startCP() {
	tb := m.tb
	tb.Helper()
	var lis net.Listener
	var err error
	for range 100 { // the previous instance's socket may still be closing
		if lis, err = net.Listen("tcp", m.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		tb.Fatalf("listen %s: %v", m.addr, err)
	}
	log := tbLogger(tb)
	push, err := controlplane.NewPush(controlplane.PushConfig{ConfigDir: m.configDir, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	cp, err := controlplane.New(controlplane.Config{DataDir: m.dataDir, Listener: lis, Register: []func(*grpc.Server){push.Register}, Push: push, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- controlplane.Serve(ctx, cp, push) }()
	stopped := false
	m.push = push
	m.stopCP = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("control plane: %v", err)
			}
		case <-time.After(15 * time.Second):
			tb.Errorf("control plane did not stop within 15s")
		}
	}
	tb.Cleanup(m.stopCP)
}

// startSidecar runs sidecar.RunProcess for default/sa with the given proxy settings and
// waits until it is ready (certificate and first config applied).
func (m *pushMesh) startSidecar(sa string, pc proxy.Config) {
	tb := m.tb
	tb.Helper()
	cp := &meshtest.ControlPlane{Addr: m.addr, DataDir: m.dataDir, TrustDomain: controlplane.DefaultTrustDomain}
	tok := filepath.Join(tb.TempDir(), "token")
	if err := os.WriteFile(tok, []byte(cp.Token(tb, "default", sa, time.Hour)), 0o600); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(m.dataDir, controlplane.RootCertFile))
	if err != nil {
		tb.Fatal(err)
	}
	roots, err := pki.ParseCertsPEM(b)
	if err != nil {
		tb.Fatal(err)
	}
	admin := make(chan net.Addr, 1)
	log := tbLogger(tb).With("sidecar", sa)
	pc.DrainTimeout = 100 * time.Millisecond
	cfg := sidecar.ProcessConfig{
		Sidecar: sidecar.Config{
			Workload:  policy.Workload{Namespace: "default", Name: sa, ServiceAccount: sa, Labels: map[string]string{"app": sa}},
			Proxy:     pc,
			AdminAddr: "127.0.0.1:0", AdminListening: func(a net.Addr) { admin <- a },
			AccessLogStdout: io.Discard, Logger: log,
		},
		Agent: agent.Config{ControlPlane: m.addr, CARoots: roots, TokenFile: tok, Logger: log, RetryInitial: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sidecar.RunProcess(ctx, cfg) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("sidecar %s: %v", sa, err)
			}
		case <-time.After(15 * time.Second):
			tb.Errorf("sidecar %s did not stop within 15s", sa)
		}
	})
	var a net.Addr
	select {
	case a = <-admin:
	case err := <-done:
		tb.Fatalf("sidecar %s stopped: %v", sa, err)
	case <-time.After(15 * time.Second):
		tb.Fatalf("sidecar %s: admin not listening within 15s", sa)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + a.String() + "/healthz/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("sidecar %s not ready within 15s (last: %v)", sa, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeConfig saves a config file atomically, as editors and sync tools do.
func (m *pushMesh) writeConfig(name, data string) {
	m.tb.Helper()
	tmp := filepath.Join(m.configDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		m.tb.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.configDir, name)); err != nil {
		m.tb.Fatal(err)
	}
}

func startPushMesh(tb testing.TB) *pushMesh {
	tb.Helper()
	m := &pushMesh{tb: tb, dataDir: tb.TempDir(), configDir: tb.TempDir(), addr: freeAddr(tb)}
	echo := meshtest.StartEcho(tb)
	serverIn, clientOut := freeAddr(tb), freeAddr(tb)
	m.writeConfig("registry.yaml", meshtest.EchoMeshYAML(int(netip.MustParseAddrPort(serverIn).Port())))
	m.writeConfig("policy.yaml", e2ePolicy())
	m.startCP()
	m.startSidecar("server", proxy.Config{Apps: []netip.AddrPort{echo.Addr}, InboundAddr: serverIn})
	m.startSidecar("client", proxy.Config{Apps: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}, InboundAddr: "127.0.0.1:0",
		Outbound: []proxy.ExplicitOutbound{{Host: "echo.default.svc.cluster.local", Port: 80, Listen: clientOut}}})
	m.base = "http://" + clientOut
	return m
}

// get sends GET path with hc and returns the status, reading the body so that the
// connection can be reused.
func (m *pushMesh) get(hc *http.Client, path string) (int, error) {
	resp, err := hc.Get(m.base + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// waitStatus polls GET path on fresh connections until it answers want, and returns
// how long that took.
func (m *pushMesh) waitStatus(path string, want int) time.Duration {
	m.tb.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	var got int
	var err error
	for time.Since(start) < 15*time.Second {
		if got, err = m.get(hc, path); err == nil && got == want {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	m.tb.Fatalf("GET %s = %d (%v) after 15s, want %d", path, got, err, want)
	return 0
}

// expect checks the answers of paths on fresh connections.
func (m *pushMesh) expect(t *testing.T, want map[string]int) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for p := range want {
			if !yield(p) {
				return
			}
		}
	}) {
		if got, err := m.get(hc, p); err != nil || got != want[p] {
			t.Errorf("GET %s = %d (%v), want %d", p, got, err, want[p])
		}
	}
}

// TestPushEndToEnd drives real sidecars through the control plane's push: a policy
// change on disk changes real requests' decisions without dropping an open
// connection, an invalid file changes nothing, and sidecars keep enforcing while the
// control plane is down and resynchronise when it is back.
func TestPushEndToEnd(t *testing.T) {
	m := startPushMesh(t)

	// One keep-alive connection from the app, opened before the change.
	var dials atomic.Int32
	keep := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	reused := func(path string) (int, bool) {
		t.Helper()
		var info httptrace.GotConnInfo
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { info = i },
		}), http.MethodGet, m.base+path, nil)
		resp, err := keep.Do(req)
		if err != nil {
			t.Fatalf("GET %s on the kept connection: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, info.Reused
	}
	if code, _ := reused("/allowed"); code != http.StatusOK {
		t.Fatalf("before the change: GET /allowed = %d, want 200", code)
	}
	m.expect(t, map[string]int{"/allowed": 200, "/secret": 200})

	t.Run("policy change reaches the sidecars", func(t *testing.T) {
		m.writeConfig("policy.yaml", e2ePolicy("/secret*"))
		took := m.waitStatus("/secret", http.StatusForbidden)
		t.Logf("policy file change → 403 at the server sidecar: %v", took.Round(time.Millisecond))
		if code, again := reused("/allowed"); code != http.StatusOK || !again {
			t.Errorf("after the change, on the connection opened before it: GET /allowed = %d (reused %v), want 200 on the same connection", code, again)
		}
		if code, again := reused("/secret/x"); code != http.StatusForbidden || !again {
			t.Errorf("after the change, on the connection opened before it: GET /secret/x = %d (reused %v), want 403 on the same connection", code, again)
		}
		if n := dials.Load(); n != 1 {
			t.Errorf("the app dialed %d connections, want 1: the open connection was dropped", n)
		}
	})

	t.Run("invalid file changes nothing", func(t *testing.T) {
		before, _ := m.push.Status()
		// Were it accepted, /secret would be allowed again.
		m.writeConfig("policy.yaml", e2ePolicy()+`---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: default}
spec:
  rules: [{to: [{operation: {methods: [""]}}]}]
`)
		deadline := time.Now().Add(15 * time.Second)
		for {
			st, _ := m.push.Status()
			if len(st.Refused) == 1 && filepath.Base(st.Refused[0].File) == "policy.yaml" {
				if msg := st.Refused[0].Message(); !strings.Contains(msg, "AuthorizationPolicy default/broken: spec.rules[0].to[0].operation.methods[0]: empty value not allowed") {
					t.Errorf("refusal = %q, want the validation message", msg)
				}
				if st.Version != before.Version {
					t.Errorf("config version %s → %s after an invalid file, want unchanged", before.Version, st.Version)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("invalid policy.yaml not refused within 15s: status %+v", st)
			}
			time.Sleep(10 * time.Millisecond)
		}
		m.expect(t, map[string]int{"/allowed": 200, "/secret": 403})
	})

	t.Run("control plane restart", func(t *testing.T) {
		m.stopCP()
		// Sidecars keep enforcing the last config they accepted, with new connections too.
		m.expect(t, map[string]int{"/allowed": 200, "/secret": 403, "/other": 200})
		// The config changes while the control plane is down; it is back on its address.
		m.writeConfig("policy.yaml", e2ePolicy("/other"))
		m.startCP()
		took := m.waitStatus("/other", http.StatusForbidden)
		t.Logf("control plane restart → sidecars resynchronised: %v", took.Round(time.Millisecond))
		m.expect(t, map[string]int{"/allowed": 200, "/secret": 200, "/other": 403})
	})
}

// BenchmarkPolicyChangeThroughSidecars measures the time from a policy file change
// on disk until a request through real sidecars gets the new decision: the control
// plane's debounce, reload and push, the sidecar's validation and policy swap.
//
//	go test -run '^$' -bench PolicyChangeThroughSidecars -benchtime 20x ./internal/controlplane
func BenchmarkPolicyChangeThroughSidecars(b *testing.B) {
	m := startPushMesh(b)
	var all []time.Duration
	deny := false
	for b.Loop() {
		deny = !deny
		want := http.StatusOK
		if deny {
			m.writeConfig("policy.yaml", e2ePolicy("/secret"))
			want = http.StatusForbidden
		} else {
			m.writeConfig("policy.yaml", e2ePolicy())
		}
		all = append(all, m.waitStatus("/secret", want))
	}
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(0, "ns/op")
}
