package xds_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	security "istio.io/api/security/v1beta1"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/xds"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s differs (-want +got; run with -update if intended):\n%s", path, d)
	}
}

// TestStatusGolden renders the fleet status of a real server, as `meshguard ctl
// proxy-status` prints it (table and -o json): one sidecar in sync, one that rejected
// a push with two validation problems. The server's clock is fixed an hour after the
// certificates were issued, from the real clock (TLS checks certificates against it);
// the output shows every time moved by one offset, so that the server's clock reads
// 2030-01-02T03:04:05Z.
func TestStatusGolden(t *testing.T) {
	issued := time.Now().Truncate(time.Second)
	now := issued.Add(time.Hour)
	ca := meshtest.NewCA(t, "cluster.local")
	good := load(t, baseYAML)
	store := config.NewStaticStore(good)
	srv := meshtest.StartXDS(t, meshtest.XDSOptions{CA: ca, Store: store, Now: func() time.Time { return now }})
	sidecar := func(ns, id string, labels map[string]string) *meshtest.XDSClient {
		cert := ca.IssueWith(t, ca.ID(ns, "httpbin"), meshtest.IssueOptions{Now: issued, TTL: 24 * time.Hour})
		c := meshtest.StartXDSClient(t, meshtest.DialXDS(t, ca, srv.Addr, cert), xds.Node{ID: id, WorkloadName: "httpbin", Labels: labels})
		c.WaitFor(t, id+" config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })
		return c
	}
	// One after the other, so that stream numbers are stable.
	sidecar("default", "httpbin-1", map[string]string{"app": "httpbin"})
	prod := sidecar("prod", "httpbin-prod-1", map[string]string{"app": "httpbin", "version": "v2"})

	bad := &config.Object{Kind: config.KindAuthorizationPolicy, Meta: config.Meta{Namespace: "prod", Name: "bad"},
		Spec: &security.AuthorizationPolicy{Rules: []*security.Rule{{To: []*security.Rule_To{{Operation: &security.Operation{Methods: []string{""}, Paths: []string{""}}}}}}}}
	store.Set(config.NewSnapshot(append(slices.Clone(good.Objects), bad), good.Mesh))
	deadline := time.Now().Add(10 * time.Second)
	for prod.Status().LastNACK == nil {
		if time.Now().After(deadline) {
			t.Fatalf("prod sidecar did not NACK: %+v", prod.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cc := meshtest.DialXDS(t, ca, srv.Addr, ca.Issue(t, ca.OperatorID(), time.Hour))
	var ps []xds.ProxyStatus
	for {
		var err error
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ps, err = xds.FetchStatus(ctx, cc)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		// The server records the NACK when it reads it, just after the client sends it.
		if len(ps) == 2 && ps[1].Types[0].Status == "ERROR" || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(ps) != 2 {
		t.Fatalf("FetchStatus = %d sidecars, want 2", len(ps))
	}
	expiry := ps[0].CertExpiry
	if !expiry.Equal(issued.Add(24 * time.Hour)) {
		t.Fatalf("certificate expiry %v, want %v", expiry, issued.Add(24*time.Hour))
	}
	shift := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).Sub(now)
	move := func(t *time.Time) {
		if !t.IsZero() {
			*t = t.Add(shift).UTC()
		}
	}
	for i := range ps {
		move(&ps[i].CertExpiry)
		move(&ps[i].ConnectedAt)
		for j := range ps[i].Types {
			move(&ps[i].Types[j].AckedAt)
			if n := ps[i].Types[j].LastNACK; n != nil {
				moved := *n
				move(&moved.At)
				ps[i].Types[j].LastNACK = &moved
			}
		}
	}
	var table, js bytes.Buffer
	if err := xds.WriteStatusTable(&table, ps, now.Add(shift)); err != nil {
		t.Fatal(err)
	}
	if err := xds.WriteStatusJSON(&js, ps); err != nil {
		t.Fatal(err)
	}
	golden(t, "proxy-status.golden", table.Bytes())
	golden(t, "proxy-status.json.golden", js.Bytes())
}

// TestWriteStatusTableEdges covers rows the golden fleet does not: no sidecars, a
// sidecar that has not ACKed anything yet, types at different versions.
func TestWriteStatusTableEdges(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		ps   []xds.ProxyStatus
		want string
	}{
		{"no sidecars", nil, "WORKLOAD  IDENTITY  LABELS  CERT EXPIRES  VERSION  STATUS\n"},
		{"nothing acked yet", []xds.ProxyStatus{{Namespace: "a", Workload: "w", Identity: "spiffe://td/ns/a/sa/w", Types: []xds.TypeStatus{
			{TypeURL: xds.TypeMeshConfig, Status: "STALE"}, {TypeURL: xds.TypeAuthorizationPolicy, Status: "STALE"}}}},
			"WORKLOAD  IDENTITY               LABELS  CERT EXPIRES  VERSION  STATUS\na/w       spiffe://td/ns/a/sa/w  -       -             -        STALE\n"},
		{"mixed", []xds.ProxyStatus{{Namespace: "a", Workload: "w", Identity: "i", CertExpiry: now.Add(time.Hour), Types: []xds.TypeStatus{
			{TypeURL: xds.TypeMeshConfig, Status: "SYNCED", Acked: "v2"}, {TypeURL: xds.TypeAuthorizationPolicy, Status: "STALE", Acked: "v1"}}}},
			"WORKLOAD  IDENTITY  LABELS  CERT EXPIRES                      VERSION  STATUS\na/w       i         -       2030-01-02T04:04:05Z (in 1h0m0s)  mixed    AuthorizationPolicy=STALE\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if err := xds.WriteStatusTable(&b, tc.ps, now); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, b.String()); d != "" {
				t.Errorf("WriteStatusTable (-want +got):\n%s", d)
			}
		})
	}
}
