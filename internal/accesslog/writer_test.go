package accesslog

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// waitFor polls cond until it holds or the bounded wait runs out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// runWriter starts w.Run and returns a stop function that cancels it and waits for
// Run to return (bounded), reporting its error.
func runWriter(t *testing.T, w *Writer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Writer.Run did not return after cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// lockedBuffer is a goroutine-safe bytes.Buffer.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// blockedWriter is a disk that hangs: every Write waits until release is closed.
type blockedWriter struct {
	lockedBuffer
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func (b *blockedWriter) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	return b.lockedBuffer.Write(p)
}

func mustText(t testing.TB, format string) *TextFormat {
	t.Helper()
	f, err := ParseText(format)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestWriterNeverBlocksOnStuckDisk(t *testing.T) {
	disk := &blockedWriter{entered: make(chan struct{}), release: make(chan struct{})}
	drops := prometheus.NewCounter(prometheus.CounterOpts{Name: "drops"})
	const queue = 8
	w, err := NewWriter(Stdout, mustText(t, "%REQ(:PATH)%\n"), WriterOptions{Stdout: disk, QueueSize: queue, Dropped: drops})
	if err != nil {
		t.Fatal(err)
	}
	stop := runWriter(t, w)

	w.Log(&Entry{Path: "/first"})
	<-disk.entered // Run is now stuck inside Write

	// The data path: if Log blocked on the stuck disk this would never finish.
	const n = 1000
	logged := make(chan struct{})
	go func() {
		e := &Entry{}
		for i := range n {
			e.Path = "/p" + string(rune('a'+i%26))
			w.Log(e)
		}
		close(logged)
	}()
	select {
	case <-logged:
	case <-time.After(10 * time.Second):
		t.Fatal("Writer.Log blocked behind a stuck disk")
	}
	if got, want := w.Dropped(), uint64(n-queue); got != want {
		t.Errorf("Dropped() = %d, want %d (all but the %d queued)", got, want, queue)
	}
	if got := testutil.ToFloat64(drops); got != float64(n-queue) {
		t.Errorf("drop counter = %v, want %d", got, n-queue)
	}

	close(disk.release)
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(disk.String(), "\n"), "\n")
	if len(lines) != 1+queue || lines[0] != "/first" {
		t.Errorf("written lines = %q, want /first plus the %d queued entries", lines, queue)
	}
	// After shutdown, Log still returns at once and counts the drop.
	w.Log(&Entry{})
	if got := w.Dropped(); got != uint64(n-queue+1) {
		t.Errorf("Dropped() after shutdown = %d, want %d", got, n-queue+1)
	}
}

func TestWriterFlushesQueueOnShutdown(t *testing.T) {
	var out lockedBuffer
	w, err := NewWriter(Stdout, mustText(t, "%RESPONSE_CODE%\n"), WriterOptions{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		w.Log(&Entry{ResponseCode: 200})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run starts already cancelled: it must still write what is queued
	if err := w.Run(ctx); err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if got := strings.Count(out.String(), "200\n"); got != 100 || w.Dropped() != 0 {
		t.Errorf("after shutdown wrote %d entries, dropped %d; want 100 and 0", got, w.Dropped())
	}
	if err := w.Run(context.Background()); err == nil {
		t.Error("second Run() = nil, want an error")
	}
}

func TestWriterFileReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	w, err := NewWriter(path, mustText(t, "%REQ(:PATH)%\n"), WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stop := runWriter(t, w)
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return string(b)
	}
	w.Log(&Entry{Path: "/one"})
	w.Log(&Entry{Path: "/two"})
	waitFor(t, "two lines in the log", func() bool { return read(path) == "/one\n/two\n" })

	// logrotate: move the file away, then SIGHUP → Reopen.
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	w.Log(&Entry{Path: "/three"}) // still goes to the open, renamed file
	waitFor(t, "third line in the rotated file", func() bool { return strings.HasSuffix(read(rotated), "/three\n") })
	w.Reopen()
	w.Reopen() // coalesced with the first
	waitFor(t, "the reopened log file", func() bool { _, err := os.Stat(path); return err == nil })
	w.Log(&Entry{Path: "/four"})
	if err := stop(); err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if got := read(rotated); got != "/one\n/two\n/three\n" {
		t.Errorf("rotated file = %q", got)
	}
	if got := read(path); got != "/four\n" {
		t.Errorf("new file = %q, want /four", got)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o644 {
		t.Errorf("new file mode = %v, %v; want 0644", info.Mode().Perm(), err)
	}
}

// flakyFile fails writes while broken is set.
type flakyFile struct {
	lockedBuffer
	mu     sync.Mutex
	broken bool
}

func (f *flakyFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	broken := f.broken
	f.mu.Unlock()
	if broken {
		return 0, errors.New("no space left on device")
	}
	return f.lockedBuffer.Write(p)
}

func (f *flakyFile) Close() error { return nil }

func TestWriterWriteAndReopenFailures(t *testing.T) {
	file := &flakyFile{broken: true}
	var opens int
	var mu sync.Mutex
	var logs lockedBuffer
	stopped := time.Unix(1_700_000_000, 0) // a clock that never reaches the reopen retry
	w, err := NewWriter("/var/log/meshguard/access.log", mustText(t, "x\n"), WriterOptions{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Now:    func() time.Time { return stopped },
		OpenFile: func(string) (io.WriteCloser, error) {
			mu.Lock()
			defer mu.Unlock()
			opens++
			if opens == 2 {
				return nil, errors.New("permission denied")
			}
			return file, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runWriter(t, w)
	for range 3 {
		w.Log(&Entry{})
	}
	waitFor(t, "3 drops from write errors", func() bool { return w.Dropped() == 3 })
	if got := strings.Count(logs.String(), "access log write failed"); got != 1 {
		t.Errorf("write failure logged %d times, want once:\n%s", got, logs.String())
	}

	w.Reopen() // second open fails: entries are dropped until the next Reopen
	waitFor(t, "failed reopen to be logged", func() bool { return strings.Contains(logs.String(), "access log reopen failed") })
	w.Log(&Entry{})
	waitFor(t, "drop while closed", func() bool { return w.Dropped() == 4 })

	file.mu.Lock()
	file.broken = false
	file.mu.Unlock()
	w.Reopen()
	waitFor(t, "third open", func() bool { mu.Lock(); defer mu.Unlock(); return opens == 3 })
	w.Log(&Entry{})
	waitFor(t, "a line after recovery", func() bool { return file.lockedBuffer.String() == "x\n" })
	if w.Dropped() != 4 {
		t.Errorf("Dropped() = %d after recovery, want 4", w.Dropped())
	}
}

// TestWriterRetriesFailedReopen: after a failed reopen the writer tries again once
// ReopenRetry has passed, without waiting for another SIGHUP, and not before.
func TestWriterRetriesFailedReopen(t *testing.T) {
	var (
		mu    sync.Mutex
		opens int
		now   = time.Unix(1_700_000_000, 0)
		file  lockedBuffer
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	w, err := NewWriter("/var/log/meshguard/access.log", mustText(t, "x\n"), WriterOptions{
		Now: clock,
		OpenFile: func(string) (io.WriteCloser, error) {
			mu.Lock()
			defer mu.Unlock()
			opens++
			if opens == 2 || opens == 3 {
				return nil, errors.New("permission denied")
			}
			return nopCloser{&file}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runWriter(t, w)
	openCount := func() int { mu.Lock(); defer mu.Unlock(); return opens }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }

	w.Reopen() // open 2 fails
	waitFor(t, "the failed reopen", func() bool { return openCount() == 2 })
	w.Log(&Entry{})
	waitFor(t, "a drop before the retry is due", func() bool { return w.Dropped() == 1 })
	if n := openCount(); n != 2 {
		t.Fatalf("%d opens before ReopenRetry passed, want 2", n)
	}
	advance(ReopenRetry)
	w.Log(&Entry{}) // open 3 fails: dropped, next retry a ReopenRetry later
	waitFor(t, "the first retry", func() bool { return openCount() == 3 && w.Dropped() == 2 })
	advance(ReopenRetry / 2)
	w.Log(&Entry{})
	waitFor(t, "a drop between retries", func() bool { return w.Dropped() == 3 })
	advance(ReopenRetry / 2)
	w.Log(&Entry{}) // open 4 succeeds
	waitFor(t, "a line after the retry", func() bool { return file.String() == "x\n" })
	if n, d := openCount(), w.Dropped(); n != 4 || d != 3 {
		t.Errorf("opens = %d, Dropped() = %d; want 4 and 3", n, d)
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func TestWriterOpenErrorAndBadConfig(t *testing.T) {
	w, err := NewWriter(filepath.Join(t.TempDir(), "missing-dir", "access.log"), mustText(t, "x"), WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = w.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "missing-dir/access.log") {
		t.Errorf("Run() with unopenable file = %v, want an error naming the file", err)
	}
	if _, err := NewWriter("", mustText(t, "x"), WriterOptions{}); err == nil {
		t.Error("NewWriter(empty path) = nil error")
	}
	if _, err := NewWriter(Stdout, nil, WriterOptions{}); err == nil {
		t.Error("NewWriter(nil formatter) = nil error")
	}
}

// gateFormat is a Formatter that signals when it starts formatting and then waits for
// release, so a test can hold a Log call between its start and its enqueue.
type gateFormat struct {
	started chan struct{}
	release chan struct{}
}

func (g gateFormat) Append(dst []byte, _ *Entry) []byte {
	g.started <- struct{}{}
	<-g.release
	return append(dst, "x\n"...)
}

func (gateFormat) String() string { return "x\n" }

// TestWriterLogRacingShutdownIsCounted: an entry whose Log call was formatting while
// Run shut down (a config swap stopping the old writer under traffic) is either
// written or counted as dropped, never left unseen in the queue.
func TestWriterLogRacingShutdownIsCounted(t *testing.T) {
	g := gateFormat{started: make(chan struct{}), release: make(chan struct{})}
	var out lockedBuffer
	w, err := NewWriter(Stdout, g, WriterOptions{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	stop := runWriter(t, w)
	logged := make(chan struct{})
	go func() { defer close(logged); w.Log(&Entry{}) }()
	<-g.started // Log is past its start, formatting
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	<-logged
	if written, dropped := strings.Count(out.String(), "x\n"), w.Dropped(); written+int(dropped) != 1 {
		t.Errorf("entry logged during shutdown: written %d, Dropped() = %d; want it written or counted", written, dropped)
	}
}
