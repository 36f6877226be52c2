package agent_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshguard/meshguard/internal/agent"
	"github.com/meshguard/meshguard/internal/authn/bootstrap"
	"github.com/meshguard/meshguard/internal/controlplane"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/pki"
	"github.com/meshguard/meshguard/internal/sds"
)

// These tests run the agent against the real control plane over real gRPC and TLS,
// and read its certificates through a real SDS client on the unix socket.

// issuedLog records the control plane's "certificate issued" events.
type issuedLog struct {
	mu      sync.Mutex
	methods []string
}

func (l *issuedLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *issuedLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "certificate issued" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "auth" {
			l.mu.Lock()
			l.methods = append(l.methods, a.Value.String())
			l.mu.Unlock()
		}
		return true
	})
	return nil
}
func (l *issuedLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *issuedLog) WithGroup(string) slog.Handler      { return l }
func (l *issuedLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.methods...)
}

func rootsOf(t *testing.T, cp *meshtest.ControlPlane) *x509.CertPool {
	t.Helper()
	return cp.RootPool
}

// TestShortLivedCertificatesRotate: certificates living a few seconds rotate again and
// again; each SDS stream (two clients on the same socket) gets every new one, the first
// from the bootstrap token and the renewals over mTLS with the current certificate.
func TestShortLivedCertificatesRotate(t *testing.T) {
	checkNoLeaks(t)
	log := &issuedLog{}
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{Logger: slog.New(log)})
	a := meshtest.StartAgent(t, cp, meshtest.AgentOptions{Namespace: "shop", ServiceAccount: "cart", CertTTL: 2 * time.Second})
	w1 := meshtest.WatchSDS(t, a.SDSSocket, sds.WorkloadResource, sds.RootResource)
	w2 := meshtest.WatchSDS(t, a.SDSSocket, sds.WorkloadResource)

	var prev *x509.Certificate
	for i := range 4 {
		u1, u2 := w1.Next(10*time.Second), w2.Next(10*time.Second)
		leaf := u1.Chain[0]
		if !u2.Chain[0].Equal(leaf) {
			t.Fatalf("update %d: the two SDS clients got different certificates (serials %x and %x)", i, leaf.SerialNumber, u2.Chain[0].SerialNumber)
		}
		if prev != nil && leaf.Equal(prev) {
			t.Fatalf("update %d repeats the previous certificate", i)
		}
		if !pki.KeyMatchesCert(u1.Key, leaf) {
			t.Fatalf("update %d: SDS key does not match its certificate", i)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: rootsOf(t, cp), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("update %d: certificate does not verify against the control plane root: %v", i, err)
		}
		if id, _ := pki.SPIFFEIDFromCert(leaf); id.String() != "spiffe://cluster.local/ns/shop/sa/cart" {
			t.Fatalf("update %d: identity %s, want the token's", i, id)
		}
		if life := leaf.NotAfter.Sub(time.Now()); life > 3*time.Second {
			t.Fatalf("update %d: certificate lives %s more, want the requested 2s", i, life)
		}
		if len(u1.Roots) != 1 || !u1.Roots[0].Equal(mustRoot(t, cp)) {
			t.Fatalf("update %d: ROOTCA = %d roots, want the control plane root", i, len(u1.Roots))
		}
		prev = leaf
	}
	methods := log.get()
	if len(methods) < 4 || methods[0] != bootstrap.Method {
		t.Fatalf("control plane issued via %v, want a bootstrap token first", methods)
	}
	for i, m := range methods[1:] {
		if m != "peer-certificate" {
			t.Errorf("renewal %d authenticated via %s, want the current certificate", i+1, m)
		}
	}
}

func mustRoot(t testing.TB, cp *meshtest.ControlPlane) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(cp.RootCertPath)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := pki.ParseCertsPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return roots[0]
}

// TestControlPlaneRestart: the control plane stops mid-life; the agent keeps serving the
// current certificate past its renewal time, and renews (with that certificate) after the
// control plane comes back on the same address and data directory.
func TestControlPlaneRestart(t *testing.T) {
	checkNoLeaks(t)
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	const ttl = 8 * time.Second
	a := meshtest.StartAgent(t, cp, meshtest.AgentOptions{CertTTL: ttl})
	w := meshtest.WatchSDS(t, a.SDSSocket, sds.WorkloadResource)
	first := w.Next(10 * time.Second).Chain[0]
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}

	// Past the renewal point (half of 8s) but well before expiry.
	time.Sleep(time.Until(first.NotAfter.Add(-ttl / 4)))
	svid, err := a.Source().GetX509SVID()
	if err != nil || !svid.Certificates[0].Equal(first) {
		t.Fatalf("with the control plane down GetX509SVID() = %v, want the current certificate", err)
	}
	if err := a.LastError(); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("LastError() = %v, want the unreachable control plane", err)
	}

	restartControlPlane(t, cp)
	next := w.Next(10 * time.Second).Chain[0]
	if next.Equal(first) {
		t.Fatal("SDS pushed the old certificate again")
	}
	if now := time.Now(); now.After(first.NotAfter) {
		t.Errorf("renewed at %s, after the old certificate expired (%s)", now, first.NotAfter)
	}
}

// restartControlPlane starts a control plane again on cp's address and data directory
// (meshtest.StartControlPlane always picks a new port).
func restartControlPlane(t *testing.T, cp *meshtest.ControlPlane) {
	t.Helper()
	var (
		c   *controlplane.ControlPlane
		err error
	)
	// The port was just released; another process could in principle take it.
	for range 50 {
		c, err = controlplane.New(controlplane.Config{DataDir: cp.DataDir, Listen: cp.Addr})
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("restart control plane on %s: %v", cp.Addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("restarted control plane: %v", err)
		}
	})
}

// TestExpiredBootstrapToken: no certificate and an expired token: not ready, with an
// error that says so and names the token file.
func TestExpiredBootstrapToken(t *testing.T) {
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	key, err := bootstrap.LoadOrCreateKey(cp.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	// Expired well beyond the verifier's clock-skew leeway.
	tok, err := bootstrap.Mint(key, cp.ID("default", "web"), time.Minute, time.Now().Add(-10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	a := meshtest.StartAgent(t, cp, meshtest.AgentOptions{ServiceAccount: "web", Token: tok, NoWait: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = a.WaitUntilReady(ctx)
	if !errors.Is(err, agent.ErrRejected) || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), a.TokenFile) {
		t.Fatalf("WaitUntilReady with an expired token = %v, want ErrRejected saying it expired and naming %s", err, a.TokenFile)
	}
	if _, err := a.Source().GetX509SVID(); !errors.Is(err, agent.ErrNoCertificate) {
		t.Fatalf("GetX509SVID() = %v, want ErrNoCertificate", err)
	}
	// A fresh token in the same file is picked up without a restart.
	if err := os.WriteFile(a.TokenFile, []byte(cp.Token(t, "default", "web", time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := a.WaitUntilReady(ctx2); err != nil {
		t.Fatalf("after writing a fresh token: %v", err)
	}
}

// TestWrongCARoot: an agent that does not trust the control plane's serving certificate
// never sends its token and is never ready.
func TestWrongCARoot(t *testing.T) {
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	other := meshtest.NewCA(t, "cluster.local")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(cp.Token(t, "default", "web", time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{ControlPlane: cp.Addr, CARoots: []*x509.Certificate{other.Root}, TokenFile: tokenFile,
		RetryInitial: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	go a.Run(ctx)
	if err := a.WaitUntilReady(ctx); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("WaitUntilReady with the wrong CA root = %v, want a certificate verification error", err)
	}
}

// TestOutputDirFiles: the files for workloads that do their own TLS, with a real CA.
func TestOutputDirFiles(t *testing.T) {
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	a := meshtest.StartAgent(t, cp, meshtest.AgentOptions{OutputDir: true, KeyType: pki.KeyRSA2048})
	svid, err := a.Source().GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		perm os.FileMode
	}{{agent.KeyFile, 0o600}, {agent.CertChainFile, 0o644}, {agent.RootCertFile, 0o644}} {
		fi, err := os.Stat(filepath.Join(a.OutputDir, tc.name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != tc.perm {
			t.Errorf("%s mode = %v, want %v", tc.name, fi.Mode().Perm(), tc.perm)
		}
	}
	keyPEM, _ := os.ReadFile(filepath.Join(a.OutputDir, agent.KeyFile))
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil || !pki.KeyMatchesCert(key, svid.Certificates[0]) || pki.DescribePublicKey(key.Public()) != "RSA 2048" {
		t.Fatalf("key.pem: %v, %s; want the RSA 2048 key of the served certificate", err, pki.DescribePublicKey(key.Public()))
	}
	rootPEM, _ := os.ReadFile(filepath.Join(a.OutputDir, agent.RootCertFile))
	if roots, err := pki.ParseCertsPEM(rootPEM); err != nil || !roots[0].Equal(mustRoot(t, cp)) {
		t.Fatalf("root-cert.pem does not hold the control plane root (%v)", err)
	}
}

// TestStandalone runs what `meshguard agent` runs: readiness, metrics and SDS.
func TestStandalone(t *testing.T) {
	checkNoLeaks(t)
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	dir, err := os.MkdirTemp("", "mgstandalone")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(cp.Token(t, "default", "web", time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	sock := filepath.Join(dir, "sds", "socket")
	go func() {
		done <- agent.RunStandalone(ctx, agent.StandaloneConfig{
			Agent: agent.Config{ControlPlane: cp.Addr, CARoots: []*x509.Certificate{mustRoot(t, cp)}, TokenFile: tokenFile,
				Logger: slog.New(slog.DiscardHandler)},
			SDSSocket:      sock,
			Admin:          "127.0.0.1:0",
			AdminListening: func(a net.Addr) { addr <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunStandalone() = %v", err)
		}
	})
	var base string
	select {
	case a := <-addr:
		base = "http://" + a.String()
	case err := <-done:
		t.Fatalf("RunStandalone() = %v before listening", err)
	case <-time.After(10 * time.Second):
		t.Fatal("admin endpoint not listening within 10s")
	}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get("/healthz/ready")
		if code == http.StatusOK {
			break
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("GET /healthz/ready = %d %q, want 503 then 200", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, metrics := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", code)
	}
	for _, want := range []string{
		`meshguard_cert_expiry_remaining_seconds{cert="workload",identity="spiffe://cluster.local/ns/default/sa/web",role="workload"`,
		`meshguard_cert_expiry_timestamp_seconds{cert="root-0"`,
		`meshguard_cert_rotations_total{result="success"} 1`,
		`meshguard_cert_rotations_total{result="failure"} 0`,
		`meshguard_agent_certificate_valid 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("SDS socket %s: %v, mode %v; want a 0600 socket", sock, err, fi.Mode())
	}
	u := meshtest.WatchSDS(t, sock, sds.WorkloadResource).Next(10 * time.Second)
	if id, _ := pki.SPIFFEIDFromCert(u.Chain[0]); id.String() != "spiffe://cluster.local/ns/default/sa/web" {
		t.Fatalf("SDS certificate for %s", id)
	}
}

// BenchmarkIssue measures one certificate request against the real control plane: key
// generation, CSR, a new TLS connection authenticated with the current certificate,
// signing and checking the answer — what each rotation costs the agent.
func BenchmarkIssue(b *testing.B) {
	cp := meshtest.StartControlPlane(b, meshtest.ControlPlaneOptions{})
	tokenFile := filepath.Join(b.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(cp.Token(b, "default", "web", time.Hour)), 0o600); err != nil {
		b.Fatal(err)
	}
	a, err := agent.New(agent.Config{ControlPlane: cp.Addr, CARoots: []*x509.Certificate{mustRoot(b, cp)}, TokenFile: tokenFile,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := agent.RotateOnce(ctx, a); err != nil { // bootstrap
		b.Fatal(err)
	}
	for b.Loop() {
		if err := agent.RotateOnce(ctx, a); err != nil {
			b.Fatal(err)
		}
	}
}

// checkNoLeaks fails the test if agent or SDS goroutines, or gRPC client connections the
// agent opened for its CSRs, are still running after every other cleanup.
func checkNoLeaks(t *testing.T) {
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			buf := make([]byte, 1<<20)
			stacks := string(buf[:runtime.Stack(buf, true)])
			var leaked []string
			for _, g := range strings.Split(stacks, "\n\n") {
				if strings.Contains(g, "internal/agent.") || strings.Contains(g, "internal/sds.") ||
					strings.Contains(g, "grpc.(*ClientConn)") || strings.Contains(g, "grpc.(*addrConn)") {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("leaked goroutines:\n%s", strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestNACKWithRotation: a client that rejects the secrets is not sent the same version
// again; the next thing it receives is the next rotation.
func TestNACKWithRotation(t *testing.T) {
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	a := meshtest.StartAgent(t, cp, meshtest.AgentOptions{CertTTL: 2 * time.Second})
	cc, err := grpc.NewClient("unix://"+a.SDSSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := secretv3.NewSecretDiscoveryServiceClient(cc).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "sidecar~127.0.0.1~nack.default~default.svc.cluster.local"}
	names := []string{sds.WorkloadResource}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: sds.SecretTypeURL, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: sds.SecretTypeURL, ResourceNames: names,
			ResponseNonce: first.GetNonce(), ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "rejected by test"}}); err != nil {
			t.Fatal(err)
		}
	}
	next, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if next.GetVersionInfo() == first.GetVersionInfo() {
		t.Fatalf("after a NACK the server re-sent version %s", first.GetVersionInfo())
	}
	if next.GetNonce() == first.GetNonce() {
		t.Fatal("nonce reused")
	}
}

// TestPluginCAWithTwoRoots: a control plane signing with a plug-in intermediate whose
// root-cert.pem holds two roots (mid root rotation) hands the agent both, and SDS serves
// both as ROOTCA; the workload chain carries the intermediate.
func TestPluginCAWithTwoRoots(t *testing.T) {
	old, next := meshtest.NewCA(t, "cluster.local"), meshtest.NewCA(t, "cluster.local")
	dir := old.WriteIntermediateDir(t)
	bundle := append(old.RootPEM(), next.RootPEM()...)
	if err := os.WriteFile(filepath.Join(dir, pki.RootCertFile), bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{CACertsDir: dir})
	a := meshtest.StartAgent(t, cp, meshtest.AgentOptions{})
	u := meshtest.WatchSDS(t, a.SDSSocket, sds.WorkloadResource, sds.RootResource).Next(10 * time.Second)
	if len(u.Roots) != 2 || !u.Roots[0].Equal(old.Root) || !u.Roots[1].Equal(next.Root) {
		t.Fatalf("ROOTCA holds %d roots, want the old and the next root of root-cert.pem", len(u.Roots))
	}
	if len(u.Chain) != 2 || !u.Chain[1].IsCA {
		t.Fatalf("default chain holds %d certificates, want the leaf and the plug-in intermediate", len(u.Chain))
	}
	pool := x509.NewCertPool()
	pool.AddCert(old.Root)
	inter := x509.NewCertPool()
	inter.AddCert(u.Chain[1])
	if _, err := u.Chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("workload certificate does not chain to the signing root: %v", err)
	}
}
