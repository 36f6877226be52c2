package xds_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshguard/meshguard/internal/authn/peercert"
	"github.com/meshguard/meshguard/internal/config/dirstore"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/pki"
	"github.com/meshguard/meshguard/internal/xds"
)

// pushProfile, when set, is a directory where BenchmarkPush1000Sidecars writes CPU
// profiles of each measured case: cp-<case>.prof (the control plane process) and
// clients-<case>.prof (this process: the 1,000 clients and the benchmark itself).
var pushProfile = flag.String("push.profile", "", "write CPU profiles of BenchmarkPush1000Sidecars' measured cases to this directory")

// The push benchmark's fleet: 50 namespaces × 20 apps = 1,000 sidecars, and 100
// AuthorizationPolicies per namespace (5 per app) = 5,000 policies, plus a mesh-wide
// PeerAuthentication and AuthorizationPolicy in the root namespace.
const (
	benchNamespaces = 50
	benchApps       = 20
	benchPerNS      = 100
)

func benchNSFile(ns, gen int) string {
	var b strings.Builder
	for i := range benchPerNS {
		fmt.Fprintf(&b, `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p%d, namespace: ns%d}
spec:
  selector: {matchLabels: {app: app%d}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/ns%d/sa/client%d"]}
    to:
    - operation: {methods: ["GET", "POST"], paths: ["/api/*", "/v%d/*"]}
`, i, ns, i%benchApps, ns, i, gen)
	}
	// A namespace-wide policy every sidecar of the namespace receives: the one the
	// "namespace" case changes.
	fmt.Fprintf(&b, `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: ns%d}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin-%d"]}
`, ns, gen)
	return b.String()
}

func benchRootFile(gen int) string {
	return fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/debug-%d"]}
`, gen)
}

// TestControlPlaneProcess is the control plane of BenchmarkPush, run in a child process
// so that its memory and CPU are measured apart from the 1,000 in-process clients. It
// only runs when the benchmark starts it.
func TestControlPlaneProcess(t *testing.T) {
	dir := os.Getenv("MESHGUARD_XDS_BENCH_CHILD")
	if dir == "" {
		t.Skip("run by BenchmarkPush")
	}
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cert, err := tls.X509KeyPair(read("cert.pem"), read("key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := pki.ParseCertsPEM(read("root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	store, err := dirstore.New(dirstore.Config{Dir: filepath.Join(dir, "config"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := xds.NewServer(xds.ServerConfig{Store: store, Authenticator: peercert.New("cluster.local", nil), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool, MinVersion: tls.VersionTLS12,
	})))
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = store.Run(ctx) }()
	go func() { _ = srv.Run(ctx) }()
	go func() { _ = gs.Serve(lis) }()
	<-srv.Ready()
	fmt.Printf("ADDR %s\n", lis.Addr())
	// The parent sends "profile FILE" and "stop" to profile a measured case, and closes
	// stdin to stop us.
	var prof *os.File
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "profile":
			if prof, err = os.Create(arg); err != nil {
				t.Fatal(err)
			}
			if err := pprof.StartCPUProfile(prof); err != nil {
				t.Fatal(err)
			}
		case "stop":
			pprof.StopCPUProfile()
			if err := prof.Close(); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Println("OK")
	}
	cancel()
	gs.Stop()
}

// procStats reads a process's CPU time (user+system) and resident memory (current
// and peak) from /proc.
func procStats(b *testing.B, pid int) (cpu time.Duration, rss, hwm int64) {
	b.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	cpu = time.Duration(ut+stt) * 10 * time.Millisecond // USER_HZ is 100 on Linux
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n * 1024
		case "VmHWM":
			hwm = n * 1024
		}
	}
	return cpu, rss, hwm
}

// BenchmarkPush1000Sidecars measures the time from a policy file change on disk until
// every affected sidecar has validated, ACKed and published the new config, with
// 1,000 sidecars (real mTLS gRPC streams over loopback, in-process xds.Clients) and
// 5,000 AuthorizationPolicies in the control plane's watched directory. The control
// plane runs in a child process; its CPU per push and RSS are reported from /proc.
//
//	go test -run '^$' -bench Push1000 -benchtime 10x ./internal/xds
func BenchmarkPush1000Sidecars(b *testing.B) {
	ca := meshtest.NewCA(b, "cluster.local")
	dir := b.TempDir()
	cfgDir := filepath.Join(dir, "config")
	if err := os.Mkdir(cfgDir, 0o755); err != nil {
		b.Fatal(err)
	}
	write := func(name, data string) {
		// Atomic save, as an editor or a config sync tool does.
		tmp := filepath.Join(cfgDir, "."+name)
		if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(cfgDir, name)); err != nil {
			b.Fatal(err)
		}
	}
	for ns := range benchNamespaces {
		write(fmt.Sprintf("ns%d.yaml", ns), benchNSFile(ns, 0))
	}
	write("root.yaml", benchRootFile(0))
	serving := ca.IssueWith(b, ca.ID("istio-system", "istiod"), meshtest.IssueOptions{DNSNames: []string{"localhost"}})
	for n, d := range map[string][]byte{"cert.pem": serving.CertPEM, "key.pem": serving.KeyPEM, "root.pem": ca.RootPEM()} {
		if err := os.WriteFile(filepath.Join(dir, n), d, 0o600); err != nil {
			b.Fatal(err)
		}
	}

	child := exec.Command(os.Args[0], "-test.run=^TestControlPlaneProcess$")
	child.Env = append(os.Environ(), "MESHGUARD_XDS_BENCH_CHILD="+dir)
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = child.Wait()
	})
	var addr string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		b.Fatal("control plane process did not start")
	}
	childOK := make(chan struct{})
	go func() {
		for sc.Scan() {
			if sc.Text() == "OK" {
				childOK <- struct{}{}
			}
		}
	}()
	// tell sends the child a command and waits for it to be done.
	tell := func(cmd string) {
		if _, err := fmt.Fprintln(stdin, cmd); err != nil {
			b.Fatal(err)
		}
		select {
		case <-childOK:
		case <-time.After(10 * time.Second):
			b.Fatalf("control plane process did not answer %q", cmd)
		}
	}

	type sidecar struct {
		ns int
		c  *xds.Client
	}
	var side []sidecar
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() })
	certs := map[identity.Identity]*meshtest.Cert{}
	for ns := range benchNamespaces {
		for app := range benchApps {
			id := ca.ID(fmt.Sprintf("ns%d", ns), fmt.Sprintf("app%d", app))
			if certs[id] == nil {
				certs[id] = ca.Issue(b, id, 24*time.Hour)
			}
			tc := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{certs[id].TLSCertificate()}, MinVersion: tls.VersionTLS12}
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { cc.Close() })
			c, err := xds.NewClient(xds.ClientConfig{Conn: cc, Node: xds.Node{
				ID: fmt.Sprintf("app%d.ns%d", app, ns), WorkloadName: fmt.Sprintf("app%d", app), Labels: map[string]string{"app": fmt.Sprintf("app%d", app)},
			}})
			if err != nil {
				b.Fatal(err)
			}
			side = append(side, sidecar{ns, c})
			wg.Add(1)
			go func() { defer wg.Done(); _ = c.Run(ctx) }()
		}
	}
	start := time.Now()
	for _, s := range side {
		wctx, wcancel := context.WithTimeout(ctx, 120*time.Second)
		<-s.c.Watch(wctx)
		wcancel()
		if _, err := s.c.Snapshot(ctx); err != nil {
			b.Fatalf("sidecar never got config: %+v", s.c.Status())
		}
	}
	b.Logf("1000 sidecars connected and synced in %v", time.Since(start).Round(time.Millisecond))

	// measure changes a file and returns, for each affected sidecar, the time until it
	// ACKed the resulting config.
	measure := func(file, data string, affected []*xds.Client) []time.Duration {
		before := make([]string, len(affected))
		for i, c := range affected {
			before[i] = c.Status().Version
		}
		lat := make([]time.Duration, len(affected))
		var mwg sync.WaitGroup
		t0 := time.Now()
		write(file, data)
		for i, c := range affected {
			mwg.Add(1)
			go func() {
				defer mwg.Done()
				wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
				defer wcancel()
				for range c.Watch(wctx) {
					if st := c.Status(); st.Version != before[i] {
						lat[i] = st.AckedAt.Sub(t0)
						return
					}
				}
				b.Errorf("sidecar did not receive the change: %+v", c.Status())
			}()
		}
		mwg.Wait()
		return lat
	}
	for _, tc := range []struct {
		name     string
		change   func(gen int) (string, string)
		affected func(sidecar) bool
	}{
		{"namespace", func(gen int) (string, string) { return "ns7.yaml", benchNSFile(7, gen) }, func(s sidecar) bool { return s.ns == 7 }},
		{"mesh-wide", func(gen int) (string, string) { return "root.yaml", benchRootFile(gen) }, func(sidecar) bool { return true }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var affected []*xds.Client
			for _, s := range side {
				if tc.affected(s) {
					affected = append(affected, s.c)
				}
			}
			var all []time.Duration
			if *pushProfile != "" {
				tell("profile " + filepath.Join(*pushProfile, "cp-"+tc.name+".prof"))
				f, err := os.Create(filepath.Join(*pushProfile, "clients-"+tc.name+".prof"))
				if err != nil {
					b.Fatal(err)
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					b.Fatalf("-push.profile cannot be combined with -cpuprofile: %v", err)
				}
				defer func() {
					pprof.StopCPUProfile()
					f.Close()
					tell("stop")
				}()
			}
			cpu0, _, _ := procStats(b, child.Process.Pid)
			self0, _, _ := procStats(b, os.Getpid())
			gen := 0
			b.ResetTimer()
			for b.Loop() {
				gen++
				f, d := tc.change(gen)
				all = append(all, measure(f, d, affected)...)
			}
			b.StopTimer()
			cpu1, rss, hwm := procStats(b, child.Process.Pid)
			self1, _, _ := procStats(b, os.Getpid())
			slices.Sort(all)
			pct := func(p float64) time.Duration { return all[min(len(all)-1, int(float64(len(all))*p))] }
			b.ReportMetric(float64(len(affected)), "sidecars/push")
			b.ReportMetric(float64(pct(0.50).Milliseconds()), "p50-ms")
			b.ReportMetric(float64(pct(0.99).Milliseconds()), "p99-ms")
			b.ReportMetric(float64(all[len(all)-1].Milliseconds()), "max-ms")
			b.ReportMetric(float64((cpu1-cpu0).Milliseconds())/float64(gen), "cp-cpu-ms/push")
			// The clients share the machine's cores with the control plane: their CPU
			// per push is the part of the latency the benchmark itself costs.
			b.ReportMetric(float64((self1-self0).Milliseconds())/float64(gen), "clients-cpu-ms/push")
			b.ReportMetric(float64(rss)/(1<<20), "cp-rss-MB")
			b.ReportMetric(float64(hwm)/(1<<20), "cp-peak-rss-MB")
		})
	}
}
