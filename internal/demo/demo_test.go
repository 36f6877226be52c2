package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the demo's writer and the test's reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemoOnce is how CI runs the demo: the whole walkthrough against real components
// on loopback, and every step must behave as shown.
func TestDemoOnce(t *testing.T) {
	var out syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	err := Run(ctx, Config{Stdout: &out, Once: true, WorkDir: t.TempDir()})
	t.Logf("demo output:\n%s", out.String())
	got := out.String()
	for i := 1; i <= totalSteps; i++ {
		if !strings.Contains(got, fmt.Sprintf("\n✓ step %d: ", i)) {
			t.Errorf("step %d did not behave as shown", i)
		}
	}
	if err != nil {
		t.Errorf("Run(--once) = %v, want nil", err)
	}
	if !strings.Contains(got, "✓ step 1: ") || strings.Contains(got, "✗ the mesh did not start") {
		t.Errorf("the mesh did not come up")
	}
}

// TestDemoStaysUpUntilCancelled checks the interactive mode: after the walkthrough it
// prints how to reach the mesh and stops cleanly, releasing its ports, when the
// context ends (Ctrl-C).
func TestDemoStaysUpUntilCancelled(t *testing.T) {
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Stdout: &out, WorkDir: t.TempDir(), PolicyTimeout: time.Second})
	}()
	deadline := time.After(60 * time.Second)
	for !strings.Contains(out.String(), "Press Ctrl-C to stop.") {
		select {
		case err := <-done:
			t.Fatalf("Run returned before Ctrl-C: %v\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("no how-to within 60s:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, want := range []string{"curl -s http://127.0.0.1:", "Edit the policies live", "/config\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("how-to lacks %q", want)
		}
	}
	cancel()
	select {
	case err := <-done:
		var failed *StepsFailedError
		if err != nil && !errors.As(err, &failed) {
			t.Errorf("Run after Ctrl-C = %v, want nil or the failed steps", err)
		}
		if !strings.Contains(out.String(), "stopping…") {
			t.Errorf("no stopping line after Ctrl-C")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of Ctrl-C")
	}
}

func TestCallerFromXFCC(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{`By=spiffe://cluster.local/ns/default/sa/reviews;Hash=abc;Subject="";URI=spiffe://cluster.local/ns/default/sa/productpage`, "spiffe://cluster.local/ns/default/sa/productpage"},
		{`Hash=abc;URI=spiffe://td/ns/a/sa/b,By=x;URI=spiffe://td/ns/c/sa/d`, "spiffe://td/ns/a/sa/b"},
		{`uri="spiffe://td/ns/a/sa/b"`, "spiffe://td/ns/a/sa/b"},
		{`By=spiffe://td/ns/a/sa/b;Hash=abc`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := callerFromXFCC(tc.in); got != tc.want {
				t.Errorf("callerFromXFCC(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestReportCountsFailures(t *testing.T) {
	var b bytes.Buffer
	r := newReport(&b, 2)
	r.begin(1, "one")
	r.check(true, "fine", "")
	r.end()
	r.begin(2, "two")
	r.check(false, "broken", "got 200, want 403")
	r.check(true, "fine again", "detail")
	r.end()
	want := "\n[1/2] one\n  ✓ fine\n✓ step 1: one\n\n[2/2] two\n  ✗ broken — got 200, want 403\n  ✓ fine again — detail\n✗ step 2: two — did not behave as shown\n"
	if b.String() != want {
		t.Errorf("report output:\n%q\nwant\n%q", b.String(), want)
	}
	if f := r.Failed(); len(f) != 1 || f[0] != "step 2 (two): broken" {
		t.Errorf("Failed() = %q, want [step 2 (two): broken]", f)
	}
}
