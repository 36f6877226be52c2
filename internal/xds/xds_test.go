package xds_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	security "istio.io/api/security/v1beta1"

	"github.com/meshguard/meshguard/internal/authn/peercert"
	"github.com/meshguard/meshguard/internal/authz"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/xds"
)

const baseYAML = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-sleep, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: prod-only, namespace: prod}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/secret"]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: prod-private, namespace: prod}
spec:
  host: db.prod.svc.cluster.local
  exportTo: ["."]
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  ports: [{number: 8000, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: httpbin}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: httpbin-1, namespace: default}
spec: {address: 127.0.0.1, labels: {app: httpbin}, serviceAccount: httpbin}
`

func load(t testing.TB, y string) *config.Snapshot {
	t.Helper()
	s, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "test.yaml", Data: []byte(y)})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return s
}

type fixture struct {
	ca    *meshtest.CA
	store *config.StaticStore
	srv   *meshtest.XDS
}

func start(t *testing.T, y string) *fixture {
	t.Helper()
	f := &fixture{ca: meshtest.NewCA(t, "cluster.local"), store: config.NewStaticStore(load(t, y))}
	f.srv = meshtest.StartXDS(t, meshtest.XDSOptions{CA: f.ca, Store: f.store})
	return f
}

func (f *fixture) client(t *testing.T, ns, sa string, node xds.Node) *meshtest.XDSClient {
	t.Helper()
	cert := f.ca.Issue(t, f.ca.ID(ns, sa), time.Hour)
	if node.ID == "" {
		node.ID = "sidecar~127.0.0.1~" + sa + "." + ns
	}
	return meshtest.StartXDSClient(t, meshtest.DialXDS(t, f.ca, f.srv.Addr, cert), node)
}

func (f *fixture) operator(t *testing.T) []xds.ProxyStatus {
	t.Helper()
	cc := meshtest.DialXDS(t, f.ca, f.srv.Addr, f.ca.Issue(t, f.ca.OperatorID(), time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ps, err := xds.FetchStatus(ctx, cc)
	if err != nil {
		t.Fatalf("FetchStatus: %v", err)
	}
	return ps
}

func keys(s *config.Snapshot) []string {
	var out []string
	for _, o := range s.Objects {
		out = append(out, string(o.Kind)+" "+o.Key())
	}
	slices.Sort(out)
	return out
}

func has(s *config.Snapshot, kind config.Kind, key string) bool {
	return slices.ContainsFunc(s.Objects, func(o *config.Object) bool { return o.Kind == kind && o.Key() == key })
}

// decide evaluates a request from principal to the httpbin workload under the config a
// client holds, the way the sidecar does: select, compile, evaluate.
func decide(t *testing.T, s *config.Snapshot, principal string) authz.Decision {
	t.Helper()
	w := policy.Workload{Namespace: "default", Name: "httpbin", ServiceAccount: "httpbin", Labels: map[string]string{"app": "httpbin"}}
	e, err := authz.New(policy.NewIndex(s).AuthorizationPolicies(w), s.Mesh, authz.Options{})
	if err != nil {
		t.Fatalf("authz.New: %v", err)
	}
	return e.Evaluate(context.Background(), &authz.Request{SourcePrincipal: principal, Method: "GET", Host: "httpbin", Path: "/get"})
}

var httpbin = xds.Node{WorkloadName: "httpbin", Labels: map[string]string{"app": "httpbin"}}

func TestPolicyChangeReachesSidecarAndChangesDecisions(t *testing.T) {
	f := start(t, baseYAML)
	c := f.client(t, "default", "httpbin", httpbin)
	snap := c.WaitFor(t, "initial config", func(s *config.Snapshot) bool { return has(s, config.KindAuthorizationPolicy, "default/allow-sleep") })
	if d := decide(t, snap, "cluster.local/ns/default/sa/other"); d.Allow {
		t.Fatalf("before the change: other allowed (%v), want denied", d)
	}
	f.store.Set(load(t, strings.Replace(baseYAML, `"cluster.local/ns/default/sa/sleep"`, `"cluster.local/ns/default/sa/sleep", "cluster.local/ns/default/sa/other"`, 1)))
	snap = c.WaitFor(t, "changed config", func(s *config.Snapshot) bool {
		return decide(t, s, "cluster.local/ns/default/sa/other").Allow
	})
	if d := decide(t, snap, "cluster.local/ns/default/sa/nobody"); d.Allow {
		t.Errorf("after the change: nobody allowed (%v), want denied", d)
	}
	// Every type is ACKed at one version, visible to the operator.
	ps := f.operator(t)
	if len(ps) != 1 {
		t.Fatalf("FetchStatus = %d sidecars, want 1", len(ps))
	}
	for _, ty := range ps[0].Types {
		if ty.Status != "SYNCED" || ty.Acked != c.Status().Version {
			t.Errorf("%s: status %s acked %q, want SYNCED at %q", ty.TypeURL, ty.Status, ty.Acked, c.Status().Version)
		}
	}
}

func TestViewIsScopedByCertificateNotClaims(t *testing.T) {
	f := start(t, baseYAML)
	t.Run("labels cannot reach another namespace", func(t *testing.T) {
		// Labels that prod's policies select do not make prod's policies visible.
		c := f.client(t, "default", "httpbin", httpbin)
		snap := c.WaitFor(t, "config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })
		want := []string{
			"AuthorizationPolicy default/allow-sleep",
			"PeerAuthentication istio-system/default",
			"ServiceEntry default/httpbin",
			"WorkloadEntry default/httpbin-1",
		}
		if got := keys(snap); !slices.Equal(got, want) {
			t.Errorf("view = %v, want %v", got, want)
		}
	})
	t.Run("unselected workload gets no selector policies", func(t *testing.T) {
		c := f.client(t, "default", "sleep", xds.Node{WorkloadName: "sleep", Labels: map[string]string{"app": "sleep"}})
		snap := c.WaitFor(t, "config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })
		if has(snap, config.KindAuthorizationPolicy, "default/allow-sleep") {
			t.Errorf("sleep got httpbin's policy: %v", keys(snap))
		}
	})
	for _, tc := range []struct {
		name string
		node xds.Node
		want string
	}{
		{"claimed namespace", xds.Node{Namespace: "prod", Labels: map[string]string{"app": "httpbin"}}, `NAMESPACE "prod" does not match`},
		{"claimed service account", xds.Node{ServiceAccount: "admin"}, `SERVICE_ACCOUNT "admin" does not match`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.client(t, "default", "httpbin", tc.node)
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(c.Status().LastError, tc.want) {
				if time.Now().After(deadline) {
					t.Fatalf("client status %+v, want a refusal containing %q", c.Status(), tc.want)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if !strings.Contains(c.Status().LastError, "PermissionDenied") {
				t.Errorf("LastError = %q, want PermissionDenied", c.Status().LastError)
			}
			if _, err := c.Snapshot(context.Background()); !errors.Is(err, config.ErrNoSnapshot) {
				t.Errorf("refused client has a snapshot (err %v)", err)
			}
		})
	}
}

// TestNACK pushes a snapshot the sidecar's validation rejects (the control plane's
// loader would never produce it; a newer sidecar or a bug could). The sidecar keeps
// its config and the operator sees the NACK.
func TestNACK(t *testing.T) {
	f := start(t, baseYAML)
	c := f.client(t, "default", "httpbin", httpbin)
	before := c.WaitFor(t, "initial config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })
	good := load(t, baseYAML)
	bad := &config.Object{Kind: config.KindAuthorizationPolicy, Meta: config.Meta{Namespace: "default", Name: "bad"},
		Spec: &security.AuthorizationPolicy{Rules: []*security.Rule{{To: []*security.Rule_To{{Operation: &security.Operation{Methods: []string{""}}}}}}}}
	f.store.Set(config.NewSnapshot(append(slices.Clone(good.Objects), bad), good.Mesh))
	deadline := time.Now().Add(10 * time.Second)
	for c.Status().LastNACK == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no NACK; client status %+v", c.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := c.Status().LastNACK.Detail; !strings.Contains(d, "AuthorizationPolicy default/bad: spec.rules[0].to[0].operation.methods[0]: empty value not allowed") {
		t.Errorf("NACK detail = %q, want the validation message", d)
	}
	after, _ := c.Snapshot(context.Background())
	if after != before {
		t.Errorf("snapshot changed after a NACK: %v", keys(after))
	}
	var nacked bool
	for ps := f.operator(t); !nacked; ps = f.operator(t) {
		for _, ty := range ps[0].Types {
			if ty.TypeURL == xds.TypeAuthorizationPolicy && ty.Status == "ERROR" && ty.LastNACK != nil && strings.Contains(ty.LastNACK.Detail, "empty value not allowed") {
				nacked = true
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("operator status shows no NACK: %+v", ps)
		}
	}
	// The next good config is accepted.
	f.store.Set(load(t, baseYAML+"---\n"+strings.Replace(strings.SplitN(baseYAML, "---", 2)[0], "allow-sleep", "allow-sleep-2", 1)))
	c.WaitFor(t, "good config after NACK", func(s *config.Snapshot) bool { return has(s, config.KindAuthorizationPolicy, "default/allow-sleep-2") })
}

func TestControlPlaneRestart(t *testing.T) {
	f := start(t, baseYAML)
	c := f.client(t, "default", "httpbin", httpbin)
	before := c.WaitFor(t, "initial config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })
	addr := f.srv.Addr
	f.srv.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for c.Status().Connected {
		if time.Now().After(deadline) {
			t.Fatal("client still connected after the server stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s, _ := c.Snapshot(context.Background()); s != before {
		t.Fatal("client dropped its config when the control plane went away")
	}
	if d := decide(t, before, "cluster.local/ns/default/sa/sleep"); !d.Allow {
		t.Errorf("while disconnected: sleep denied (%v), want the last config enforced", d)
	}
	// The control plane comes back with changed config on the same address.
	f.store.Set(load(t, strings.Replace(baseYAML, "default/sa/sleep", "default/sa/other", 1)))
	f.srv = meshtest.StartXDS(t, meshtest.XDSOptions{CA: f.ca, Store: f.store, Addr: addr})
	snap := c.WaitFor(t, "resync", func(s *config.Snapshot) bool { return decide(t, s, "cluster.local/ns/default/sa/other").Allow })
	if d := decide(t, snap, "cluster.local/ns/default/sa/sleep"); d.Allow {
		t.Errorf("after resync: sleep allowed (%v), want denied", d)
	}
}

// TestPushOnlyToAffected changes a policy in prod: the default sidecar's view is
// unchanged, so it gets no push at all.
func TestPushOnlyToAffected(t *testing.T) {
	f := start(t, baseYAML)
	def := f.client(t, "default", "httpbin", httpbin)
	prod := f.client(t, "prod", "httpbin", httpbin)
	def.WaitFor(t, "default config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })
	prodBefore := prod.WaitFor(t, "prod config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })
	defAcked := def.Status().AckedAt
	f.store.Set(load(t, strings.Replace(baseYAML, `paths: ["/secret"]`, `paths: ["/secret", "/admin"]`, 1)))
	prod.WaitFor(t, "prod change", func(s *config.Snapshot) bool { return s != prodBefore })
	// The default sidecar's stream is processed by the same Run loop; by the time the
	// operator sees prod SYNCED at the new version, default has been considered too.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps := f.operator(t)
		synced := false
		for _, p := range ps {
			if p.Namespace == "prod" && p.Types[0].Acked == prod.Status().Version {
				synced = true
			}
		}
		if synced || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := def.Status().AckedAt; !got.Equal(defAcked) {
		t.Errorf("default sidecar ACKed a push at %v after an unrelated change (first at %v)", got, defAcked)
	}
}

func TestOperatorAccess(t *testing.T) {
	f := start(t, baseYAML)
	c := f.client(t, "default", "httpbin", httpbin)
	c.WaitFor(t, "config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		cert *meshtest.Cert
		code codes.Code
	}{
		{"workload identity", f.ca.Issue(t, f.ca.ID("default", "httpbin"), time.Hour), codes.PermissionDenied},
		{"operator name in another namespace", f.ca.Issue(t, f.ca.ID("default", "meshguard-operator"), time.Hour), codes.PermissionDenied},
		{"no certificate", nil, codes.Unauthenticated},
		{"foreign CA", meshtest.NewCA(t, "cluster.local").Issue(t, f.ca.OperatorID(), time.Hour), codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := meshtest.DialXDS(t, f.ca, f.srv.Addr, tc.cert)
			_, err := xds.FetchStatus(ctx, cc)
			if status.Code(errors.Unwrap(err)) != tc.code && status.Code(err) != tc.code {
				t.Errorf("FetchStatus = %v, want code %v", err, tc.code)
			}
			_, _, err = xds.FetchConfigDump(ctx, cc, "default/httpbin")
			if err == nil {
				t.Errorf("FetchConfigDump succeeded for %s", tc.name)
			}
		})
	}
	t.Run("operator", func(t *testing.T) {
		cc := meshtest.DialXDS(t, f.ca, f.srv.Addr, f.ca.Issue(t, f.ca.OperatorID(), time.Hour))
		ps, err := xds.FetchStatus(ctx, cc)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 1 || ps[0].Identity != "spiffe://cluster.local/ns/default/sa/httpbin" || ps[0].Labels["app"] != "httpbin" || ps[0].CertExpiry.IsZero() {
			t.Errorf("FetchStatus = %+v", ps)
		}
		snap, version, err := xds.FetchConfigDump(ctx, cc, "default/httpbin")
		if err != nil {
			t.Fatal(err)
		}
		if version != c.Status().Version {
			t.Errorf("dump version %q, sidecar ACKed %q", version, c.Status().Version)
		}
		mine, _ := c.Snapshot(ctx)
		if !slices.Equal(keys(snap), keys(mine)) || snap.Version != mine.Version {
			t.Errorf("dump %v (%s), sidecar holds %v (%s)", keys(snap), snap.Version, keys(mine), mine.Version)
		}
		if _, _, err := xds.FetchConfigDump(ctx, cc, "default/nothere"); status.Code(errors.Unwrap(err)) != codes.NotFound {
			t.Errorf("dump of an unknown workload = %v, want NotFound", err)
		}
	})
}

// TestStreamEndsWhenCertificateExpires: the server never keeps serving a stream past
// its certificate.
func TestStreamEndsWhenCertificateExpires(t *testing.T) {
	f := start(t, baseYAML)
	id := f.ca.ID("default", "httpbin")
	cert := f.ca.IssueWith(t, id, meshtest.IssueOptions{Now: time.Now().Add(-time.Hour + 1500*time.Millisecond), TTL: time.Hour})
	c := meshtest.StartXDSClient(t, meshtest.DialXDS(t, f.ca, f.srv.Addr, cert), xds.Node{ID: "short-lived"})
	c.WaitFor(t, "config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })
	deadline := time.Now().Add(10 * time.Second)
	for c.Status().Connected || len(f.operator(t)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("stream still open after the certificate expired; client %+v", c.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := c.Snapshot(context.Background()); err != nil {
		t.Errorf("client lost its config: %v", err)
	}
}

// TestRunEndEndsStreams: when Server.Run returns (control plane shutdown), every
// stream ends with Unavailable at once, so the gRPC server's graceful stop is not held
// up by long-lived streams and sidecars reconnect.
func TestRunEndEndsStreams(t *testing.T) {
	ca := meshtest.NewCA(t, "cluster.local")
	srv, err := xds.NewServer(xds.ServerConfig{Store: config.NewStaticStore(load(t, baseYAML)), Authenticator: peercert.New("cluster.local", nil)})
	if err != nil {
		t.Fatal(err)
	}
	serving := ca.IssueWith(t, ca.ID("istio-system", "istiod"), meshtest.IssueOptions{DNSNames: []string{"localhost"}})
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serving.TLSCertificate()}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool(), MinVersion: tls.VersionTLS12,
	})))
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }()
	c := meshtest.StartXDSClient(t, meshtest.DialXDS(t, ca, lis.Addr().String(), ca.Issue(t, ca.ID("default", "httpbin"), time.Hour)),
		xds.Node{ID: "httpbin-1", WorkloadName: "httpbin", Labels: httpbin.Labels})
	c.WaitFor(t, "config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })

	cancel()
	if err := <-runDone; err != nil {
		t.Fatalf("Run = %v", err)
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop still waiting 5s after Run returned: streams outlive the server")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(c.Status().LastError, "control plane shutting down") {
		if time.Now().After(deadline) {
			t.Fatalf("client status %+v, want the stream ended with the shutdown reason", c.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(c.Status().LastError, "Unavailable") {
		t.Errorf("LastError = %q, want code Unavailable", c.Status().LastError)
	}
}

// TestStaleACKStillCounts: a sidecar that ACKs a push after a newer one was sent (its
// nonces are stale, so the protocol ignores them) still reports in version_info what it
// applied, and status and config dump say so, rather than "nothing accepted".
func TestStaleACKStillCounts(t *testing.T) {
	f := start(t, baseYAML)
	cc := meshtest.DialXDS(t, f.ca, f.srv.Addr, f.ca.Issue(t, f.ca.ID("default", "httpbin"), time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &core.Node{Id: "raw-1", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		xds.MetaWorkloadName: structpb.NewStringValue("httpbin"),
		xds.MetaLabels:       structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"app": structpb.NewStringValue("httpbin")}}),
	}}}
	for i, ty := range xds.Types {
		req := &discovery.DiscoveryRequest{TypeUrl: ty}
		if i == 0 {
			req.Node = node
		}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	recvPush := func() map[string]*discovery.DiscoveryResponse {
		t.Helper()
		got := map[string]*discovery.DiscoveryResponse{}
		for len(got) < len(xds.Types) {
			r, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			got[r.GetTypeUrl()] = r
		}
		return got
	}
	first := recvPush()
	v1 := first[xds.TypeMeshConfig].GetVersionInfo()
	// A change to httpbin's view is pushed before the sidecar ACKs the first push.
	f.store.Set(load(t, strings.Replace(baseYAML, "default/sa/sleep", "default/sa/other", 1)))
	second := recvPush()
	if v2 := second[xds.TypeMeshConfig].GetVersionInfo(); v2 == v1 {
		t.Fatalf("second push has the first's version %s", v1)
	}
	for _, ty := range xds.Types {
		if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: ty, VersionInfo: v1, ResponseNonce: first[ty].GetNonce()}); err != nil {
			t.Fatal(err)
		}
	}
	op := meshtest.DialXDS(t, f.ca, f.srv.Addr, f.ca.Issue(t, f.ca.OperatorID(), time.Hour))
	deadline := time.Now().Add(5 * time.Second)
	for {
		ps, err := xds.FetchStatus(ctx, op)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == 1 && ps[0].Types[len(ps[0].Types)-1].Acked == v1 {
			for _, ty := range ps[0].Types {
				if ty.Acked != v1 || ty.Status != "STALE" {
					t.Errorf("%s: acked %q status %s, want %q STALE (the second push is not ACKed)", ty.TypeURL, ty.Acked, ty.Status, v1)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the stale ACK of %s: %+v", v1, ps)
		}
		time.Sleep(10 * time.Millisecond)
	}
	snap, version, err := xds.FetchConfigDump(ctx, op, "default/httpbin")
	if err != nil {
		t.Fatalf("config dump after a stale ACK: %v", err)
	}
	if version != v1 || !has(snap, config.KindAuthorizationPolicy, "default/allow-sleep") {
		t.Errorf("config dump = version %s %v, want the first push (%s)", version, keys(snap), v1)
	}
}

// TestConfigDumpOfReplicasIsTheFirstConnected: replicas of one workload whose labels
// differ get different views; the config dump shows the one connected first, whatever
// the node IDs.
func TestConfigDumpOfReplicasIsTheFirstConnected(t *testing.T) {
	f := start(t, baseYAML)
	first := f.client(t, "default", "httpbin", xds.Node{ID: "sidecar~127.0.0.3~zz.default", WorkloadName: "httpbin", Labels: map[string]string{"app": "httpbin"}})
	first.WaitFor(t, "first replica's config", func(s *config.Snapshot) bool { return has(s, config.KindAuthorizationPolicy, "default/allow-sleep") })
	second := f.client(t, "default", "httpbin", xds.Node{ID: "sidecar~127.0.0.2~aa.default", WorkloadName: "httpbin", Labels: map[string]string{"app": "canary"}})
	second.WaitFor(t, "second replica's config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })
	cc := meshtest.DialXDS(t, f.ca, f.srv.Addr, f.ca.Issue(t, f.ca.OperatorID(), time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		snap, _, err := xds.FetchConfigDump(ctx, cc, "default/httpbin")
		if err != nil {
			t.Fatalf("FetchConfigDump(default/httpbin): %v", err)
		}
		if has(snap, config.KindAuthorizationPolicy, "default/allow-sleep") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("FetchConfigDump(default/httpbin) = %v, want the first replica's view (with default/allow-sleep)", keys(snap))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
