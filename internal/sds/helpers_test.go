package sds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/url"
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
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// memSource is a Source over values the test sets: the same contract as the agent's
// Source (Updated closes on each change), without a CA behind it.
type memSource struct {
	mu     sync.Mutex
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
	ch     chan struct{}
}

func newMemSource() *memSource { return &memSource{ch: make(chan struct{})} }

func (m *memSource) set(svid *x509svid.SVID, bundle *x509bundle.Bundle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.svid, m.bundle = svid, bundle
	close(m.ch)
	m.ch = make(chan struct{})
}

func (m *memSource) GetX509SVID() (*x509svid.SVID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.svid == nil {
		return nil, errors.New("no SVID yet")
	}
	return m.svid, nil
}

func (m *memSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bundle == nil || m.bundle.TrustDomain() != td {
		return nil, errors.New("no bundle for " + td.String())
	}
	return m.bundle, nil
}

func (m *memSource) Updated() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ch
}

// testCA issues SVIDs for the SDS tests. The agent's tests use the real CA; here only
// the SDS mapping is under test, so a root that signs directly is enough.
type testCA struct {
	td   spiffeid.TrustDomain
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newTestCA(t testing.TB, td string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{td}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{td: spiffeid.RequireTrustDomainFromString(td), key: key, cert: cert}
}

func (ca *testCA) bundle(extra ...*x509.Certificate) *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, append([]*x509.Certificate{ca.cert}, extra...))
}

var serial = struct {
	sync.Mutex
	n int64
}{n: 100}

func (ca *testCA) issue(t testing.TB, path string) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial.Lock()
	serial.n++
	sn := serial.n
	serial.Unlock()
	id := spiffeid.RequireFromPath(ca.td, path)
	u, _ := url.Parse(id.String())
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(sn), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

// startServer runs a Server on a socket in a fresh directory and returns it with its
// socket path. It is stopped, and checked for leaked goroutines, at cleanup.
func startServer(t *testing.T, src Source) (*Server, string) {
	t.Helper()
	checkNoLeaks(t)
	// Unix socket paths are limited to 108 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "sds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "run", "socket")
	srv, err := New(Config{SocketPath: sock, Source: src, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run() = %v, want nil after cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of cancel")
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("Run() = %v before ready", err)
	case <-time.After(10 * time.Second):
		t.Fatal("SDS server not ready within 10s")
	}
	return srv, sock
}

// dial connects a real gRPC SDS client to the socket.
func dial(t *testing.T, sock string) secretv3.SecretDiscoveryServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return secretv3.NewSecretDiscoveryServiceClient(cc)
}

// sdsStream is a client stream with bounded receives.
type sdsStream struct {
	t      *testing.T
	s      grpc.BidiStreamingClient[discovery.DiscoveryRequest, discovery.DiscoveryResponse]
	recv   chan *discovery.DiscoveryResponse
	errc   chan error
	cancel context.CancelFunc
}

func openStream(t *testing.T, c secretv3.SecretDiscoveryServiceClient) *sdsStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	s, err := c.StreamSecrets(ctx)
	if err != nil {
		cancel()
		t.Fatalf("StreamSecrets: %v", err)
	}
	st := &sdsStream{t: t, s: s, recv: make(chan *discovery.DiscoveryResponse, 16), errc: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			r, err := s.Recv()
			if err != nil {
				st.errc <- err
				return
			}
			st.recv <- r
		}
	}()
	t.Cleanup(cancel)
	return st
}

var testNode = &corev3.Node{Id: "sidecar~127.0.0.1~web.default~default.svc.cluster.local"}

func (st *sdsStream) send(req *discovery.DiscoveryRequest) {
	st.t.Helper()
	if err := st.s.Send(req); err != nil {
		st.t.Fatalf("Send: %v", err)
	}
}

// request sends a subscription (or ACK when nonce is set) for names.
func (st *sdsStream) request(version, nonce string, names ...string) {
	st.t.Helper()
	st.send(&discovery.DiscoveryRequest{Node: testNode, TypeUrl: SecretTypeURL, ResourceNames: names, VersionInfo: version, ResponseNonce: nonce})
}

func (st *sdsStream) ack(r *discovery.DiscoveryResponse, names ...string) {
	st.t.Helper()
	st.request(r.GetVersionInfo(), r.GetNonce(), names...)
}

func (st *sdsStream) next() *discovery.DiscoveryResponse {
	st.t.Helper()
	select {
	case r := <-st.recv:
		return r
	case err := <-st.errc:
		st.t.Fatalf("stream ended: %v, want a response", err)
	case <-time.After(10 * time.Second):
		st.t.Fatal("no SDS response within 10s")
	}
	return nil
}

func (st *sdsStream) wantErr() error {
	st.t.Helper()
	select {
	case r := <-st.recv:
		st.t.Fatalf("got response version %s, want the stream to fail", r.GetVersionInfo())
	case err := <-st.errc:
		return err
	case <-time.After(10 * time.Second):
		st.t.Fatal("stream neither failed nor answered within 10s")
	}
	return nil
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// checkNoLeaks fails the test if a goroutine running this package's server code is left
// after every other cleanup has run.
func checkNoLeaks(t *testing.T) {
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			buf := make([]byte, 1<<20)
			stacks := string(buf[:runtime.Stack(buf, true)])
			var leaked []string
			for _, g := range strings.Split(stacks, "\n\n") {
				if strings.Contains(g, "internal/sds.(*Server)") || strings.Contains(g, "internal/sds.(*stream)") {
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
