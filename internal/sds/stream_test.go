package sds

import (
	"context"
	"strings"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// memOut records what a stream sends; it is the server side of a stream without gRPC, so
// the state machine can be driven step by step.
type memOut struct {
	grpc.ServerStream
	sent []*discovery.DiscoveryResponse
}

func (m *memOut) Send(r *discovery.DiscoveryResponse) error { m.sent = append(m.sent, r); return nil }
func (m *memOut) Recv() (*discovery.DiscoveryRequest, error) {
	panic("memOut.Recv: the state machine never reads")
}
func (m *memOut) Context() context.Context { return context.Background() }

func newMemStream(t testing.TB, src Source) (*stream, *memOut) {
	srv, err := New(Config{SocketPath: "unused", Source: src, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	out := &memOut{}
	return &stream{s: srv, log: srv.log, out: out}, out
}

// step is one event in a stream's life: a request (names, and which earlier response's
// nonce it carries: -1 none, -2 a stale one) or a Source change.
type step struct {
	names    []string
	nonceOf  int
	nack     bool
	rotate   bool // issue a new workload certificate
	rotateCA bool // add a root to the bundle
	wantSend bool
}

func TestStreamStateMachine(t *testing.T) {
	const none, stale = -1, -2
	d, r := WorkloadResource, RootResource
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"initial request is answered", []step{{names: []string{d}, nonceOf: none, wantSend: true}}},
		{"ACK is not answered", []step{
			{names: []string{d}, nonceOf: none, wantSend: true},
			{names: []string{d}, nonceOf: 0},
		}},
		{"rotation is pushed once", []step{
			{names: []string{d}, nonceOf: none, wantSend: true},
			{names: []string{d}, nonceOf: 0},
			{rotate: true, wantSend: true},
			{names: []string{d}, nonceOf: 1},
		}},
		{"NACK is not answered and not retried", []step{
			{names: []string{d}, nonceOf: none, wantSend: true},
			{names: []string{d}, nonceOf: 0, nack: true},
			{names: []string{d}, nonceOf: 0, nack: true},
		}},
		{"after a NACK a real change is sent", []step{
			{names: []string{d}, nonceOf: none, wantSend: true},
			{names: []string{d}, nonceOf: 0, nack: true},
			{rotate: true, wantSend: true},
		}},
		{"change that does not touch watched resources is not sent", []step{
			{names: []string{r}, nonceOf: none, wantSend: true},
			{names: []string{r}, nonceOf: 0},
			{rotate: true},
			{rotateCA: true, wantSend: true},
		}},
		{"stale nonce is ignored", []step{
			{names: []string{d}, nonceOf: none, wantSend: true},
			{names: []string{d, r}, nonceOf: stale},
		}},
		{"adding a resource is answered", []step{
			{names: []string{d}, nonceOf: none, wantSend: true},
			{names: []string{d, r}, nonceOf: 0, wantSend: true},
		}},
		{"removing a resource is not answered", []step{
			{names: []string{d, r}, nonceOf: none, wantSend: true},
			{names: []string{d}, nonceOf: 0},
		}},
		{"unsubscribed stream gets no push", []step{
			{names: []string{d}, nonceOf: none, wantSend: true},
			{names: nil, nonceOf: 0},
			{rotate: true},
			{names: []string{d}, nonceOf: none, wantSend: true},
		}},
		{"reconnect with an old nonce is answered", []step{
			{names: []string{d}, nonceOf: stale, wantSend: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newTestCA(t, "cluster.local")
			src := newMemSource()
			src.set(ca.issue(t, "/ns/default/sa/web"), ca.bundle())
			st, out := newMemStream(t, src)
			extra := newTestCA(t, "cluster.local")
			for i, s := range tc.steps {
				before := len(out.sent)
				switch {
				case s.rotate:
					src.set(ca.issue(t, "/ns/default/sa/web"), ca.bundle())
					if err := st.push(); err != nil {
						t.Fatalf("step %d: push() = %v", i, err)
					}
				case s.rotateCA:
					src.set(ca.issue(t, "/ns/default/sa/web"), ca.bundle(extra.cert))
					if err := st.push(); err != nil {
						t.Fatalf("step %d: push() = %v", i, err)
					}
				default:
					req := &discovery.DiscoveryRequest{Node: testNode, TypeUrl: SecretTypeURL, ResourceNames: s.names}
					switch s.nonceOf {
					case none:
					case stale:
						req.ResponseNonce = "stale"
					default:
						req.ResponseNonce = out.sent[s.nonceOf].GetNonce()
						req.VersionInfo = out.sent[s.nonceOf].GetVersionInfo()
					}
					if s.nack {
						req.ErrorDetail = &statuspb.Status{Code: 3, Message: "rejected"}
					}
					if err := st.handle(req); err != nil {
						t.Fatalf("step %d: handle(%v) = %v", i, s.names, err)
					}
				}
				if sent := len(out.sent) > before; sent != s.wantSend {
					t.Fatalf("step %d (%+v): sent = %v, want %v", i, s, sent, s.wantSend)
				}
			}
		})
	}
}

// FuzzStream drives the state machine with arbitrary requests and changes and checks
// the protocol's promises: every response carries the Secret type, a fresh nonce, only
// known resources that were asked for, never the same version twice in a row; unknown
// names end the stream with an error naming the resource.
func FuzzStream(f *testing.F) {
	f.Add("default", "", false, byte(0))
	f.Add("default,ROOTCA", "x", true, byte(3))
	f.Add("ROOTCA", "", false, byte(7))
	f.Add("sds-grpc", "", false, byte(1))
	f.Add("", "", false, byte(2))
	f.Add("default,file-root:/etc/ca.pem", "n", false, byte(255))
	ca := newTestCA(f, "cluster.local")
	extra := newTestCA(f, "cluster.local")
	svids := []*x509svid.SVID{ca.issue(f, "/ns/a/sa/b"), ca.issue(f, "/ns/a/sa/b")}
	f.Fuzz(func(t *testing.T, names, nonce string, nack bool, script byte) {
		src := newMemSource()
		src.set(svids[0], ca.bundle())
		st, out := newMemStream(t, src)
		list := strings.Split(names, ",")
		if names == "" {
			list = nil
		}
		for i := range 8 {
			op := script >> (i % 8) & 1
			var err error
			if op == 0 || i == 0 {
				req := &discovery.DiscoveryRequest{Node: testNode, TypeUrl: SecretTypeURL, ResourceNames: list}
				if i > 0 && len(out.sent) > 0 {
					req.ResponseNonce = out.sent[len(out.sent)-1].GetNonce()
				} else {
					req.ResponseNonce = nonce
				}
				if nack && i%2 == 1 {
					req.ErrorDetail = &statuspb.Status{Code: 3}
				}
				err = st.handle(req)
			} else {
				b := ca.bundle()
				if i%3 == 0 {
					b = ca.bundle(extra.cert)
				}
				src.set(svids[i%2], b)
				err = st.push()
			}
			if err != nil {
				if checkNames(list) == nil {
					t.Fatalf("step %d: error %v for known names %q", i, err, list)
				}
				if !strings.Contains(status.Convert(err).Message(), "unknown SDS resource") {
					t.Fatalf("step %d: error %v does not explain the unknown resource", i, err)
				}
				return
			}
		}
		seenNonce := map[string]bool{}
		for i, r := range out.sent {
			if r.GetTypeUrl() != SecretTypeURL || r.GetNonce() == "" || seenNonce[r.GetNonce()] {
				t.Fatalf("response %d: type %q nonce %q (reused=%v)", i, r.GetTypeUrl(), r.GetNonce(), seenNonce[r.GetNonce()])
			}
			seenNonce[r.GetNonce()] = true
			if i > 0 && r.GetVersionInfo() == out.sent[i-1].GetVersionInfo() {
				t.Fatalf("response %d repeats version %s", i, r.GetVersionInfo())
			}
			for _, a := range r.GetResources() {
				if a.GetTypeUrl() != SecretTypeURL {
					t.Fatalf("resource type %q", a.GetTypeUrl())
				}
			}
			if len(r.GetResources()) == 0 || len(r.GetResources()) > len(sortedUnique(list)) {
				t.Fatalf("response %d carries %d resources for names %q", i, len(r.GetResources()), list)
			}
		}
	})
}
