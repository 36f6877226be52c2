package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/agent"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/pki"
	"github.com/meshguard/meshguard/internal/sds"
)

func TestAgentCommandFlags(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(root, meshtest.NewCA(t, "cluster.local").RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"agent", "--controlplane", "127.0.0.1:1", "--ca-root", root, "--token-file", "tok"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no control plane", []string{"agent", "--ca-root", root, "--token-file", "tok"}, "--controlplane is required"},
		{"no CA root", []string{"agent", "--controlplane", "127.0.0.1:1", "--token-file", "tok"}, "--ca-root is required"},
		{"no token file", []string{"agent", "--controlplane", "127.0.0.1:1", "--ca-root", root}, "--token-file is required"},
		{"bad key type", append(base, "--key-type", "dsa"), "--key-type"},
		{"grace ratio out of range", append(base, "--grace-ratio", "1.5"), "--grace-ratio 1.5"},
		{"TTL too short", append(base, "--cert-ttl", "10ms"), "--cert-ttl 10ms"},
		{"CA root missing", []string{"agent", "--controlplane", "127.0.0.1:1", "--ca-root", filepath.Join(dir, "nope.pem"), "--token-file", "tok"}, "--ca-root: open"},
		{"CA root not PEM", []string{"agent", "--controlplane", "127.0.0.1:1", "--ca-root", notPEM, "--token-file", "tok"}, "--ca-root " + notPEM},
		{"address without port", []string{"agent", "--controlplane", "cp.internal", "--ca-root", root, "--token-file", "tok"}, "HOST:PORT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Run(context.Background(), tc.args, &stdout, &stderr)
			if code == 0 || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("meshguard %s: exit %d, stderr %q; want a failure mentioning %q", strings.Join(tc.args, " "), code, stderr.String(), tc.want)
			}
		})
	}
}

// TestAgentCommand runs `meshguard agent` against a real control plane: it serves SDS,
// writes the output files and exits 0 when its context ends.
func TestAgentCommand(t *testing.T) {
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	dir, err := os.MkdirTemp("", "mgcli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(cp.Token(t, "shop", "cart", time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	sock, out := filepath.Join(dir, "sds.sock"), filepath.Join(dir, "certs")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"agent", "--controlplane", cp.Addr, "--ca-root", cp.RootCertPath, "--token-file", tok,
			"--sds-socket", sock, "--output-dir", out, "--key-type", "ec-p384", "--cert-ttl", "1h", "--grace-ratio", "0.4", "--admin", ""}, &stdout, &stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, errSock := os.Stat(sock)
		_, errOut := os.Stat(filepath.Join(out, agent.CertChainFile))
		if errSock == nil && errOut == nil {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("meshguard agent exited %d early: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("SDS socket and certificate files did not appear within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	u := meshtest.WatchSDS(t, sock, sds.WorkloadResource, sds.RootResource).Next(10 * time.Second)
	if id, _ := pki.SPIFFEIDFromCert(u.Chain[0]); id.String() != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Errorf("SDS certificate for %s, want the token's identity", id)
	}
	if got := pki.DescribePublicKey(u.Chain[0].PublicKey); got != "ECDSA P-384" {
		t.Errorf("key %s, want ECDSA P-384 from --key-type", got)
	}
	if life := u.Chain[0].NotAfter.Sub(time.Now()); life < 59*time.Minute || life > time.Hour {
		t.Errorf("certificate lives %s, want --cert-ttl 1h", life)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after cancel, stderr %q", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("meshguard agent did not stop within 10s of cancel")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("SDS socket left behind after exit: %v", err)
	}
}
