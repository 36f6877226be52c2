package demo

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// report prints the walkthrough: one header per step as it starts, one ✓/✗ line per
// check, and a summary line per step. It records which checks failed so that --once can
// exit non-zero.
type report struct {
	mu     sync.Mutex
	w      io.Writer
	total  int
	step   int
	title  string
	failed []string // "step N: check" of every failed check
	stepOK bool
}

func newReport(w io.Writer, total int) *report { return &report{w: w, total: total} }

func (r *report) printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, format, args...)
}

// begin starts step n.
func (r *report) begin(n int, title string) {
	r.mu.Lock()
	r.step, r.title, r.stepOK = n, title, true
	r.mu.Unlock()
	r.printf("\n[%d/%d] %s\n", n, r.total, title)
}

// info prints a detail line of the current step.
func (r *report) info(format string, args ...any) {
	r.printf("      %s\n", fmt.Sprintf(format, args...))
}

// check prints one ✓ or ✗ line; a failure names what was expected.
func (r *report) check(ok bool, what string, detail string) bool {
	mark := "✓"
	if !ok {
		mark = "✗"
		r.mu.Lock()
		r.stepOK = false
		r.failed = append(r.failed, fmt.Sprintf("step %d (%s): %s", r.step, r.title, what))
		r.mu.Unlock()
	}
	if detail != "" {
		r.printf("  %s %s — %s\n", mark, what, detail)
	} else {
		r.printf("  %s %s\n", mark, what)
	}
	return ok
}

// end prints the step's summary line.
func (r *report) end() {
	r.mu.Lock()
	ok, n, title := r.stepOK, r.step, r.title
	r.mu.Unlock()
	if ok {
		r.printf("✓ step %d: %s\n", n, title)
	} else {
		r.printf("✗ step %d: %s — did not behave as shown\n", n, title)
	}
}

// Failed lists the failed checks.
func (r *report) Failed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.failed...)
}

// StepsFailedError is Run's error when the walkthrough completed but some checks did not
// behave as shown; the CLI turns it into exit status 1.
type StepsFailedError struct {
	Failed []string
}

func (e *StepsFailedError) Error() string {
	return fmt.Sprintf("demo: %d check(s) failed:\n  %s", len(e.Failed), strings.Join(e.Failed, "\n  "))
}
