package accesslog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Stdout is the accessLogFile value that means the process's standard output.
const Stdout = "/dev/stdout"

// DefaultQueueSize is how many formatted entries may wait for the disk before new ones
// are dropped.
const DefaultQueueSize = 4096

// ReopenRetry is how often Run tries again to open the log file after a reopen failed,
// so that one failed reopen (logrotate racing a permission change, a full disk) does
// not silence the audit trail until the next SIGHUP.
const ReopenRetry = time.Second

// maxPooledBuf caps the buffers kept for reuse so one huge line does not pin memory.
const maxPooledBuf = 64 << 10

// Counter is what the Writer needs to report drops; a prometheus.Counter satisfies it.
type Counter interface{ Add(float64) }

// WriterOptions tunes a Writer. The zero value is usable.
type WriterOptions struct {
	// Stdout receives entries when the path is "/dev/stdout"; nil means os.Stdout.
	Stdout io.Writer
	// QueueSize bounds the entries waiting to be written; 0 means DefaultQueueSize.
	QueueSize int
	// Logger reports write and reopen failures; nil discards them.
	Logger *slog.Logger
	// Dropped, if set, is increased by every dropped entry (e.g. the
	// meshguard_accesslog_dropped_entries_total counter).
	Dropped Counter
	// OpenFile opens the log file for appending; nil means os.OpenFile with
	// O_WRONLY|O_APPEND|O_CREATE and mode 0644. Tests inject failures here.
	OpenFile func(path string) (io.WriteCloser, error)
	// Now paces the retries after a failed reopen (ReopenRetry); nil means time.Now.
	Now func() time.Time
}

// Writer writes access-log entries without ever blocking its callers: Log formats the
// entry on the caller's goroutine (so the Entry may be reused immediately) and hands
// the bytes to a bounded queue; Run drains the queue to the file. When the queue is
// full — a slow or stuck disk — the entry is dropped and counted.
type Writer struct {
	path   string
	format Formatter
	opts   WriterOptions
	log    *slog.Logger

	queue   chan *[]byte
	reopen  chan struct{}
	pool    sync.Pool
	dropped atomic.Uint64
	running atomic.Bool
	// closing is held shared by Log from its closed check to its enqueue, and
	// exclusively by Run to set closed, so that Run's final drain sees every entry
	// Log queued: none is left unwritten and uncounted.
	closing sync.RWMutex
	closed  bool
}

// NewWriter returns a Writer for path ("/dev/stdout" or a file) with format f. It opens
// nothing and starts no goroutine; Run does.
func NewWriter(path string, f Formatter, opts WriterOptions) (*Writer, error) {
	if path == "" {
		return nil, errors.New("access log: empty path (use /dev/stdout or a file path)")
	}
	if f == nil {
		return nil, errors.New("access log: nil formatter")
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.OpenFile == nil {
		opts.OpenFile = func(p string) (io.WriteCloser, error) {
			return os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		}
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	w := &Writer{
		path: path, format: f, opts: opts, log: lg,
		queue:  make(chan *[]byte, opts.QueueSize),
		reopen: make(chan struct{}, 1),
	}
	w.pool.New = func() any { b := make([]byte, 0, 1024); return &b }
	return w, nil
}

// Log formats e and queues it. It never blocks: if the queue is full, or the Writer
// has shut down, the entry is dropped and counted.
func (w *Writer) Log(e *Entry) {
	bp := w.pool.Get().(*[]byte)
	*bp = w.format.Append((*bp)[:0], e)
	w.closing.RLock()
	queued := false
	if !w.closed {
		select {
		case w.queue <- bp:
			queued = true
		default:
		}
	}
	w.closing.RUnlock()
	if !queued {
		w.put(bp)
		w.drop()
	}
}

// close stops Log from queueing; entries queued before it are Run's to drain.
func (w *Writer) close() {
	w.closing.Lock()
	w.closed = true
	w.closing.Unlock()
}

func (w *Writer) drop() { w.dropN(1) }

func (w *Writer) dropN(n uint64) {
	w.dropped.Add(n)
	if w.opts.Dropped != nil {
		w.opts.Dropped.Add(float64(n))
	}
}

func (w *Writer) put(bp *[]byte) {
	if cap(*bp) <= maxPooledBuf {
		w.pool.Put(bp)
	}
}

// Dropped is the number of entries dropped so far.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Reopen asks Run to close and reopen the log file before the next write: the
// sidecar calls it on SIGHUP after logrotate moved the file. It does not block;
// several calls before Run gets to it reopen once.
func (w *Writer) Reopen() {
	select {
	case w.reopen <- struct{}{}:
	default:
	}
}

// Run writes queued entries until ctx is done, then writes what is still queued,
// flushes and closes the file. It fails only if the file cannot be opened at start;
// later write or reopen failures are logged and their entries counted as dropped,
// because the data path must not depend on the disk.
func (w *Writer) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("access log: Writer.Run called twice")
	}
	out, err := w.open()
	if err != nil {
		w.close()
		return err
	}
	s := sink{w: w, out: out}
	defer func() {
		w.close()
		for len(w.queue) > 0 {
			s.writeBatch(<-w.queue)
		}
		s.close()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.reopen:
			s.reopen()
		case bp := <-w.queue:
			s.writeBatch(bp)
		}
	}
}

// open opens the configured destination; stdout is never closed or reopened.
func (w *Writer) open() (io.Writer, error) {
	if w.path == Stdout {
		return w.opts.Stdout, nil
	}
	f, err := w.opts.OpenFile(w.path)
	if err != nil {
		return nil, fmt.Errorf("open access log %s: %w", w.path, err)
	}
	return f, nil
}

// maxBatch bounds how many bytes one write system call carries.
const maxBatch = 256 << 10

// sink is Run's private state: the open destination, the batch being assembled,
// whether the last write failed (so a full disk logs once, not once per entry), and,
// while the destination is closed after a failed reopen, when to try opening it again.
type sink struct {
	w       *Writer
	out     io.Writer
	batch   []byte
	failed  bool
	retryAt time.Time
}

// writeBatch writes bp together with whatever else is already queued, in one write.
func (s *sink) writeBatch(bp *[]byte) {
	s.batch = append(s.batch[:0], *bp...)
	s.w.put(bp)
	n := uint64(1)
more:
	for len(s.batch) < maxBatch {
		select {
		case bp := <-s.w.queue:
			s.batch = append(s.batch, *bp...)
			s.w.put(bp)
			n++
		default:
			break more
		}
	}
	if cap(s.batch) > 2*maxBatch {
		defer func() { s.batch = nil }()
	}
	if s.out == nil && !s.retry() {
		s.w.dropN(n)
		return
	}
	if _, err := s.out.Write(s.batch); err != nil {
		s.w.dropN(n)
		if !s.failed {
			s.w.log.Error("access log write failed; dropping entries until it recovers", "path", s.w.path, "err", err)
		}
		s.failed = true
		return
	}
	if s.failed {
		s.w.log.Info("access log writes recovered", "path", s.w.path)
		s.failed = false
	}
}

func (s *sink) reopen() {
	if s.w.path == Stdout {
		return
	}
	s.close()
	out, err := s.w.open()
	if err != nil {
		// Entries are dropped until the next successful Reopen.
		s.w.log.Error("access log reopen failed; dropping entries until it can be opened", "path", s.w.path, "err", err, "retryEvery", ReopenRetry)
		s.out = nil
		s.retryAt = s.w.opts.Now().Add(ReopenRetry)
		return
	}
	s.out = out
	s.failed = false
}

// retry opens the destination again after a failed reopen, at most once per
// ReopenRetry, and reports whether it is open.
func (s *sink) retry() bool {
	now := s.w.opts.Now()
	if now.Before(s.retryAt) {
		return false
	}
	out, err := s.w.open()
	if err != nil {
		s.retryAt = now.Add(ReopenRetry)
		return false
	}
	s.w.log.Info("access log reopened after a failed reopen", "path", s.w.path)
	s.out, s.failed = out, false
	return true
}

func (s *sink) close() {
	if c, ok := s.out.(io.Closer); ok && s.w.path != Stdout {
		if err := c.Close(); err != nil {
			s.w.log.Error("access log close failed", "path", s.w.path, "err", err)
		}
	}
}
