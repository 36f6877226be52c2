package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestControlplaneCommand(t *testing.T) {
	t.Run("bad cacerts refused", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		code := Run(context.Background(), []string{"controlplane", "--data-dir", t.TempDir(), "--cacerts", t.TempDir(), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), "refusing to start with --cacerts") || !strings.Contains(stderr.String(), "ca-cert.pem is missing") {
			t.Fatalf("exit %d, stderr %q; want 1 and a refusal naming the missing file", code, stderr.String())
		}
	})
	t.Run("invalid config dir refused at start", func(t *testing.T) {
		cfg := t.TempDir()
		bad := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: bad, namespace: default}\nspec: {action: DENY, rules: [{from: []}]}\n"
		if err := os.WriteFile(filepath.Join(cfg, "bad.yaml"), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		code := Run(context.Background(), []string{"controlplane", "--data-dir", t.TempDir(), "--config-dir", cfg, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), "bad.yaml:0: AuthorizationPolicy default/bad: spec.rules[0].from") {
			t.Fatalf("exit %d, stderr %q; want 1 and the validation problem naming file, object and field", code, stderr.String())
		}
	})
	t.Run("missing data dir", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		if code := Run(context.Background(), []string{"controlplane"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "data-dir") {
			t.Fatalf("exit %d, stderr %q; want 2 naming --data-dir", code, stderr.String())
		}
	})
	t.Run("starts, publishes root, stops on cancel", func(t *testing.T) {
		dir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var stdout, stderr bytes.Buffer
		done := make(chan int, 1)
		go func() {
			done <- Run(ctx, []string{"controlplane", "--data-dir", dir, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--trust-domain", "example.org", "--workload-cert-ttl", "1h", "--max-workload-cert-ttl", "2h"}, &stdout, &stderr)
		}()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(dir, "root-cert.pem")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("root-cert.pem did not appear within 10s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("exit %d after cancel, stderr %q", code, stderr.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("controlplane did not stop within 10s of cancel")
		}
	})
}
