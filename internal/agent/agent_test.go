package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshguard/meshguard/internal/pki"
)

// waitChange blocks until the Source changes and returns the new certificate.
func waitChange(t *testing.T, a *Agent, prev *x509.Certificate) *x509.Certificate {
	t.Helper()
	for {
		ch := a.Source().Updated()
		if cur := a.src.current(); cur != nil && (prev == nil || !cur.leaf().Equal(prev)) {
			return cur.leaf()
		}
		<-ch
	}
}

// TestRotationSchedule: the first certificate comes from the bootstrap token, every
// renewal authenticates with the current certificate, and each renewal happens when half
// the lifetime is left, within the jitter.
func TestRotationSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCA(t, "cluster.local")
		a, _, _ := testAgent(t, f, nil)
		runAgent(t, a)
		mustReady(t, a, time.Minute)

		var leaf, prev *x509.Certificate
		var got time.Time
		for i := range 5 {
			leaf = waitChange(t, a, leaf)
			now := time.Now()
			if i > 0 {
				// CertTTL is 1h, but NotAfter is encoded in whole seconds, so the lifetime
				// is up to 1s shorter; NotBefore is back-dated, so count from reception.
				life := prev.NotAfter.Sub(got)
				if life > time.Hour || life <= time.Hour-time.Second {
					t.Fatalf("certificate %d lives %s from reception, want CertTTL (1h) to the second", i-1, life)
				}
				early, late := got.Add(time.Duration(0.49*float64(life))), got.Add(time.Duration(0.51*float64(life)))
				if now.Before(early) || now.After(late) {
					t.Errorf("renewal %d at %s after the previous certificate, want between %s and %s (half of %s ± 1%%)", i, now.Sub(got), early.Sub(got), late.Sub(got), life)
				}
			}
			got, prev = now, leaf
			if id, _ := pki.SPIFFEIDFromCert(leaf); id.String() != "spiffe://cluster.local/ns/default/sa/web" {
				t.Fatalf("certificate %d for %s, want the token's identity", i, id)
			}
		}
		calls := f.callLog()
		if len(calls) < 5 || calls[0] != "token" {
			t.Fatalf("CA calls %v, want a token bootstrap then renewals", calls)
		}
		for i, c := range calls[1:] {
			if c != "cert" {
				t.Errorf("CA call %d authenticated with %s, want the current certificate", i+1, c)
			}
		}
	})
}

// TestCAOutage: while the CA is down the current certificate keeps being served, each
// failure is logged once with a growing backoff, the expired certificate is withdrawn
// and reported, and the agent recovers by itself when the CA returns.
func TestCAOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCA(t, "cluster.local")
		reg := prometheus.NewRegistry()
		m, err := NewMetrics(reg, nil)
		if err != nil {
			t.Fatal(err)
		}
		a, rec, _ := testAgent(t, f, func(c *Config) { c.Metrics = m; c.RetryMax = 4 * time.Minute })
		runAgent(t, a)
		mustReady(t, a, time.Minute)
		first := a.src.current().leaf()

		f.setDown(true)
		// Past the renewal point (30m) but before expiry (1h): still served.
		time.Sleep(45 * time.Minute)
		svid, err := a.Source().GetX509SVID()
		if err != nil || !svid.Certificates[0].Equal(first) {
			t.Fatalf("during the outage GetX509SVID() = %v, want the current certificate", err)
		}
		warns := rec.messages(slog.LevelWarn)
		if len(warns) < 5 {
			t.Fatalf("%d failure logs in 15 minutes of outage, want one per attempt", len(warns))
		}
		var prev time.Duration
		for i, w := range warns {
			d := attr(w, "retry_in").Duration()
			if n := attr(w, "attempt").Int64(); n != int64(i+1) {
				t.Fatalf("failure log %d says attempt %d", i, n)
			}
			if i > 0 && d < prev/2 {
				t.Errorf("retry %d waits %s after %s: backoff should not shrink", i, d, prev)
			}
			if d > 4*time.Minute {
				t.Errorf("retry %d waits %s, more than RetryMax", i, d)
			}
			if !strings.Contains(attr(w, "error").String(), "unreachable") || !strings.Contains(attr(w, "serving").String(), "current certificate") {
				t.Errorf("failure log %d: error=%q serving=%q, want an unreachable CA and the current certificate still served", i, attr(w, "error"), attr(w, "serving"))
			}
			prev = d
		}
		if got := testutil.ToFloat64(m.(*promMetrics).rotations.WithLabelValues("failure")); got != float64(len(warns)) {
			t.Errorf("failure counter = %v, want %d", got, len(warns))
		}

		// Past expiry: withdrawn, reported once, not ready.
		time.Sleep(20 * time.Minute)
		if _, err := a.Source().GetX509SVID(); !errors.Is(err, ErrExpired) {
			t.Fatalf("after expiry GetX509SVID() = %v, want ErrExpired", err)
		}
		if a.Source().Ready() {
			t.Fatal("Ready() after expiry = true")
		}
		if errs := rec.messages(slog.LevelError); len(errs) != 1 || !strings.Contains(errs[0].Message, "expired") {
			t.Fatalf("error logs after expiry: %v, want exactly one saying the certificate expired", errs)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = a.WaitUntilReady(ctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("WaitUntilReady while expired and CA down = %v, want an error naming the last failure", err)
		}

		// The CA returns: the agent bootstraps again with its token (the certificate has
		// expired, so it cannot authenticate with it) and is ready without help.
		f.setDown(false)
		mustReady(t, a, 5*time.Minute)
		// Ready is signalled from inside the rotation, before Run logs the recovery:
		// let the agent finish its step and go back to sleep before reading the log.
		synctest.Wait()
		if calls := f.callLog(); calls[len(calls)-1] != "token" {
			t.Errorf("recovery after expiry used %s, want the bootstrap token", calls[len(calls)-1])
		}
		if infos := rec.messages(slog.LevelInfo); !strings.Contains(infos[len(infos)-1].Message, "recovered") {
			t.Errorf("last info log %q, want the recovery", infos[len(infos)-1].Message)
		}
	})
}

// TestOutageRecoveryBeforeExpiry: when the CA comes back before expiry, renewal uses
// the current certificate, as it would have without the outage.
func TestOutageRecoveryBeforeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCA(t, "cluster.local")
		a, _, _ := testAgent(t, f, nil)
		runAgent(t, a)
		mustReady(t, a, time.Minute)
		first := a.src.current().leaf()
		f.setDown(true)
		time.Sleep(40 * time.Minute)
		f.setDown(false)
		second := waitChange(t, a, first)
		if time.Now().After(first.NotAfter) {
			t.Fatalf("renewed at %s, after the first certificate expired at %s", time.Now(), first.NotAfter)
		}
		if calls := f.callLog(); calls[len(calls)-1] != "cert" {
			t.Errorf("renewal after the outage used %s, want the current certificate", calls[len(calls)-1])
		}
		if !second.NotAfter.After(first.NotAfter) {
			t.Error("renewed certificate does not outlive the first")
		}
	})
}

// TestBootstrapTokenExpired: with no valid certificate and an expired token the agent
// is not ready, and the error says what is wrong and where to fix it; a fresh token in
// the same file is picked up without a restart.
func TestBootstrapTokenExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCA(t, "cluster.local")
		a, rec, tokenFile := testAgent(t, f, nil)
		expired := f.mint(t, "default", "web", time.Minute)
		time.Sleep(2 * time.Minute)
		if err := os.WriteFile(tokenFile, []byte(expired), 0o600); err != nil {
			t.Fatal(err)
		}
		runAgent(t, a)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := a.WaitUntilReady(ctx)
		cancel()
		if err == nil || !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tokenFile) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("WaitUntilReady with an expired token = %v, want ErrRejected naming %s and the expiry", err, tokenFile)
		}
		if len(rec.messages(slog.LevelWarn)) == 0 {
			t.Error("no failure was logged")
		}
		if err := os.WriteFile(tokenFile, []byte(f.mint(t, "default", "web", time.Hour)), 0o600); err != nil {
			t.Fatal(err)
		}
		mustReady(t, a, 2*time.Minute)
	})
}

// TestTokenFileProblems: a missing or empty token file is a clear, retried error.
func TestTokenFileProblems(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(path string)
		wantErr string
	}{
		{"missing", func(p string) { os.Remove(p) }, "read bootstrap token"},
		{"empty", func(p string) { os.WriteFile(p, []byte(" \n"), 0o600) }, "is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCA(t, "cluster.local")
				m, err := NewMetrics(prometheus.NewRegistry(), nil)
				if err != nil {
					t.Fatal(err)
				}
				a, rec, tokenFile := testAgent(t, f, func(c *Config) { c.Metrics = m })
				tc.setup(tokenFile)
				runAgent(t, a)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err = a.WaitUntilReady(ctx)
				cancel()
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("WaitUntilReady = %v, want an error containing %q", err, tc.wantErr)
				}
				if len(f.callLog()) != 0 {
					t.Errorf("the CA was called without a token: %v", f.callLog())
				}
				// An agent stuck on its token file must show on the failure counter,
				// one per logged attempt, or alerts on failures never fire for it.
				synctest.Wait()
				warns := len(rec.messages(slog.LevelWarn))
				if got := testutil.ToFloat64(m.(*promMetrics).rotations.WithLabelValues("failure")); warns == 0 || got != float64(warns) {
					t.Errorf("failure counter = %v after %d failed attempts, want one per attempt", got, warns)
				}
			})
		})
	}
}

// TestRejectedCertificateFallsBackToToken: when the CA stops accepting the agent's
// certificate, the next attempt bootstraps with the token instead of failing forever.
func TestRejectedCertificateFallsBackToToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCA(t, "cluster.local")
		a, _, _ := testAgent(t, f, nil)
		runAgent(t, a)
		mustReady(t, a, time.Minute)
		first := a.src.current().leaf()
		f.mu.Lock()
		f.rejectCerts = true
		f.mu.Unlock()
		waitChange(t, a, first)
		calls := f.callLog()
		if want := []string{"token", "cert", "token"}; strings.Join(calls, ",") != strings.Join(want, ",") {
			t.Fatalf("CA calls %v, want %v", calls, want)
		}
	})
}

// TestCertificateRetriedAfterTokenFails: a renewal refused once, with a bootstrap token
// that has long expired (the usual state of a long-running workload), must not leave the
// agent on the token for good: it tries its still-valid certificate again, and renews
// with it as soon as the CA accepts it, before it expires.
func TestCertificateRetriedAfterTokenFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCA(t, "cluster.local")
		a, _, tokenFile := testAgent(t, f, nil)
		if err := os.WriteFile(tokenFile, []byte(f.mint(t, "default", "web", 10*time.Minute)), 0o600); err != nil {
			t.Fatal(err)
		}
		runAgent(t, a)
		mustReady(t, a, time.Minute)
		first := a.src.current().leaf()
		f.mu.Lock()
		f.rejectCerts = true // a CA misconfiguration, fixed a little later
		f.mu.Unlock()
		time.Sleep(31 * time.Minute) // past the renewal point; the token expired at 10m
		f.mu.Lock()
		f.rejectCerts = false
		f.mu.Unlock()
		// Bounded in the bubble's time: a stuck agent would otherwise retry for ever.
		time.Sleep(time.Until(first.NotAfter.Add(-time.Second)))
		synctest.Wait()
		if next := a.src.current().leaf(); next.Equal(first) || !next.NotAfter.After(first.NotAfter) {
			t.Fatalf("certificate not renewed before it expired at %s; last error: %v", first.NotAfter, a.LastError())
		}
		if calls := f.callLog(); calls[len(calls)-1] != "cert" || !slices.Contains(calls[1:], "token") {
			t.Fatalf("CA calls %v, want a token attempt after the refusal and the recovery with the certificate", calls)
		}
	})
}

// TestTrustBundleRefresh: a second root (root rotation) reaches the Source with the next
// renewal.
func TestTrustBundleRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCA(t, "cluster.local")
		a, _, _ := testAgent(t, f, nil)
		runAgent(t, a)
		mustReady(t, a, time.Minute)
		first := a.src.current().leaf()
		next := newTestRoot(t, "cluster.local")
		f.setBundle(t, f.root.cert, next.cert)
		waitChange(t, a, first)
		svid, _ := a.Source().GetX509SVID()
		b, err := a.Source().GetX509BundleForTrustDomain(svid.ID.TrustDomain())
		if err != nil {
			t.Fatal(err)
		}
		if got := b.X509Authorities(); len(got) != 2 || !got[1].Equal(next.cert) {
			t.Fatalf("bundle after root rotation holds %d roots, want the old and the new", len(got))
		}
	})
}

// TestOutputDir: the files appear with the right modes and content and follow rotation.
func TestOutputDir(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCA(t, "cluster.local")
		out := filepath.Join(t.TempDir(), "certs")
		a, _, _ := testAgent(t, f, func(c *Config) { c.OutputDir = out; c.KeyType = pki.KeyECP384 })
		runAgent(t, a)
		mustReady(t, a, time.Minute)
		check := func(leaf *x509.Certificate) {
			t.Helper()
			for name, perm := range map[string]os.FileMode{KeyFile: 0o600, CertChainFile: 0o644, RootCertFile: 0o644} {
				fi, err := os.Stat(filepath.Join(out, name))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != perm {
					t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), perm)
				}
			}
			chainPEM, _ := os.ReadFile(filepath.Join(out, CertChainFile))
			keyPEM, _ := os.ReadFile(filepath.Join(out, KeyFile))
			rootPEM, _ := os.ReadFile(filepath.Join(out, RootCertFile))
			chain, err := pki.ParseCertsPEM(chainPEM)
			if err != nil || !chain[0].Equal(leaf) {
				t.Fatalf("%s does not hold the current certificate (%v)", CertChainFile, err)
			}
			key, err := pki.ParseKeyPEM(keyPEM)
			if err != nil || !pki.KeyMatchesCert(key, leaf) {
				t.Fatalf("%s is not the key of the current certificate (%v)", KeyFile, err)
			}
			if pki.DescribePublicKey(key.Public()) != pki.DescribePublicKey(leaf.PublicKey) || !bytes.Equal(rootPEM, f.root.pem()) {
				t.Fatalf("%s = %q, want the CA root", RootCertFile, rootPEM)
			}
		}
		first := a.src.current().leaf()
		check(first)
		check(waitChange(t, a, first))
	})
}

// TestJitterSpreadsRenewals: agents with different randomness renew at different times;
// the same randomness gives the same schedule (Rand is an input).
func TestJitterSpreadsRenewals(t *testing.T) {
	renewAtFor := func(seed byte) time.Duration {
		var d time.Duration
		synctest.Test(t, func(t *testing.T) {
			f := newFakeCA(t, "cluster.local")
			a, _, _ := testAgent(t, f, func(c *Config) {
				c.Rand = bytes.NewReader(bytes.Repeat([]byte{seed}, 32))
				c.JitterRatio = 0.1
			})
			runAgent(t, a)
			mustReady(t, a, time.Minute)
			d = a.src.current().renewAt.Sub(a.src.current().issuedAt)
		})
		return d
	}
	a1, a2, b := renewAtFor(1), renewAtFor(1), renewAtFor(2)
	if a1 != a2 {
		t.Errorf("same Rand gave renewals after %s and %s", a1, a2)
	}
	if a1 == b {
		t.Errorf("different Rand gave the same renewal time %s", a1)
	}
	for _, d := range []time.Duration{a1, b} {
		if d < 24*time.Minute || d > 36*time.Minute {
			t.Errorf("renewal after %s, want 30m ± 10%% of 1h", d)
		}
	}
}

func TestNewValidates(t *testing.T) {
	f := newFakeCA(t, "cluster.local")
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no token file", func(c *Config) { c.TokenFile = "" }, "bootstrap token file"},
		{"no logger", func(c *Config) { c.Logger = nil }, "logger"},
		{"grace ratio 1", func(c *Config) { c.GraceRatio = 1 }, "grace ratio"},
		{"grace ratio negative", func(c *Config) { c.GraceRatio = -0.2 }, "grace ratio"},
		{"ttl too short", func(c *Config) { c.CertTTL = time.Millisecond }, "TTL"},
		{"jitter too large", func(c *Config) { c.JitterRatio = 0.6 }, "jitter"},
		{"bad key type", func(c *Config) { c.KeyType = 42 }, "key type"},
		{"backoff inverted", func(c *Config) { c.RetryInitial, c.RetryMax = time.Minute, time.Second }, "backoff"},
		{"no address", func(c *Config) { c.client = nil; c.CARoots = []*x509.Certificate{f.root.cert} }, "control plane address"},
		{"no roots", func(c *Config) { c.client = nil; c.ControlPlane = "127.0.0.1:1" }, "CA root"},
		{"address without port", func(c *Config) {
			c.client = nil
			c.ControlPlane = "127.0.0.1"
			c.CARoots = []*x509.Certificate{f.root.cert}
		}, "HOST:PORT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{TokenFile: "tok", Logger: slog.New(slog.DiscardHandler), client: f}
			tc.mod(&cfg)
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New(%s) = %v, want an error about %s", tc.name, err, tc.want)
			}
		})
	}
}

func TestRunTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCA(t, "cluster.local")
		a, _, _ := testAgent(t, f, nil)
		runAgent(t, a)
		mustReady(t, a, time.Minute)
		if err := a.Run(context.Background()); err == nil {
			t.Error("second Run() = nil, want an error")
		}
	})
}
