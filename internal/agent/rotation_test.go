package agent

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestRenewAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name          string
		issued, after time.Time
		grace, jitter float64
		want          time.Time
	}{
		{"half of 24h", t0, t0.Add(24 * time.Hour), 0.5, 0, t0.Add(12 * time.Hour)},
		{"Istio jitter +1%", t0, t0.Add(100 * time.Hour), 0.5, 0.01, t0.Add(49 * time.Hour)},
		{"Istio jitter -1%", t0, t0.Add(100 * time.Hour), 0.5, -0.01, t0.Add(51 * time.Hour)},
		{"grace 0.2 renews late", t0, t0.Add(10 * time.Hour), 0.2, 0, t0.Add(8 * time.Hour)},
		{"grace clamped to 1", t0, t0.Add(time.Hour), 0.99, 0.05, t0},
		{"grace clamped to 0", t0, t0.Add(time.Hour), 0.01, -0.05, t0.Add(time.Hour)},
		{"already expired at issue", t0, t0.Add(-time.Minute), 0.5, 0, t0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := renewAt(tc.issued, tc.after, tc.grace, tc.jitter); !got.Equal(tc.want) {
				t.Errorf("renewAt(%s, %s, %g, %g) = %s, want %s", tc.issued, tc.after, tc.grace, tc.jitter, got, tc.want)
			}
		})
	}
}

func TestShouldRotate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := &held{
		svid:    &x509svid.SVID{Certificates: []*x509.Certificate{{NotBefore: t0, NotAfter: t0.Add(time.Hour)}}},
		renewAt: t0.Add(30 * time.Minute),
	}
	// A renewAt after expiry (a certificate shorter than the retry floor) must not keep
	// an expired certificate.
	late := &held{svid: h.svid, renewAt: t0.Add(2 * time.Hour)}
	for _, tc := range []struct {
		name string
		now  time.Time
		h    *held
		want bool
	}{
		{"no certificate", t0, nil, true},
		{"fresh", t0.Add(time.Minute), h, false},
		{"just before renewal", t0.Add(30*time.Minute - time.Nanosecond), h, false},
		{"at renewal", t0.Add(30 * time.Minute), h, true},
		{"expired", t0.Add(2 * time.Hour), h, true},
		{"expired before its renewal time", t0.Add(time.Hour), late, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := shouldRotate(tc.now, tc.h); got != tc.want {
				t.Errorf("shouldRotate(%s) = %v, want %v", tc.now, got, tc.want)
			}
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	const initial, max = time.Second, time.Minute
	for _, tc := range []struct {
		attempt int
		u       float64
		want    time.Duration
	}{
		{0, 0, 500 * time.Millisecond},
		{0, 0.999999999, time.Second - time.Nanosecond},
		{1, 0, time.Second},
		{3, 0.5, 6 * time.Second},
		{5, 0, 16 * time.Second},
		{6, 0, 30 * time.Second}, // 64s capped at 60s, half fixed
		{60, 1, time.Minute},     // no overflow for many attempts
	} {
		if got := backoffDelay(tc.attempt, initial, max, tc.u); got != tc.want {
			t.Errorf("backoffDelay(%d, %s, %s, %g) = %s, want %s", tc.attempt, initial, max, tc.u, got, tc.want)
		}
	}
	// Properties over the whole range: never below half the cap'd exponential, never
	// above the cap, never shrinking in its lower bound.
	prevLow := time.Duration(0)
	for n := range 100 {
		low, high := backoffDelay(n, initial, max, 0), backoffDelay(n, initial, max, 1)
		if low < prevLow || high > max || low > high || low <= 0 {
			t.Fatalf("attempt %d: delay range [%s, %s] after lower bound %s", n, low, high, prevLow)
		}
		prevLow = low
	}
}

func BenchmarkShouldRotate(b *testing.B) {
	t0 := time.Now()
	h := &held{svid: &x509svid.SVID{Certificates: []*x509.Certificate{{NotAfter: t0.Add(time.Hour)}}}, renewAt: t0.Add(30 * time.Minute)}
	for b.Loop() {
		shouldRotate(t0, h)
	}
}
