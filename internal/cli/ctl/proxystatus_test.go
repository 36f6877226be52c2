package ctl

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/xds"
)

const statusPolicy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other, namespace: prod}
spec: {}
`

// TestProxyStatusAndConfigDump runs both commands against a real xDS server with one
// connected sidecar, as an operator and as a workload.
func TestProxyStatusAndConfigDump(t *testing.T) {
	ca := meshtest.NewCA(t, "cluster.local")
	snap, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "p.yaml", Data: []byte(statusPolicy)})
	if err != nil {
		t.Fatal(err)
	}
	srv := meshtest.StartXDS(t, meshtest.XDSOptions{CA: ca, Store: config.NewStaticStore(snap)})
	side := meshtest.StartXDSClient(t, meshtest.DialXDS(t, ca, srv.Addr, ca.Issue(t, ca.ID("default", "httpbin"), time.Hour)),
		xds.Node{ID: "httpbin-1", WorkloadName: "httpbin", Labels: map[string]string{"app": "httpbin"}})
	held := side.WaitFor(t, "config", func(s *config.Snapshot) bool { return len(s.Objects) > 0 })

	creds := func(id string) []string {
		dir := t.TempDir()
		ns, sa, _ := strings.Cut(id, "/")
		cert, key := ca.Issue(t, ca.ID(ns, sa), time.Hour).WriteFiles(t, dir)
		return []string{"--controlplane", srv.Addr, "--server-name", "localhost", "--cert", cert, "--key", key, "--root-cert", ca.WriteRoot(t, dir)}
	}
	op := creds(ca.OperatorID().Namespace + "/" + ca.OperatorID().ServiceAccount)
	workload := creds("default/httpbin")

	t.Run("proxy-status table", func(t *testing.T) {
		out, errOut, code := runCtl(t, append([]string{"proxy-status"}, op...)...)
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, errOut)
		}
		for _, want := range []string{"default/httpbin", "spiffe://cluster.local/ns/default/sa/httpbin", "app=httpbin", side.Status().Version, "SYNCED"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("proxy-status json", func(t *testing.T) {
		out, _, code := runCtl(t, append([]string{"proxy-status", "-o", "json"}, op...)...)
		var ps []xds.ProxyStatus
		if err := json.Unmarshal([]byte(out), &ps); code != 0 || err != nil {
			t.Fatalf("exit %d, decode %v:\n%s", code, err, out)
		}
		if len(ps) != 1 || ps[0].Workload != "httpbin" || len(ps[0].Types) != len(xds.Types) {
			t.Errorf("status = %+v", ps)
		}
	})
	t.Run("config-dump", func(t *testing.T) {
		out, errOut, code := runCtl(t, append([]string{"config-dump", "--workload", "default/httpbin"}, op...)...)
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, errOut)
		}
		dumped, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "dump", Data: []byte(out)})
		if err != nil {
			t.Fatalf("dump does not load back: %v\n%s", err, out)
		}
		if dumped.Version != held.Version {
			t.Errorf("dump version %s, sidecar holds %s", dumped.Version, held.Version)
		}
		var keys []string
		for _, o := range dumped.Objects {
			keys = append(keys, o.Key())
		}
		if !slices.Equal(keys, []string{"default/httpbin"}) {
			t.Errorf("dumped objects %v, want only default/httpbin (prod's policy is not this workload's)", keys)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"workload identity refused", append([]string{"proxy-status"}, workload...), 1},
		{"workload identity refused dump", append([]string{"config-dump", "--workload", "default/httpbin"}, workload...), 1},
		{"unknown workload", append([]string{"config-dump", "--workload", "default/nothere"}, op...), 1},
		{"bad workload", append([]string{"config-dump", "--workload", "httpbin"}, op...), 2},
		{"no controlplane", []string{"proxy-status", "--cert", "c", "--key", "k", "--root-cert", "r"}, 2},
		{"no cert", []string{"proxy-status", "--controlplane", srv.Addr}, 2},
		{"missing cert file", []string{"proxy-status", "--controlplane", srv.Addr, "--cert", filepath.Join(t.TempDir(), "x.pem"), "--key", "k", "--root-cert", "r"}, 2},
		{"bad output", append([]string{"proxy-status", "-o", "yaml"}, op...), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, errOut, code := runCtl(t, tc.args...); code != tc.code {
				t.Errorf("exit %d, want %d; stderr %s", code, tc.code, errOut)
			}
		})
	}
}
