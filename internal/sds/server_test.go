package sds

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata")

// secrets decodes a response into its Secrets by name.
func secrets(t *testing.T, r *discovery.DiscoveryResponse) map[string]*tlsv3.Secret {
	t.Helper()
	out := map[string]*tlsv3.Secret{}
	for _, a := range r.GetResources() {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatalf("resource of type %s: %v", a.GetTypeUrl(), err)
		}
		out[s.GetName()] = &s
	}
	return out
}

// leafOf returns the workload certificate carried in a "default" secret.
func leafOf(t *testing.T, s *tlsv3.Secret) *x509.Certificate {
	t.Helper()
	tc := s.GetTlsCertificate()
	if tc == nil {
		t.Fatalf("secret %q has no tls_certificate", s.GetName())
	}
	pair, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("secret %q: chain and key do not form a key pair: %v", s.GetName(), err)
	}
	return pair.Leaf
}

func staticSource(t *testing.T) *memSource {
	t.Helper()
	svid, err := x509svid.Load("testdata/cert-chain.pem", "testdata/key.pem")
	if err != nil {
		t.Fatal(err)
	}
	b, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString("cluster.local"), "testdata/root-cert.pem")
	if err != nil {
		t.Fatal(err)
	}
	src := newMemSource()
	src.set(svid, b)
	return src
}

// TestEnvoyExpectations checks what Envoy's SDS client relies on: the Secret type URL on
// the response and on every resource, each resource's name equal to the requested name,
// "default" as a tls_certificate with inline chain and key, "ROOTCA" as a
// validation_context with inline trusted_ca.
func TestEnvoyExpectations(t *testing.T) {
	if SecretTypeURL != resourcev3.SecretType {
		t.Fatalf("SecretTypeURL = %q, want go-control-plane's %q", SecretTypeURL, resourcev3.SecretType)
	}
	a, _ := anypb.New(&tlsv3.Secret{})
	if a.GetTypeUrl() != SecretTypeURL {
		t.Fatalf("Any type URL of tls.v3.Secret = %q, want %q", a.GetTypeUrl(), SecretTypeURL)
	}
	_, sock := startServer(t, staticSource(t))
	st := openStream(t, dial(t, sock))
	st.request("", "", WorkloadResource, RootResource)
	r := st.next()
	if r.GetTypeUrl() != SecretTypeURL || r.GetNonce() == "" || r.GetVersionInfo() == "" {
		t.Fatalf("response type_url=%q nonce=%q version=%q, want %q and non-empty nonce and version", r.GetTypeUrl(), r.GetNonce(), r.GetVersionInfo(), SecretTypeURL)
	}
	for _, res := range r.GetResources() {
		if res.GetTypeUrl() != SecretTypeURL {
			t.Errorf("resource type URL %q, want %q", res.GetTypeUrl(), SecretTypeURL)
		}
	}
	got := secrets(t, r)
	if len(got) != 2 {
		t.Fatalf("got secrets %v, want exactly default and ROOTCA", got)
	}
	leaf := leafOf(t, got[WorkloadResource])
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/default/sa/web" {
		t.Errorf("default leaf URIs = %v, want the workload's SPIFFE ID", leaf.URIs)
	}
	root, _ := os.ReadFile("testdata/root-cert.pem")
	if ca := got[RootResource].GetValidationContext().GetTrustedCa().GetInlineBytes(); !bytes.Equal(ca, root) {
		t.Errorf("ROOTCA trusted_ca = %q, want testdata/root-cert.pem", ca)
	}
}

// TestGoldenFetch pins the whole response, byte for byte in meaning, for fixed inputs.
// The golden file is protojson; it is compared as a message because protojson's
// whitespace is deliberately unstable.
func TestGoldenFetch(t *testing.T) {
	_, sock := startServer(t, staticSource(t))
	c := dial(t, sock)
	for _, names := range [][]string{{WorkloadResource}, {RootResource}, {RootResource, WorkloadResource}} {
		name := strings.Join(names, "+")
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := c.FetchSecrets(ctx, &discovery.DiscoveryRequest{Node: testNode, TypeUrl: SecretTypeURL, ResourceNames: names})
			if err != nil {
				t.Fatalf("FetchSecrets(%v) = %v", names, err)
			}
			golden := filepath.Join("testdata", "fetch-"+name+".json")
			if *update {
				b, err := protojson.MarshalOptions{Multiline: true}.Marshal(got)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, append(b, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			var want discovery.DiscoveryResponse
			if err := protojson.Unmarshal(b, &want); err != nil {
				t.Fatalf("parse %s: %v", golden, err)
			}
			if d := cmp.Diff(&want, got, protocmp.Transform()); d != "" {
				t.Errorf("FetchSecrets(%v) differs from %s (-want +got):\n%s", names, golden, d)
			}
		})
	}
}

func TestFetchErrors(t *testing.T) {
	src := newMemSource()
	_, sock := startServer(t, src)
	c := dial(t, sock)
	for _, tc := range []struct {
		name  string
		req   *discovery.DiscoveryRequest
		code  codes.Code
		inMsg string
	}{
		{"unknown name", &discovery.DiscoveryRequest{ResourceNames: []string{"file-cert:/etc/x.pem"}}, codes.NotFound, `"file-cert:/etc/x.pem"`},
		{"no names", &discovery.DiscoveryRequest{}, codes.InvalidArgument, "needs resource names"},
		{"wrong type", &discovery.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: []string{WorkloadResource}}, codes.InvalidArgument, resourcev3.ClusterType},
		{"no certificate yet", &discovery.DiscoveryRequest{ResourceNames: []string{WorkloadResource}}, codes.Unavailable, "no valid workload certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.FetchSecrets(ctx, tc.req)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.inMsg) {
				t.Errorf("FetchSecrets(%v) = %v, want code %v mentioning %s", tc.req.GetResourceNames(), err, tc.code, tc.inMsg)
			}
		})
	}
}

func TestStreamErrors(t *testing.T) {
	_, sock := startServer(t, staticSource(t))
	c := dial(t, sock)
	for _, tc := range []struct {
		name  string
		req   *discovery.DiscoveryRequest
		code  codes.Code
		inMsg string
	}{
		{"unknown name", &discovery.DiscoveryRequest{Node: testNode, TypeUrl: SecretTypeURL, ResourceNames: []string{WorkloadResource, "sds-grpc"}}, codes.NotFound, `unknown SDS resource "sds-grpc"`},
		{"no node", &discovery.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: []string{WorkloadResource}}, codes.InvalidArgument, "node.id"},
		{"wrong type", &discovery.DiscoveryRequest{Node: testNode, TypeUrl: resourcev3.ListenerType, ResourceNames: []string{WorkloadResource}}, codes.InvalidArgument, resourcev3.ListenerType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStream(t, c)
			st.send(tc.req)
			err := st.wantErr()
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.inMsg) {
				t.Errorf("StreamSecrets(%v) ended with %v, want code %v mentioning %s", tc.req.GetResourceNames(), err, tc.code, tc.inMsg)
			}
		})
	}
}

// TestRotationPushesToEveryStream: each change of the Source reaches every subscribed
// stream once, with a new version, and a second client sees the same secrets.
func TestRotationPushesToEveryStream(t *testing.T) {
	ca := newTestCA(t, "cluster.local")
	src := newMemSource()
	src.set(ca.issue(t, "/ns/default/sa/web"), ca.bundle())
	_, sock := startServer(t, src)

	a := openStream(t, dial(t, sock))
	b := openStream(t, dial(t, sock)) // a second client on the same socket
	a.request("", "", WorkloadResource)
	b.request("", "", WorkloadResource)
	ra, rb := a.next(), b.next()
	if ra.GetVersionInfo() != rb.GetVersionInfo() {
		t.Fatalf("two clients got versions %s and %s for the same secrets", ra.GetVersionInfo(), rb.GetVersionInfo())
	}
	if la, lb := leafOf(t, secrets(t, ra)[WorkloadResource]), leafOf(t, secrets(t, rb)[WorkloadResource]); !la.Equal(lb) {
		t.Fatal("two clients got different certificates")
	}
	a.ack(ra, WorkloadResource)
	b.ack(rb, WorkloadResource)

	seen := map[string]bool{ra.GetVersionInfo(): true}
	for i := range 3 {
		svid := ca.issue(t, "/ns/default/sa/web")
		src.set(svid, ca.bundle())
		for _, st := range []*sdsStream{a, b} {
			r := st.next()
			if seen[r.GetVersionInfo()] && st == a {
				t.Fatalf("rotation %d: version %s was sent before", i, r.GetVersionInfo())
			}
			if got := leafOf(t, secrets(t, r)[WorkloadResource]); !got.Equal(svid.Certificates[0]) {
				t.Fatalf("rotation %d: pushed serial %v, want the new certificate %v", i, got.SerialNumber, svid.Certificates[0].SerialNumber)
			}
			st.ack(r, WorkloadResource)
			seen[r.GetVersionInfo()] = true
		}
	}
}

// TestACKAndNACK: an ACK or NACK gets no answer; the same version is not re-sent when the
// Source signals without changing what the client watches; a real change is sent once.
func TestACKAndNACK(t *testing.T) {
	ca := newTestCA(t, "cluster.local")
	src := newMemSource()
	first := ca.issue(t, "/ns/default/sa/web")
	src.set(first, ca.bundle())
	_, sock := startServer(t, src)
	st := openStream(t, dial(t, sock))

	st.request("", "", RootResource)
	r1 := st.next()
	// NACK it.
	st.send(&discovery.DiscoveryRequest{Node: testNode, TypeUrl: SecretTypeURL, ResourceNames: []string{RootResource},
		VersionInfo: "", ResponseNonce: r1.GetNonce(), ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "bad CA"}})
	// The workload certificate rotates but the bundle does not: ROOTCA is unchanged, so
	// nothing may be sent.
	src.set(ca.issue(t, "/ns/default/sa/web"), ca.bundle())
	// A stale nonce is ignored too.
	st.request(r1.GetVersionInfo(), "stale-nonce", RootResource, WorkloadResource)
	// Adding a resource with the current nonce gets an answer: it must be the next
	// message, proving nothing was sent in between.
	st.request(r1.GetVersionInfo(), r1.GetNonce(), RootResource, WorkloadResource)
	r2 := st.next()
	if got := secrets(t, r2); len(got) != 2 {
		t.Fatalf("after subscribing to both, got %d secrets, want 2", len(got))
	}
	if r2.GetVersionInfo() == r1.GetVersionInfo() {
		t.Fatalf("version %s reused for different content", r2.GetVersionInfo())
	}
	st.ack(r2, RootResource, WorkloadResource)

	// Root rotation: the bundle gains a second root.
	next := newTestCA(t, "cluster.local")
	src.set(ca.issue(t, "/ns/default/sa/web"), ca.bundle(next.cert))
	r3 := st.next()
	roots := secrets(t, r3)[RootResource].GetValidationContext().GetTrustedCa().GetInlineBytes()
	if n := bytes.Count(roots, []byte("BEGIN CERTIFICATE")); n != 2 {
		t.Fatalf("ROOTCA holds %d roots after root rotation, want 2", n)
	}
}

// TestWaitsForCertificate: a request before the agent holds a certificate is answered as
// soon as it does, not refused and not dropped.
func TestWaitsForCertificate(t *testing.T) {
	src := newMemSource()
	_, sock := startServer(t, src)
	st := openStream(t, dial(t, sock))
	st.request("", "", WorkloadResource)
	ca := newTestCA(t, "cluster.local")
	// Let the request reach the server before the certificate exists; if the order is the
	// other way round the test still passes, it only covers less.
	time.Sleep(50 * time.Millisecond)
	svid := ca.issue(t, "/ns/default/sa/web")
	src.set(svid, ca.bundle())
	if got := leafOf(t, secrets(t, st.next())[WorkloadResource]); !got.Equal(svid.Certificates[0]) {
		t.Fatal("pushed certificate is not the one the source got")
	}
}

func TestSocket(t *testing.T) {
	srv, sock := startServer(t, staticSource(t))
	_ = srv
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(sock))
	if len(entries) != 1 {
		t.Errorf("socket directory holds %d entries, want only the socket (temporary directory left behind?)", len(entries))
	}

	// A second server on the same path must not steal a live socket.
	second, err := New(Config{SocketPath: sock, Source: staticSource(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Run on a live socket = %v, want an in-use error", err)
	}
}

func TestSocketPathChecks(t *testing.T) {
	dir, err := os.MkdirTemp("", "sds")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, "stale")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // leaves a socket file nobody answers on

	for _, tc := range []struct {
		name, path, wantErr string
	}{
		{"regular file is refused", regular, "not a socket"},
		{"stale socket is replaced", stale, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := New(Config{SocketPath: tc.path, Source: newMemSource(), Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Run(ctx) }()
			select {
			case <-srv.Ready():
				cancel()
				err = <-done
			case err = <-done:
			}
			cancel()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Run(%s) = %v, want error containing %q", tc.path, err, tc.wantErr)
			}
			if tc.wantErr == "" {
				if _, err := os.Lstat(tc.path); !os.IsNotExist(err) {
					t.Errorf("socket %s still exists after Run returned: %v", tc.path, err)
				}
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no socket", Config{Source: newMemSource(), Logger: testLogger(t)}, "socket path"},
		{"no source", Config{SocketPath: "x", Logger: testLogger(t)}, "source"},
		{"no logger", Config{SocketPath: "x", Source: newMemSource()}, "logger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New(%s) = %v, want error about %s", tc.name, err, tc.want)
			}
		})
	}
}

// TestNoLostUpdates: changes that race with ACKs are never lost: after a burst of
// rotations, each acknowledged as it arrives, the stream ends up with the last one.
func TestNoLostUpdates(t *testing.T) {
	ca := newTestCA(t, "cluster.local")
	src := newMemSource()
	src.set(ca.issue(t, "/ns/default/sa/web"), ca.bundle())
	_, sock := startServer(t, src)
	st := openStream(t, dial(t, sock))
	st.request("", "", WorkloadResource)
	r := st.next()
	var last *x509svid.SVID
	for range 30 {
		last = ca.issue(t, "/ns/default/sa/web")
		src.set(last, ca.bundle())
		st.ack(r, WorkloadResource)
		select {
		case r = <-st.recv:
		case <-time.After(5 * time.Millisecond):
		}
	}
	deadline := time.After(10 * time.Second)
	for !leafOf(t, secrets(t, r)[WorkloadResource]).Equal(last.Certificates[0]) {
		st.ack(r, WorkloadResource)
		select {
		case r = <-st.recv:
		case err := <-st.errc:
			t.Fatal(err)
		case <-deadline:
			t.Fatal("the last rotation never reached the stream")
		}
	}
}

// BenchmarkFetchSecrets measures one FetchSecrets round trip over the unix socket,
// including PEM encoding of the chain, key and bundle.
func BenchmarkFetchSecrets(b *testing.B) {
	svid, err := x509svid.Load("testdata/cert-chain.pem", "testdata/key.pem")
	if err != nil {
		b.Fatal(err)
	}
	bundle, _ := x509bundle.Load(spiffeid.RequireTrustDomainFromString("cluster.local"), "testdata/root-cert.pem")
	src := newMemSource()
	src.set(svid, bundle)
	dir, _ := os.MkdirTemp("", "sdsbench")
	defer os.RemoveAll(dir)
	srv, _ := New(Config{SocketPath: filepath.Join(dir, "s"), Source: src, Logger: testLogger(b)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-srv.Ready()
	cc, err := grpc.NewClient("unix://"+filepath.Join(dir, "s"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	c := secretv3.NewSecretDiscoveryServiceClient(cc)
	req := &discovery.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: []string{WorkloadResource, RootResource}}
	for b.Loop() {
		if _, err := c.FetchSecrets(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshotResponse measures building the response a push sends.
func BenchmarkSnapshotResponse(b *testing.B) {
	svid, _ := x509svid.Load("testdata/cert-chain.pem", "testdata/key.pem")
	bundle, _ := x509bundle.Load(spiffeid.RequireTrustDomainFromString("cluster.local"), "testdata/root-cert.pem")
	names := []string{WorkloadResource, RootResource}
	for b.Loop() {
		snap, err := newSnapshot(svid, bundle)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := snap.response(names, "n"); err != nil {
			b.Fatal(err)
		}
	}
}
