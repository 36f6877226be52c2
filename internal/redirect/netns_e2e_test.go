package redirect_test

// Network-namespace tests: real namespaces joined by a veth, the real `meshguard`
// binary, real nftables/iptables rules. They skip (with the reason) unless run as root
// with iproute2 and the rule tools installed; CI runs them as root.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/redirect"
)

// helperEnv makes the test binary act as one of the small programs below instead of
// running tests, so that a test can run them inside a namespace (and as another uid).
const helperEnv = "MESHGUARD_E2E_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper(os.Args[1:]))
	}
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// bins holds the binaries under test, built once per test binary on first use.
var bins struct {
	once              sync.Once
	dir               string
	meshguard, helper string
	err               error
}

// binaries builds cmd/meshguard and copies the test binary (for its helper programs)
// into a directory every user can read, because the sidecar runs as the proxy uid.
func binaries(tb testing.TB) (meshguard, helper string) {
	tb.Helper()
	bins.once.Do(func() {
		dir, err := os.MkdirTemp("", "meshguard-e2e-")
		if err != nil {
			bins.err = err
			return
		}
		bins.dir = dir
		if err := os.Chmod(dir, 0o755); err != nil {
			bins.err = err
			return
		}
		bins.meshguard = filepath.Join(dir, "meshguard")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		// Built as `make build` builds it.
		out, err := exec.CommandContext(ctx, "go", "build", "-tags", "grpcnotrace", "-o", bins.meshguard, "github.com/meshguard/meshguard/cmd/meshguard").CombinedOutput()
		if err != nil {
			bins.err = fmt.Errorf("go build cmd/meshguard: %w: %s", err, out)
			return
		}
		self, err := os.ReadFile(os.Args[0])
		if err != nil {
			bins.err = err
			return
		}
		bins.helper = filepath.Join(dir, "helper")
		bins.err = os.WriteFile(bins.helper, self, 0o755)
	})
	if bins.err != nil {
		tb.Fatalf("build binaries under test: %v", bins.err)
	}
	return bins.meshguard, bins.helper
}

// runHelper is the helper programs' main. Servers print READY once listening.
func runHelper(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: no program named")
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "helper:", args[0]+":", err)
		return 1
	}
	switch {
	case args[0] == "origdst-server" && len(args) == 3:
		// Answers each connection with what OriginalDst says about it.
		return serveLines(args[2], func(c net.Conn) string {
			dst, err := redirect.OriginalDst(c.(*net.TCPConn))
			if err != nil {
				return fmt.Sprintf("%s NOTREDIRECTED %v", args[1], errors.Is(err, redirect.ErrNotRedirected))
			}
			return fmt.Sprintf("%s ORIGDST %s", args[1], dst)
		}, fail)
	case args[0] == "reply-server" && len(args) == 3:
		return serveLines(args[2], func(net.Conn) string { return args[1] + " DIRECT" }, fail)
	case args[0] == "dial" && len(args) == 2:
		c, err := net.DialTimeout("tcp", args[1], 3*time.Second)
		if err != nil {
			return fail(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fail(err)
		}
		fmt.Print(line)
		return 0
	case args[0] == "http-server" && len(args) == 3:
		ln, err := net.Listen("tcp", args[1])
		if err != nil {
			return fail(err)
		}
		fmt.Println("READY")
		body := args[2]
		srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprint(w, body)
		})}
		return fail(srv.Serve(ln))
	case args[0] == "http-get" && len(args) == 2:
		// An unchanged client: plain HTTP to the server's address, no mesh awareness.
		client := &http.Client{Timeout: 5 * time.Second}
		resp, err := client.Get(args[1])
		if err != nil {
			return fail(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return fail(err)
		}
		fmt.Printf("%d %s", resp.StatusCode, b)
		return 0
	}
	fmt.Fprintf(os.Stderr, "helper: unknown program %q\n", args)
	return 2
}

func serveLines(addr string, answer func(net.Conn) string, fail func(error) int) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fail(err)
	}
	fmt.Println("READY")
	for {
		c, err := ln.Accept()
		if err != nil {
			return fail(err)
		}
		go func() {
			defer c.Close()
			fmt.Fprintln(c, answer(c))
		}()
	}
}

// workload bundles what one side of a test needs.
type workload struct {
	ns                *meshtest.Netns
	meshguard, helper string
}

func newWorkloads(t *testing.T, tools ...string) (a, b *workload) {
	meshtest.RequireNetns(t, tools...)
	mg, helper := binaries(t)
	na, nb := meshtest.NewNetnsPair(t)
	return &workload{na, mg, helper}, &workload{nb, mg, helper}
}

// helperCmd builds a helper command in w's namespace, as root or as the proxy user.
func (w *workload) helperCmd(ctx context.Context, asProxy bool, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if asProxy {
		cmd = w.ns.CommandAs(ctx, redirect.DefaultProxyUID, redirect.DefaultProxyUID, w.helper, args...)
	} else {
		cmd = w.ns.Command(ctx, w.helper, args...)
	}
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	return cmd
}

func (w *workload) startHelper(t *testing.T, asProxy bool, args ...string) {
	t.Helper()
	meshtest.StartProc(t, strings.Join(args, " ")+" in "+w.ns.Name, w.helperCmd(context.Background(), asProxy, args...), "READY")
}

// dial connects from w's namespace to addr and returns the line the server sent.
func (w *workload) dial(t *testing.T, asProxy bool, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := w.helperCmd(ctx, asProxy, "dial", addr).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("dial failed: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out))
}

// init runs `meshguard init --netns` against w's namespace, from outside it.
func (w *workload) init(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, w.meshguard, append([]string{"init", "--netns", w.ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("meshguard init %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ruleDump lists what meshguard left in w's namespace for mode.
func (w *workload) ruleDump(t *testing.T, mode string) string {
	t.Helper()
	if mode == "nftables" {
		out, err := w.ns.Run(t, 10*time.Second, "nft", "list", "ruleset")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	var all strings.Builder
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := w.ns.Run(t, 10*time.Second, tool, "-t", "nat")
		if err != nil {
			t.Fatal(err)
		}
		all.WriteString(out)
	}
	return all.String()
}

// TestNetnsRedirect programs real rules with `meshguard init` in namespace A (the
// client workload) and B (the server workload) and checks, with servers that report
// SO_ORIGINAL_DST, where each kind of connection ends up: captured outbound, captured
// inbound, exempt as the proxy user, excluded by port or range, or left on loopback.
func TestNetnsRedirect(t *testing.T) {
	for _, mode := range []string{"nftables", "iptables"} {
		t.Run(mode, func(t *testing.T) {
			tool := map[string]string{"nftables": "nft", "iptables": "iptables-restore"}[mode]
			a, b := newWorkloads(t, tool)
			bIP, bIP6 := b.ns.IP().String(), b.ns.IP6().String()

			// B: the sidecar's inbound listener and an excluded port served directly.
			b.startHelper(t, true, "origdst-server", "b-inbound", ":15006")
			b.startHelper(t, false, "reply-server", "b-9000", ":9000")
			// A: the sidecar's outbound listener, run as the proxy user, and a local app port.
			a.startHelper(t, true, "origdst-server", "a-outbound", ":15001")
			a.startHelper(t, false, "reply-server", "a-local", "127.0.0.1:7000")

			b.init(t, "--mode", mode, "--exclude-inbound-ports", "9000")
			a.init(t, "--mode", mode, "--exclude-outbound-ports", "9000")
			// Applying twice must leave one copy of everything.
			once := a.ruleDump(t, mode)
			a.init(t, "--mode", mode, "--exclude-outbound-ports", "9000")
			if twice := stripCounters(a.ruleDump(t, mode)); twice != stripCounters(once) {
				t.Errorf("second apply changed the rules:\nfirst:\n%s\nsecond:\n%s", once, twice)
			}

			tests := []struct {
				name    string
				from    *workload
				asProxy bool
				addr    string
				want    string
			}{
				{"app outbound is captured", a, false, bIP + ":8080", "a-outbound ORIGDST " + bIP + ":8080"},
				{"app outbound over IPv6 is captured", a, false, "[" + bIP6 + "]:8080", "a-outbound ORIGDST [" + bIP6 + "]:8080"},
				{"proxy user is exempt, peer captures inbound", a, true, bIP + ":8080", "b-inbound ORIGDST " + bIP + ":8080"},
				{"proxy user over IPv6, peer captures inbound", a, true, "[" + bIP6 + "]:8443", "b-inbound ORIGDST [" + bIP6 + "]:8443"},
				{"excluded outbound and inbound port", a, false, bIP + ":9000", "b-9000 DIRECT"},
				{"loopback stays local", a, false, "127.0.0.1:7000", "a-local DIRECT"},
				{"direct dial of the proxy port is not a redirect", a, false, "127.0.0.1:15001", "a-outbound NOTREDIRECTED true"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if got := tt.from.dial(t, tt.asProxy, tt.addr); got != tt.want {
						t.Errorf("dial %s from %s (proxy user %v) = %q, want %q", tt.addr, tt.from.ns.Name, tt.asProxy, got, tt.want)
					}
				})
			}

			// Re-apply with a changed config: B's address range is no longer captured.
			a.init(t, "--mode", mode, "--exclude-outbound-ip-ranges", b.ns.Addr.Masked().String())
			if got, want := a.dial(t, false, bIP+":8080"), "b-inbound ORIGDST "+bIP+":8080"; got != want {
				t.Errorf("after excluding %s: dial = %q, want %q", b.ns.Addr.Masked(), got, want)
			}
			if got, want := a.dial(t, false, bIP+":9000"), "b-9000 DIRECT"; got != want {
				t.Errorf("after re-apply the old port exclusion must be gone but 9000 still reaches B directly: got %q, want %q", got, want)
			}

			// With IPv6 off, IPv6 traffic passes untouched while IPv4 is still captured.
			a.init(t, "--mode", mode, "--ipv6=false")
			if got, want := a.dial(t, false, "["+bIP6+"]:8080"), "b-inbound ORIGDST ["+bIP6+"]:8080"; got != want {
				t.Errorf("--ipv6=false: IPv6 dial = %q, want %q (not captured in A)", got, want)
			}
			if got, want := a.dial(t, false, bIP+":8080"), "a-outbound ORIGDST "+bIP+":8080"; got != want {
				t.Errorf("--ipv6=false: IPv4 dial = %q, want %q", got, want)
			}

			// Cleanup removes everything meshguard made, and is idempotent.
			a.init(t, "--mode", mode, "--cleanup")
			a.init(t, "--mode", mode, "--cleanup")
			if dump := a.ruleDump(t, mode); strings.Contains(dump, "meshguard") || strings.Contains(dump, "MESHGUARD") {
				t.Errorf("rules left after --cleanup:\n%s", dump)
			}
			if got, want := a.dial(t, false, "["+bIP6+"]:8080"), "b-inbound ORIGDST ["+bIP6+"]:8080"; got != want {
				t.Errorf("after cleanup: dial = %q, want %q (not captured in A)", got, want)
			}
		})
	}
}

var (
	nftCounter = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	iptCounter = regexp.MustCompile(`\[\d+:\d+\]`)
)

// stripCounters removes packet counters and timestamps so two rule dumps compare by
// rules only.
func stripCounters(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "#") {
			continue // iptables-save timestamps
		}
		line = nftCounter.ReplaceAllString(line, "counter")
		b.WriteString(iptCounter.ReplaceAllString(line, "[]") + "\n")
	}
	return b.String()
}

// meshConfig is the --config-dir content both sidecars read: the server workload as a
// ServiceEntry + WorkloadEntry at its veth address (so a captured connection to that
// address is a mesh destination), ISTIO_MUTUAL to it, and STRICT mTLS namespace-wide.
func meshConfig(serverIP string) string {
	return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: server
  namespace: default
spec:
  hosts: ["server.default.svc.cluster.local"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 8080
    name: http
    protocol: HTTP
  workloadSelector:
    labels:
      app: server
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: server
  namespace: default
spec:
  address: ` + serverIP + `
  labels:
    app: server
  serviceAccount: server
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: default
  namespace: default
spec:
  host: "*.default.svc.cluster.local"
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: default
spec:
  mtls:
    mode: STRICT
`
}

// sidecarDir prepares what one sidecar reads, in a directory the proxy user owns: the
// control plane's root, a bootstrap token, and the config directory.
func sidecarDir(t *testing.T, cp *meshtest.ControlPlane, sa, config string) string {
	t.Helper()
	dir := filepath.Join(bins.dir, t.Name(), sa)
	if err := os.MkdirAll(filepath.Join(dir, "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join(bins.dir, strings.SplitN(t.Name(), "/", 2)[0])) })
	root, err := os.ReadFile(cp.RootCertPath)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"root-cert.pem":    string(root),
		"token":            cp.Token(t, "default", sa, time.Hour),
		"config/mesh.yaml": config,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{dir, filepath.Join(dir, "config")} {
		if err := os.Chown(p, redirect.DefaultProxyUID, redirect.DefaultProxyUID); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startSidecar runs `meshguard sidecar` in w's namespace as the proxy user and waits
// until its admin endpoint reports ready (certificate held, configuration applied).
func (w *workload) startSidecar(t *testing.T, dir, sa, app string) {
	t.Helper()
	cmd := w.ns.CommandAs(context.Background(), redirect.DefaultProxyUID, redirect.DefaultProxyUID, w.meshguard,
		"sidecar", "--controlplane", "127.0.0.1:15012", "--ca-root", filepath.Join(dir, "root-cert.pem"),
		"--token-file", filepath.Join(dir, "token"), "--workload", sa, "--namespace", "default",
		"--service-account", sa, "--labels", "app="+sa, "--app", app,
		"--inbound-port", "15006", "--outbound-port", "15001",
		"--config-dir", filepath.Join(dir, "config"), "--admin", "127.0.0.1:15020")
	cmd.Dir = dir
	meshtest.StartProc(t, "meshguard sidecar "+sa, cmd, "")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var status int
		// The socket must be made on Do's thread, inside the namespace; net/http would
		// dial from another goroutine (in the host namespace), so speak HTTP by hand.
		err := w.ns.Do(func() error {
			c, err := net.DialTimeout("tcp", "127.0.0.1:15020", time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Second))
			if _, err := io.WriteString(c, "GET /healthz/ready HTTP/1.0\r\n\r\n"); err != nil {
				return err
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return err
			}
			resp.Body.Close()
			status = resp.StatusCode
			return nil
		})
		if err == nil && status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar %s not ready after 30s (status %d, %v)", sa, status, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// httpGet runs an unchanged HTTP client in w's namespace (as root, i.e. an app, or as
// the proxy user, which the redirect rules exempt).
func (w *workload) httpGet(t *testing.T, asProxy bool, url string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := w.helperCmd(ctx, asProxy, "http-get", url).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// TestNetnsSidecarMTLS is issue 5's network-namespace test: namespace A runs an
// unchanged HTTP client, B an unchanged HTTP server, each with `meshguard init` and a
// `meshguard sidecar` running as the proxy user. The client calls the server's plain
// address; the capture on the veth between them must hold only TLS records and never
// the response body; and a plaintext client that bypasses A's sidecar is refused by B's
// STRICT sidecar.
func TestNetnsSidecarMTLS(t *testing.T) {
	a, b := newWorkloads(t, "nft", "tcpdump")
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	for _, w := range []*workload{a, b} {
		w.ns.Forward(t, "127.0.0.1:15012", cp.Addr)
	}
	serverURL := "http://" + b.ns.IP().String() + ":8080/"
	secret := fmt.Sprintf("secret-body-%d", time.Now().UnixNano())
	config := meshConfig(b.ns.IP().String())

	// The server app listens on every address: without the mesh, anyone on the veth
	// could read it in plaintext, as the first request shows.
	b.startHelper(t, false, "http-server", ":8080", secret)
	if got, err := a.httpGet(t, false, serverURL); err != nil || got != "200 "+secret {
		t.Fatalf("before the mesh: GET %s = %q, %v; want the plaintext body", serverURL, got, err)
	}

	b.init(t)
	a.init(t)
	b.startSidecar(t, sidecarDir(t, cp, "server", config), "server", "127.0.0.1:8080")
	a.startSidecar(t, sidecarDir(t, cp, "client", config), "client", "127.0.0.1:8081")

	capture := a.ns.StartCapture(t, "tcp", 20000, time.Minute)
	for i := range 3 {
		got, err := a.httpGet(t, false, serverURL)
		if err != nil || got != "200 "+secret {
			t.Fatalf("request %d through the mesh: GET %s = %q, %v; want 200 and the body", i, serverURL, got, err)
		}
	}
	segs := capture.Stop(t)
	checkOnlyTLS(t, segs, b.ns.IP().String(), secret)
	t.Logf("mTLS capture: %d TCP segments on %s, all payload TLS records", len(segs), a.ns.Dev)

	// A plaintext client that bypasses A's capture (it runs as the proxy user) reaches
	// B's inbound capture, and STRICT refuses it: no response, no body on the wire.
	capture = a.ns.StartCapture(t, "tcp", 20000, time.Minute)
	got, err := a.httpGet(t, true, serverURL)
	segs = capture.Stop(t)
	if err == nil {
		t.Errorf("plaintext GET %s past the client sidecar = %q; want STRICT to refuse it", serverURL, got)
	} else {
		t.Logf("plaintext client refused: %v", err)
	}
	for _, s := range segs {
		if bytes.Contains(s.Payload, []byte(secret)) {
			t.Errorf("plaintext response body crossed the veth: %s → %s %q", s.Src, s.Dst, s.Payload)
		}
	}
}

// checkOnlyTLS fails the test with every problem onlyTLS finds.
func checkOnlyTLS(t *testing.T, segs []meshtest.Segment, serverIP, secret string) {
	t.Helper()
	for _, err := range onlyTLS(segs, serverIP, secret) {
		t.Error(err)
	}
}

// onlyTLS checks that the capture has traffic to serverIP, that every byte of every TCP
// stream in it, in both directions, parses as a sequence of TLS records, and that the
// secret never appears.
func onlyTLS(segs []meshtest.Segment, serverIP, secret string) []error {
	var errs []error
	streams := make(map[string][]byte)
	var order []string
	for _, s := range segs {
		if len(s.Payload) == 0 {
			continue
		}
		if bytes.Contains(s.Payload, []byte(secret)) {
			errs = append(errs, fmt.Errorf("plaintext body on the veth: %s → %s", s.Src, s.Dst))
		}
		k := s.Src.String() + " → " + s.Dst.String()
		if _, ok := streams[k]; !ok {
			order = append(order, k)
		}
		streams[k] = append(streams[k], s.Payload...)
	}
	toServer := 0
	for _, k := range order {
		if strings.Contains(k, "→ "+serverIP+":") {
			toServer++
		}
		if err := tlsRecordsOnly(streams[k]); err != nil {
			errs = append(errs, fmt.Errorf("stream %s is not TLS: %w (first bytes %q)", k, err, head(streams[k])))
		}
	}
	if toServer == 0 {
		errs = append(errs, fmt.Errorf("capture holds no payload sent to %s (%d segments): the requests did not cross the veth", serverIP, len(segs)))
	}
	return errs
}

// tlsRecordsOnly walks b as TLS records: content type 20–24, version 3.x, length within
// the limit, and nothing left over except the start of a record cut off by the capture.
func tlsRecordsOnly(b []byte) error {
	for off := 0; off < len(b); {
		if len(b)-off < 5 {
			return nil // a record header split at the end of the capture
		}
		typ, major, n := b[off], b[off+1], int(b[off+3])<<8|int(b[off+4])
		if typ < 20 || typ > 24 || major != 3 || n > 1<<14+2048 {
			return fmt.Errorf("byte %d: not a TLS record header (type %d, version %d.%d, length %d)", off, typ, major, b[off+2], n)
		}
		off += 5 + n
	}
	return nil
}

func head(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}
