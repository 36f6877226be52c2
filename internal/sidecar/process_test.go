package sidecar_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
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

// recorder is a slog.Handler keeping every record's message in order, so a test can
// assert what happened before what.
type recorder struct {
	mu   *sync.Mutex
	msgs *[]string
}

func newRecorder() recorder { return recorder{mu: new(sync.Mutex), msgs: new([]string)} }

func (r recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.msgs = append(*r.msgs, rec.Message)
	return nil
}
func (r recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r recorder) WithGroup(string) slog.Handler      { return r }

func (r recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(*r.msgs)
}

const strictDefault = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
`

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// processUnderTest is a `meshguard sidecar` (sidecar.RunProcess) of default/web in
// front of an echo app, against a real control plane.
type processUnderTest struct {
	inbound string
	admin   string
	log     recorder
	done    chan error
	// stop cancels RunProcess and waits for it; the test's cleanup calls it too.
	stop func()
}

func startProcess(t testing.TB, cp *meshtest.ControlPlane, opts ...func(*sidecar.ProcessConfig)) *processUnderTest {
	t.Helper()
	tok := filepath.Join(t.TempDir(), "web.token")
	if err := os.WriteFile(tok, []byte(cp.Token(t, "default", "web", time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cp.RootCertPath)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := pki.ParseCertsPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	echo := meshtest.StartEcho(t)
	pt := &processUnderTest{inbound: freeAddr(t), log: newRecorder(), done: make(chan error, 1)}
	log := slog.New(pt.log)
	admin := make(chan net.Addr, 1)
	pc := sidecar.ProcessConfig{
		Sidecar: sidecar.Config{
			Workload: policy.Workload{Namespace: "default", Name: "web-v1", ServiceAccount: "web", Labels: map[string]string{"app": "web"}},
			Proxy: proxy.Config{Apps: []netip.AddrPort{echo.Addr}, InboundAddr: pt.inbound,
				DrainTimeout: 100 * time.Millisecond},
			AdminAddr: "127.0.0.1:0", AdminListening: func(a net.Addr) { admin <- a },
			AccessLogStdout: io.Discard, Logger: log,
		},
		Agent: agent.Config{ControlPlane: cp.Addr, CARoots: roots, TokenFile: tok, Logger: log},
	}
	for _, o := range opts {
		o(&pc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { pt.done <- sidecar.RunProcess(ctx, pc) }()
	pt.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-pt.done:
			if err != nil {
				t.Errorf("RunProcess after cancel = %v, want nil", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("RunProcess did not return within 15s of cancel")
		}
	})
	t.Cleanup(pt.stop)
	select {
	case a := <-admin:
		pt.admin = a.String()
	case err := <-pt.done:
		t.Fatalf("RunProcess returned before its admin listened: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("admin not listening within 15s")
	}
	return pt
}

// ready reports the admin's /healthz/ready answer.
func (pt *processUnderTest) ready(t testing.TB) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + pt.admin + "/healthz/ready")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (pt *processUnderTest) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := pt.ready(t)
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar not ready within 15s: %d %s\nlog: %q", code, body, pt.log.messages())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// plaintextGet sends a plaintext request to the inbound listener.
func (pt *processUnderTest) plaintextGet() (int, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + pt.inbound + "/")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestRunProcessPushWaitsForCertificate: the config push authenticates with the
// workload certificate, so RunProcess opens its stream only once the agent holds one.
// A stream opened earlier is refused and the client backs off (up to ~2s on every
// sidecar start); here no stream may fail on the way to ready, and the first
// certificate is issued before the first configuration is applied.
func TestRunProcessPushWaitsForCertificate(t *testing.T) {
	pt := startProcess(t, startPushControlPlane(t))
	pt.waitReady(t)

	msgs := pt.log.messages()
	if slices.Contains(msgs, "control plane stream ended; last accepted config stays in force") {
		t.Errorf("a config stream failed on the way to ready (opened before the certificate?); log: %q", msgs)
	}
	issued := slices.Index(msgs, "workload certificate issued")
	applied := slices.Index(msgs, "configuration applied")
	if issued < 0 || applied < 0 || issued > applied {
		t.Errorf("log order: certificate issued at %d, configuration applied at %d, want issued first; log: %q", issued, applied, msgs)
	}
	// The pushed STRICT is in force: a plaintext client is refused.
	if code, err := pt.plaintextGet(); err == nil {
		t.Errorf("plaintext GET to STRICT inbound = %d, want the connection refused", code)
	}
}

// startPushControlPlane starts a control plane pushing the STRICT default of
// namespace default.
func startPushControlPlane(tb testing.TB) *meshtest.ControlPlane {
	tb.Helper()
	confDir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(confDir, "mtls.yaml"), []byte(strictDefault), 0o644); err != nil {
		tb.Fatal(err)
	}
	push, err := controlplane.NewPush(controlplane.PushConfig{ConfigDir: confDir})
	if err != nil {
		tb.Fatal(err)
	}
	return meshtest.StartControlPlane(tb, meshtest.ControlPlaneOptions{Register: []func(*grpc.Server){push.Register}, Push: push})
}

// BenchmarkRunProcessStartToReady measures a sidecar's start: key, CSR and certificate,
// then the config push, to /healthz/ready answering 200.
func BenchmarkRunProcessStartToReady(b *testing.B) {
	cp := startPushControlPlane(b)
	for b.Loop() {
		pt := startProcess(b, cp)
		pt.waitReady(b)
		b.StopTimer()
		pt.stop()
		b.StartTimer()
	}
}

// TestRunProcessNoPushNotReady: with a certificate but no configuration (the control
// plane serves the CA but no push), the sidecar never reports ready and keeps waiting
// rather than failing: the push may come later.
func TestRunProcessNoPushNotReady(t *testing.T) {
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	pt := startProcess(t, cp)
	deadline := time.Now().Add(15 * time.Second)
	for !slices.Contains(pt.log.messages(), "workload certificate issued") {
		if time.Now().After(deadline) {
			t.Fatalf("no certificate within 15s; log: %q", pt.log.messages())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Give the push client a moment to try the stream the control plane lacks.
	for !slices.Contains(pt.log.messages(), "control plane stream ended; last accepted config stays in force") {
		if time.Now().After(deadline) {
			t.Fatalf("the push client never tried the control plane; log: %q", pt.log.messages())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, body := pt.ready(t); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz/ready without configuration = %d %q, want 503", code, body)
	}
	select {
	case err := <-pt.done:
		t.Fatalf("RunProcess returned without configuration: %v", err)
	default:
	}
	// Fail closed: nothing is served before a configuration is in force.
	if code, err := pt.plaintextGet(); err == nil {
		t.Errorf("plaintext GET to the inbound listener before any configuration = %d, want no connection", code)
	}
}

// TestRunProcessStartupStages: StartupStage sees each start-up stage exactly once, in
// an order consistent with what each stage depends on, by the time the sidecar is
// ready (the sidecar releases memory there; a stage never reported would leave
// start-up's pages resident through the first requests).
func TestRunProcessStartupStages(t *testing.T) {
	var mu sync.Mutex
	var got []sidecar.Stage
	pt := startProcess(t, startPushControlPlane(t), func(pc *sidecar.ProcessConfig) {
		pc.Sidecar.StartupStage = func(s sidecar.Stage) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, s)
		}
	})
	pt.waitReady(t)
	all := []sidecar.Stage{sidecar.StageBuilt, sidecar.StageSnapshot, sidecar.StageCertificate, sidecar.StageApplied, sidecar.StageListening}
	// StageListening is reported by its own goroutine as the listeners come up, so it
	// may trail the first 200 from /healthz/ready by a moment.
	var stages []sidecar.Stage
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		stages = slices.Clone(got)
		mu.Unlock()
		if len(stages) >= len(all) || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(20 * time.Millisecond) // a stage reported twice would show now
	mu.Lock()
	stages = slices.Clone(got)
	mu.Unlock()
	if len(stages) != len(all) {
		t.Fatalf("stages after ready = %q, want each of %q once", stages, all)
	}
	at := map[sidecar.Stage]int{}
	for i, s := range stages {
		at[s] = i
	}
	for _, s := range all {
		if _, ok := at[s]; !ok {
			t.Fatalf("stages after ready = %q, missing %q", stages, s)
		}
	}
	for _, before := range [][2]sidecar.Stage{
		{sidecar.StageBuilt, sidecar.StageSnapshot}, {sidecar.StageBuilt, sidecar.StageCertificate},
		{sidecar.StageSnapshot, sidecar.StageApplied}, {sidecar.StageCertificate, sidecar.StageApplied},
		{sidecar.StageApplied, sidecar.StageListening},
	} {
		if at[before[0]] > at[before[1]] {
			t.Errorf("stages = %q: %q after %q", stages, before[0], before[1])
		}
	}
}
