package ctl

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/meshguard/meshguard/internal/certreport"
	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/controlplane"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/pki"
	"github.com/meshguard/meshguard/internal/xds"
)

// shortIntermediateDir writes an Istio plug-in CA directory whose intermediate, under
// ca's root, expires in ttl.
func shortIntermediateDir(t *testing.T, ca *meshtest.CA, ttl time.Duration) string {
	t.Helper()
	key, err := pki.GenerateKey(pki.KeyECP256)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := pki.CreateIntermediate(ca.Root, ca.Signer.Key, key.Public(), pki.CAOptions{
		CommonName: "short-lived intermediate", Organization: ca.TrustDomain, TTL: ttl, Now: time.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pki.WriteCADir(dir, &pki.CADir{Cert: inter, Key: key, Chain: []*x509.Certificate{inter, ca.Root}, Roots: []*x509.Certificate{ca.Root}}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// agentCreds starts an agent for ns/sa against cp and returns its files as ctl flags
// and its certificate.
func agentCreds(t *testing.T, cp *meshtest.ControlPlane, addr, ns, sa string) ([]string, tls.Certificate) {
	t.Helper()
	a := meshtest.StartAgent(t, cp, meshtest.AgentOptions{Namespace: ns, ServiceAccount: sa, OutputDir: true, NoSDS: true})
	cert, key := filepath.Join(a.OutputDir, "cert-chain.pem"), filepath.Join(a.OutputDir, "key.pem")
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--controlplane", addr, "--cert", cert, "--key", key, "--root-cert", filepath.Join(a.OutputDir, "root-cert.pem")}, pair
}

// TestCerts runs `ctl certs` against a real control plane signing with a plug-in
// intermediate that expires in 12 hours, with one sidecar connected for config.
func TestCerts(t *testing.T) {
	ca := meshtest.NewCA(t, "cluster.local")
	push, err := controlplane.NewPush(controlplane.PushConfig{Store: config.NewStaticStore(config.NewSnapshot(nil, nil))})
	if err != nil {
		t.Fatal(err)
	}
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{
		CACertsDir: shortIntermediateDir(t, ca, 12*time.Hour),
		Register:   []func(*grpc.Server){push.Register}, Push: push,
	})
	op, _ := agentCreds(t, cp, cp.Addr, "meshguard-system", "meshguard-operator")
	workload, httpbin := agentCreds(t, cp, cp.Addr, "default", "httpbin")
	side := meshtest.StartXDSClient(t, cp.Dial(t, &httpbin), xds.Node{ID: "httpbin-1", WorkloadName: "httpbin"})
	side.WaitFor(t, "config", func(*config.Snapshot) bool { return true })

	t.Run("table: intermediate first, exit 1", func(t *testing.T) {
		out, errOut, code := runCtl(t, append([]string{"certs"}, op...)...)
		if code != certsExitExpiring {
			t.Fatalf("exit %d, want %d; stderr %s\n%s", code, certsExitExpiring, errOut, out)
		}
		lines := strings.Split(out, "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[1], "intermediate ") || !strings.Contains(lines[1], "CN=short-lived intermediate") || !strings.HasSuffix(lines[1], "EXPIRING") {
			t.Errorf("first row is not the expiring intermediate:\n%s", out)
		}
		for _, want := range []string{"spiffe://cluster.local/ns/default/sa/httpbin", "spiffe://cluster.local/ns/meshguard-system/sa/meshguard", "1 of 4 certificates expire within 72h0m0s"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("json lists every certificate the mesh depends on", func(t *testing.T) {
		out, _, code := runCtl(t, append([]string{"certs", "-o", "json"}, op...)...)
		var r certreport.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil || code != certsExitExpiring {
			t.Fatalf("exit %d, decode %v:\n%s", code, err, out)
		}
		roles := map[string]certreport.Entry{}
		for _, e := range r.Certificates {
			roles[e.Role] = e
		}
		if len(r.Certificates) != 4 || len(roles) != 4 || r.Certificates[0].Role != certreport.RoleIntermediate {
			t.Fatalf("certificates = %+v, want root, intermediate (first), serving and one workload", r.Certificates)
		}
		w := roles[certreport.RoleWorkload]
		if w.Identity != "spiffe://cluster.local/ns/default/sa/httpbin" || w.Serial != httpbin.Leaf.SerialNumber.Text(16) || !strings.HasPrefix(w.Name, "default/httpbin httpbin-1") {
			t.Errorf("workload entry %+v, want the sidecar's current certificate (serial %s)", w, httpbin.Leaf.SerialNumber.Text(16))
		}
		if root := roles[certreport.RoleRoot]; root.Serial != ca.Root.SerialNumber.Text(16) || root.Status != certreport.StatusOK {
			t.Errorf("root entry %+v, want the bundle's root, ok", root)
		}
		if i := roles[certreport.RoleIntermediate]; i.Status != certreport.StatusExpiring || i.SecondsLeft > 12*3600 || i.SecondsLeft < 11*3600 {
			t.Errorf("intermediate entry %+v, want expiring in about 12h", i)
		}
	})
	t.Run("narrow window: exit 0", func(t *testing.T) {
		out, errOut, code := runCtl(t, append([]string{"certs", "--expiring-within", "1h"}, op...)...)
		if code != 0 || !strings.Contains(out, "none of 4 certificates expires within 1h0m0s") {
			t.Errorf("exit %d, stderr %s\n%s", code, errOut, out)
		}
	})

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	opFlags := func(addr string) []string {
		return append([]string{"certs", "--timeout", "2s"}, append(op[2:], "--controlplane", addr)...)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"workload identity refused", append([]string{"certs"}, workload...), certsExitUnknown, "not an operator identity"},
		{"unreachable control plane", opFlags(closedAddr), certsExitUnknown, closedAddr},
		{"bad output", append([]string{"certs", "-o", "yaml"}, op...), certsExitUsage, "-o \"yaml\""},
		{"negative window", append([]string{"certs", "--expiring-within", "-1h"}, op...), certsExitUsage, "--expiring-within"},
		{"no controlplane", []string{"certs", "--cert", "c", "--key", "k", "--root-cert", "r"}, certsExitUsage, "--controlplane"},
		{"no cert", []string{"certs", "--controlplane", cp.Addr}, certsExitUsage, "--cert is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, err := ctlError(t, tc.args...)
			if code != tc.code || err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("exit %d with %v, want %d and an error naming %q", code, err, tc.code, tc.msg)
			}
		})
	}
}

// ctlError runs a ctl command that should fail and returns its exit status and error.
func ctlError(t *testing.T, args ...string) (int, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := NewCmd(cmdenv.New(&out, &out))
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	var ee *cmdenv.ExitError
	if errors.As(err, &ee) {
		return ee.Code, err
	}
	if err != nil {
		return 2, err // cobra's own flag errors
	}
	return 0, nil
}
