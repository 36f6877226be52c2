package controlplane_test

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/controlplane"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/xds"
)

// issue gets a certificate for ns/sa the way a workload bootstraps: a token, a CSR to
// the control plane's CA service.
func issue(t *testing.T, cp *meshtest.ControlPlane, ns, sa string) *tls.Certificate {
	t.Helper()
	k := newCSR(t, nil, "")
	resp, err := call(t, cp.Dial(t, nil), cp.Token(t, ns, sa, time.Hour), k.pem, time.Hour, nil)
	if err != nil {
		t.Fatalf("CreateCertificate for %s/%s: %v", ns, sa, err)
	}
	leaf, inter, _ := parseChain(t, resp)
	c := &tls.Certificate{PrivateKey: k.key, Leaf: leaf, Certificate: [][]byte{leaf.Raw}}
	for _, x := range inter {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

const pushPolicy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
`

func startPush(t *testing.T, dir string) (*meshtest.ControlPlane, *controlplane.Push) {
	t.Helper()
	push, err := controlplane.NewPush(controlplane.PushConfig{ConfigDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{Register: []func(*grpc.Server){push.Register}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- push.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Push.Run: %v", err)
		}
	})
	return cp, push
}

// TestPushFromConfigDir runs the real control plane with a config directory: a sidecar
// bootstrapped through the CA gets its policy over the same port, a file change reaches
// it, a bad file changes nothing and is visible in status, and only the operator
// identity reads fleet status.
func TestPushFromConfigDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "httpbin.yaml"), []byte(pushPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	cp, push := startPush(t, dir)
	cert := issue(t, cp, "default", "httpbin")
	c := meshtest.StartXDSClient(t, cp.Dial(t, cert), xds.Node{ID: "httpbin-1", WorkloadName: "httpbin", Labels: map[string]string{"app": "httpbin"}})
	c.WaitFor(t, "initial policy", func(s *config.Snapshot) bool { return len(s.OfKind(config.KindAuthorizationPolicy)) == 1 })

	changed := strings.Replace(pushPolicy, "sa/sleep", "sa/other", 1)
	if err := os.WriteFile(filepath.Join(dir, "httpbin.yaml"), []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	good := c.WaitFor(t, "changed policy", func(s *config.Snapshot) bool {
		aps := s.OfKind(config.KindAuthorizationPolicy)
		return len(aps) == 1 && aps[0].AuthorizationPolicy().GetRules()[0].GetFrom()[0].GetSource().GetPrincipals()[0] == "cluster.local/ns/default/sa/other"
	})

	if err := os.WriteFile(filepath.Join(dir, "httpbin.yaml"), []byte(changed+"  - to: [{operation: {methods: [\"\"]}}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := push.Status()
		if len(st.Refused) == 1 {
			if !strings.Contains(st.Refused[0].Message(), "httpbin.yaml:0: AuthorizationPolicy default/httpbin: spec.rules[1].to[0].operation.methods[0]: empty value not allowed") {
				t.Errorf("refusal = %q", st.Refused[0].Message())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bad file not refused; status %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s, _ := c.Snapshot(context.Background()); s != good {
		t.Errorf("sidecar config changed after a refused file")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ps, err := xds.FetchStatus(ctx, cp.Dial(t, issue(t, cp, "meshguard-system", controlplane.OperatorServiceAccount)))
	if err != nil {
		t.Fatalf("operator FetchStatus: %v", err)
	}
	if len(ps) != 1 || ps[0].Identity != "spiffe://cluster.local/ns/default/sa/httpbin" || ps[0].Workload != "httpbin" {
		t.Errorf("FetchStatus = %+v", ps)
	}
	_, err = xds.FetchStatus(ctx, cp.Dial(t, cert))
	if status.Code(errors.Unwrap(err)) != codes.PermissionDenied {
		t.Errorf("workload FetchStatus = %v, want PermissionDenied", err)
	}
	// A bootstrap token is not a sidecar credential for the push stream.
	_, err = xds.FetchStatus(ctx, cp.Dial(t, nil))
	if status.Code(errors.Unwrap(err)) != codes.Unauthenticated {
		t.Errorf("FetchStatus without a certificate = %v, want Unauthenticated", err)
	}
}

func TestPushRefusesInvalidConfigDirAtStart(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("kind: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	push, err := controlplane.NewPush(controlplane.PushConfig{ConfigDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := push.Run(ctx); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Errorf("Run = %v, want an error naming bad.yaml", err)
	}
}
