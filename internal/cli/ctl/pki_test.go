package ctl

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/authn/bootstrap"
	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/pki"
)

func TestPKICreateRootAndIntermediate(t *testing.T) {
	dir := t.TempDir()
	root, cacerts := filepath.Join(dir, "root"), filepath.Join(dir, "cacerts")

	if out, errOut, code := runCtl(t, "pki", "create-root", "--out", root); code != 0 || !strings.Contains(out, "root-cert.pem") {
		t.Fatalf("create-root: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	if fi, err := os.Stat(filepath.Join(root, "root-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("root-key.pem: %v, want mode 0600", err)
	}
	certs, _ := readCerts(filepath.Join(root, "root-cert.pem"))
	if len(certs) != 1 || pki.DescribePublicKey(certs[0].PublicKey) != "ECDSA P-256" || certs[0].NotAfter.Sub(certs[0].NotBefore) < 10*365*24*time.Hour {
		t.Fatalf("root is not a 10-year ECDSA P-256 certificate")
	}
	if _, _, code := runCtl(t, "pki", "create-root", "--out", root); code != 1 {
		t.Errorf("create-root over an existing root: code %d, want 1 (never overwrite)", code)
	}

	if out, errOut, code := runCtl(t, "pki", "create-intermediate", "--root", root, "--out", cacerts, "--ttl", "720h"); code != 0 {
		t.Fatalf("create-intermediate: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	d, err := pki.LoadCADir(cacerts, time.Now())
	if err != nil {
		t.Fatalf("create-intermediate wrote a directory that does not load: %v", err)
	}
	if got := d.Cert.NotAfter.Sub(d.Cert.NotBefore); got < 720*time.Hour || got > 721*time.Hour {
		t.Errorf("intermediate lifetime %v, want 720h (+ back-dating)", got)
	}
	if fi, _ := os.Stat(filepath.Join(cacerts, "ca-key.pem")); fi.Mode().Perm() != 0o600 {
		t.Errorf("ca-key.pem mode %v, want 0600", fi.Mode().Perm())
	}

	out, _, code := runCtl(t, "pki", "inspect", filepath.Join(cacerts, "cert-chain.pem"), "--root", filepath.Join(root, "root-cert.pem"))
	if code != 0 || !strings.Contains(out, "chain: verifies") || !strings.Contains(out, "certificate 2 of 2") {
		t.Errorf("inspect cert-chain.pem: code %d\n%s", code, out)
	}
	other := t.TempDir()
	runCtl(t, "pki", "create-root", "--out", other)
	out, _, code = runCtl(t, "pki", "inspect", filepath.Join(cacerts, "ca-cert.pem"), "--root", filepath.Join(other, "root-cert.pem"))
	if code != 1 || !strings.Contains(out, "does NOT verify") {
		t.Errorf("inspect against a foreign root: code %d\n%s", code, out)
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing --out", []string{"pki", "create-root"}, 2, "--out DIR is required"},
		{"missing --root", []string{"pki", "create-intermediate", "--out", t.TempDir()}, 2, "--root DIR"},
		{"root dir without key", []string{"pki", "create-intermediate", "--root", cacerts, "--out", t.TempDir()}, 1, "root-key.pem"},
		{"inspect missing file", []string{"pki", "inspect", filepath.Join(dir, "nope.pem")}, 2, "nope.pem"},
		{"inspect a key file", []string{"pki", "inspect", filepath.Join(root, "root-key.pem")}, 2, "PEM block 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runErr(t, tc.args...)
			code := 0
			var ee *cmdenv.ExitError
			if errors.As(err, &ee) {
				code = ee.Code
			}
			if code != tc.code || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("code %d err %v; want code %d and error containing %q", code, err, tc.code, tc.want)
			}
		})
	}
}

// runErr returns the error `ctl args...` ends with.
func runErr(t *testing.T, args ...string) error {
	t.Helper()
	var out bytes.Buffer
	cmd := NewCmd(cmdenv.New(&out, &out))
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	return cmd.ExecuteContext(context.Background())
}

// TestPKIInspectGolden pins inspect's output for a leaf + intermediate file. The
// fixtures are regenerated, with the golden file, by -update.
func TestPKIInspectGolden(t *testing.T) {
	const (
		chainFile = "testdata/pki/leaf-and-intermediate.pem"
		rootFile  = "testdata/pki/root-cert.pem"
		golden    = "testdata/pki-inspect.golden"
	)
	if *update {
		mesh := meshtest.NewCA(t, "cluster.local")
		cacerts := mesh.WriteIntermediateDir(t)
		d, err := pki.LoadCADir(cacerts, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		leaf := mesh.IssueWith(t, mesh.ID("default", "web"), meshtest.IssueOptions{DNSNames: []string{"web.default.svc"}})
		// Re-sign the leaf with the intermediate so that the file holds a real 2-link chain.
		a := intermediateAuthority(t, d)
		chain, err := a.Sign(context.Background(), requestFor(leaf, mesh.ID("default", "web")))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll("testdata/pki", 0o755)
		os.WriteFile(chainFile, pki.EncodeCertsPEM(chain...), 0o644)
		os.WriteFile(rootFile, mesh.RootPEM(), 0o644)
	}
	certs, err := readCerts(chainFile)
	if err != nil {
		t.Fatal(err)
	}
	now := certs[0].NotBefore.Add(pki.Backdate + time.Hour)
	var stdout, stderr bytes.Buffer
	env := cmdenv.New(&stdout, &stderr)
	cmd := newPKICmdAt(env, func() time.Time { return now })
	cmd.SetArgs([]string{"inspect", chainFile, "--root", rootFile})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("inspect: %v", err)
	}
	if *update {
		if err := os.WriteFile(golden, stdout.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), stdout.String()); diff != "" {
		t.Errorf("inspect output differs from %s (-want +got):\n%s", golden, diff)
	}
}

func TestTokenCreate(t *testing.T) {
	dir := t.TempDir()
	out, errOut, code := runCtl(t, "token", "create", "--data-dir", dir, "--namespace", "shop", "--service-account", "cart", "--ttl", "1h")
	if code != 0 {
		t.Fatalf("token create: code %d, stderr %q", code, errOut)
	}
	key, err := bootstrap.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := bootstrap.NewAuthenticator(key.Public(), "cluster.local", nil)
	if err != nil {
		t.Fatal(err)
	}
	caller, err := a.Authenticate(context.Background(), authn.Credentials{BearerToken: strings.TrimSpace(out)})
	want := identity.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}
	if err != nil || caller.Identity != want {
		t.Fatalf("minted token authenticates as %v, %v; want %v", caller.Identity, err, want)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no namespace", []string{"token", "create", "--data-dir", dir, "--service-account", "cart"}},
		{"bad service account", []string{"token", "create", "--data-dir", dir, "-n", "shop", "-s", "a/b"}},
		{"negative ttl", []string{"token", "create", "--data-dir", dir, "-n", "shop", "-s", "cart", "--ttl", "-1h"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out, _, code := runCtl(t, tc.args...); code != 2 || out != "" {
				t.Fatalf("code %d stdout %q, want 2 and no token", code, out)
			}
		})
	}
}
