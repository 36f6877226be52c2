package controlplane

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/pki"
)

// logBuffer collects JSON log records.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// warnings returns the WARN records as attribute maps.
func (l *logBuffer) warnings(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["level"] == "WARN" {
			out = append(out, rec)
		}
	}
	return out
}

// newCP builds (does not run) a control plane on dataDir, signing with cacerts when set.
func newCP(t *testing.T, dataDir, cacerts string, now func() time.Time, logs *logBuffer) *ControlPlane {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	cp, err := New(Config{DataDir: dataDir, CACertsDir: cacerts, Listener: lis, Now: now, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// writeCACerts writes a plug-in CA directory: a ten-year root and an intermediate with
// ttl left, both issued now.
func writeCACerts(t *testing.T, ttl time.Duration) (dir string, inter *x509.Certificate) {
	t.Helper()
	now := time.Now()
	root, rootSigner, err := ca.NewRoot("cluster.local", 10*365*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey(pki.KeyECP256)
	if err != nil {
		t.Fatal(err)
	}
	inter, err = pki.CreateIntermediate(root, rootSigner.Key, key.Public(), pki.CAOptions{CommonName: "short intermediate", Organization: "cluster.local", TTL: ttl, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	if err := pki.WriteCADir(dir, &pki.CADir{Cert: inter, Key: key, Chain: []*x509.Certificate{inter, root}, Roots: []*x509.Certificate{root}}); err != nil {
		t.Fatal(err)
	}
	return dir, inter
}

func TestCAExpiryWarning(t *testing.T) {
	// A self-signed root created now, for the cases that move the clock to its end.
	rootDir := t.TempDir()
	root := newCP(t, rootDir, "", nil, &logBuffer{}).signer.Cert
	shortDir, short := writeCACerts(t, 5*24*time.Hour)
	longDir, _ := writeCACerts(t, 40*24*time.Hour)

	for _, tc := range []struct {
		name    string
		dataDir string
		cacerts string
		now     time.Time // zero: real time
		later   time.Time // when set, the check runs at this time, after start
		role    string    // "" for no warning
		expired bool
	}{
		{name: "fresh self-signed root", dataDir: t.TempDir()},
		{name: "self-signed root with 10 days left", dataDir: rootDir, now: root.NotAfter.Add(-10 * 24 * time.Hour), role: "root"},
		{name: "self-signed root with 31 days left", dataDir: rootDir, now: root.NotAfter.Add(-31 * 24 * time.Hour)},
		{name: "plugged-in intermediate with 5 days left", dataDir: t.TempDir(), cacerts: shortDir, role: "intermediate"},
		{name: "plugged-in intermediate with 40 days left", dataDir: t.TempDir(), cacerts: longDir},
		{name: "plugged-in intermediate expired while running", dataDir: t.TempDir(), cacerts: shortDir, later: short.NotAfter.Add(time.Hour), role: "intermediate", expired: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var clock func() time.Time
			if !tc.now.IsZero() {
				clock = func() time.Time { return tc.now }
			}
			logs := &logBuffer{}
			cp := newCP(t, tc.dataDir, tc.cacerts, clock, logs)
			if !tc.later.IsZero() {
				cp.cfg.Now = func() time.Time { return tc.later }
			}
			cp.checkCAExpiry()
			w := logs.warnings(t)
			if tc.role == "" {
				if len(w) != 0 {
					t.Fatalf("checkCAExpiry warned: %v", w)
				}
				return
			}
			if len(w) != 1 {
				t.Fatalf("checkCAExpiry logged %d warnings, want 1: %v", len(w), w)
			}
			msg, _ := w[0]["msg"].(string)
			if w[0]["role"] != tc.role || w[0]["subject"] != cp.signer.Cert.Subject.String() || strings.Contains(msg, "expired") != tc.expired {
				t.Errorf("warning = %v, want role %s for %s (expired %v)", w[0], tc.role, cp.signer.Cert.Subject, tc.expired)
			}
		})
	}
}

// TestCAExpiryWarningDaily checks that the warning comes at start and again every day.
func TestCAExpiryWarningDaily(t *testing.T) {
	dir, inter := writeCACerts(t, 20*24*time.Hour)
	logs := &logBuffer{}
	cp := newCP(t, t.TempDir(), dir, nil, logs)
	synctest.Test(t, func(t *testing.T) {
		start := time.Now() // the bubble's clock
		base := inter.NotAfter.Add(-20 * 24 * time.Hour)
		cp.cfg.Now = func() time.Time { return base.Add(time.Since(start)) }
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- cp.watchCAExpiry(ctx) }()
		time.Sleep(2*caExpiryCheckEvery + time.Minute)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	w := logs.warnings(t)
	if len(w) != 3 {
		t.Fatalf("%d warnings over two days, want 3 (start, +24h, +48h): %v", len(w), w)
	}
	for i, want := range []time.Duration{480 * time.Hour, 456 * time.Hour, 432 * time.Hour} {
		if w[i]["time_left"] != float64(want) { // JSON logs durations in nanoseconds
			t.Errorf("warning %d time_left = %v, want %s", i, w[i]["time_left"], want)
		}
	}
}
