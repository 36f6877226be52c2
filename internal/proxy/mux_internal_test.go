package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestRecentValues: recent values come back without allocating, equal to what was
// asked for; credentials are never kept.
func TestRecentValues(t *testing.T) {
	var r recentValues
	for _, tc := range []struct {
		name, value string
		cached      bool
	}{
		{"content-type", "text/plain", true},
		{"content-length", "1024", true},
		{"authorization", "Bearer abc", false},
		{"cookie", "session=1", false},
		{"set-cookie", "session=2", false},
		{"proxy-authorization", "Basic eA==", false},
	} {
		b := []byte(tc.value)
		if got := r.value(tc.name, b); got != tc.value {
			t.Fatalf("%s: got %q, want %q", tc.name, got, tc.value)
		}
		allocs := testing.AllocsPerRun(10, func() {
			if got := r.value(tc.name, b); got != tc.value {
				t.Fatalf("%s: got %q, want %q", tc.name, got, tc.value)
			}
		})
		if cached := allocs == 0; cached != tc.cached {
			t.Errorf("%s: %v allocations per lookup; cached %v, want %v", tc.name, allocs, cached, tc.cached)
		}
		for _, v := range r.v {
			if v == tc.value && !tc.cached {
				t.Errorf("%s: value kept in the cache", tc.name)
			}
		}
	}
	// Eight more distinct values push the first ones out.
	for i := range len(r.v) {
		r.get([]byte{'v', byte('0' + i)})
	}
	for _, v := range r.v {
		if v == "text/plain" {
			t.Errorf("cache %q: still holds text/plain after %d newer values", r.v, len(r.v))
		}
	}
}

// headerFrames writes one header block as HEADERS plus a CONTINUATION per further
// fragment; each fragment is the HPACK encoding of one group of name, value pairs.
func headerFrames(t *testing.T, groups ...[]string) []byte {
	t.Helper()
	var wire, blk bytes.Buffer
	fw, enc := http2.NewFramer(&wire, nil), hpack.NewEncoder(&blk)
	for i, g := range groups {
		blk.Reset()
		for j := 0; j+1 < len(g); j += 2 {
			// Never indexed, so that every fragment is decoded in full.
			enc.WriteField(hpack.HeaderField{Name: g[j], Value: g[j+1], Sensitive: true}) //nolint:errcheck // bytes.Buffer
		}
		end := i == len(groups)-1
		var err error
		if i == 0 {
			err = fw.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk.Bytes(), EndHeaders: end, EndStream: true})
		} else {
			err = fw.WriteContinuation(1, end, blk.Bytes())
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return wire.Bytes()
}

// TestMuxHeaderBlockLimits: a block split over CONTINUATION frames within the limit is
// read whole; a peer that keeps sending CONTINUATION frames past the header-list
// limit, or after a bad field, loses the connection without the rest being decoded
// (the CONTINUATION flood, CVE-2023-45288).
func TestMuxHeaderBlockLimits(t *testing.T) {
	req := []string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "a"}
	pad := func(n int) []string { return []string{"x-pad", strings.Repeat("a", n)} }
	t.Run("split within the limit", func(t *testing.T) {
		wire := headerFrames(t, req, pad(100), pad(100), pad(100))
		mc := newMuxConn(nil, bufio.NewReader(bytes.NewReader(wire)), bufio.NewWriter(io.Discard), true)
		h, _, err := mc.nextFrame()
		if err != nil || h == nil || len(h.regular()) != 3 || h.pseudo(":path") != "/" {
			t.Fatalf("nextFrame = %+v, %v; want the request with 3 x-pad fields", h, err)
		}
	})
	for _, tc := range []struct {
		name   string
		groups [][]string
	}{
		{"flood past the limit", append([][]string{req}, func() [][]string {
			var g [][]string
			for range 200 {
				g = append(g, pad(8<<10))
			}
			return g
		}()...)},
		{"continuation after a bad field", [][]string{append(req, "x-bad", "a\x00b"), pad(10), pad(10)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wire := headerFrames(t, tc.groups...)
			r := bytes.NewReader(wire)
			mc := newMuxConn(nil, bufio.NewReader(r), bufio.NewWriter(io.Discard), true)
			_, _, err := mc.nextFrame()
			var ce http2.ConnectionError
			if !errors.As(err, &ce) || http2.ErrCode(ce) != http2.ErrCodeProtocol {
				t.Fatalf("nextFrame error = %v; want connection error PROTOCOL_ERROR", err)
			}
			if read := len(wire) - r.Len() - mc.br.Buffered(); read > 3*maxHeadBytes {
				t.Errorf("read %d of %d bytes before giving up; want at most %d", read, len(wire), 3*maxHeadBytes)
			}
		})
	}
}

// TestMuxWaitStream: idle stream workers beyond muxIdleWorkers exit after lingering,
// the first muxIdleWorkers stay for good, and every way out leaves the idle count right.
func TestMuxWaitStream(t *testing.T) {
	const linger = 20 * time.Millisecond
	for _, tc := range []struct {
		name     string
		idle     int           // idle workers counting this one
		send     bool          // the reader hands it a stream after 3 lingers
		close    bool          // the connection ends after 3 lingers
		wantS    bool          // waitStream returns the stream
		wantIdle int           // mc.idleWorkers afterwards
		minWait  time.Duration // waitStream returns no sooner
	}{
		{name: "a surplus worker exits after lingering", idle: muxIdleWorkers + 1, wantIdle: muxIdleWorkers, minWait: linger},
		{name: "a kept worker waits past the linger for a stream", idle: muxIdleWorkers, send: true, wantS: true, wantIdle: muxIdleWorkers - 1, minWait: 3 * linger},
		{name: "a kept worker exits when the connection ends", idle: muxIdleWorkers, close: true, wantIdle: muxIdleWorkers - 1, minWait: 3 * linger},
		{name: "a surplus worker takes a stream in time", idle: muxMaxIdleWorkers, send: true, wantS: true, wantIdle: muxMaxIdleWorkers - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := &muxConn{work: make(chan *muxStream), done: make(chan struct{}), idleWorkers: tc.idle}
			want := &muxStream{id: 7}
			lingerFor := linger
			if tc.send && tc.idle > muxIdleWorkers {
				lingerFor = time.Minute // the stream comes first
			}
			go func() {
				if tc.send || tc.close {
					time.Sleep(3 * linger)
				}
				switch {
				case tc.send:
					mc.work <- want
				case tc.close:
					close(mc.done)
				}
			}()
			var timer *time.Timer
			start := time.Now()
			got := mc.waitStream(&timer, lingerFor)
			waited := time.Since(start)
			if (got == want) != tc.wantS || (got != nil && got != want) {
				t.Errorf("waitStream = %v, want the stream: %v", got, tc.wantS)
			}
			if mc.idleWorkers != tc.wantIdle {
				t.Errorf("idle workers afterwards = %d, want %d", mc.idleWorkers, tc.wantIdle)
			}
			if waited < tc.minWait {
				t.Errorf("waitStream returned after %v, want at least %v", waited, tc.minWait)
			}
			// The timer is the worker's own, reused by its next wait.
			if timer == nil {
				t.Fatal("no timer kept for the next wait")
			}
			timer.Stop()
		})
	}
}

// countingWriter counts the writes that reach the connection.
type countingWriter struct {
	bytes.Buffer
	writes int
	sizes  []int // of each write
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	w.sizes = append(w.sizes, len(p))
	return w.Buffer.Write(p)
}

// framesIn parses b as HTTP/2 frames: the streams they belong to, and those ended.
func framesIn(t *testing.T, b []byte) (streams, ended map[uint32]bool) {
	t.Helper()
	streams, ended = map[uint32]bool{}, map[uint32]bool{}
	fr := http2.NewFramer(nil, bytes.NewReader(b))
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			return streams, ended
		} else if err != nil {
			t.Fatalf("reading what was written: %v", err)
		}
		streams[f.Header().StreamID] = true
		if f.Header().Flags.Has(http2.FlagHeadersEndStream) { // the same bit for DATA
			ended[f.Header().StreamID] = true
		}
	}
}

// TestMuxWritesCoalesce: on one CPU, as a sidecar runs, streams that answer together
// share a write: a writer with other streams in flight yields before it flushes, and
// the last one back from its yield flushes for all. The flush after such a batch goes
// at once, so the peer can start on it. With one stream in flight a flush is
// immediate.
func TestMuxWritesCoalesce(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const n = 8
	body := bytes.Repeat([]byte("x"), 1024)
	for _, tc := range []struct {
		name      string
		withBody  bool // a HEADERS frame without a flush, then DATA with one
		maxWrites int
	}{
		{"headers only", false, n / 2},
		// The server's usual answer. Each writer coming back from its yield used to
		// flush the DATA the next one had just added: n writes. Now 1, at times 3:
		// the scheduler takes a yielder back early every 61st turn, for fairness.
		{"headers and body", true, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w countingWriter
			mc := newMuxConn(nil, bufio.NewReader(strings.NewReader("")), bufio.NewWriterSize(&w, 64<<10), true)
			fields := []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-length", Value: "0"}}
			if tc.withBody {
				fields[1].Value = "1024"
			}
			answer := func(id uint32) error {
				if !tc.withBody {
					return mc.writeHeaders(id, fields, true, true)
				}
				mc.mu.Lock()
				s := mc.newStreamLocked(id)
				mc.mu.Unlock()
				if err := mc.writeHeaders(id, fields, false, false); err != nil {
					return err
				}
				return mc.writeData(s, body, true, true)
			}
			round := func(first uint32) { answerTogether(t, mc, n, first, answer) }
			round(1)
			if w.writes > tc.maxWrites {
				t.Errorf("%d streams answering together made %d writes, want at most %d", n, w.writes, tc.maxWrites)
			}
			// A batched flush makes the next one eager, and an eager one the next
			// batched. Whether round 1 ended batched depends on the scheduler's
			// fairness turns, so the state is set here.
			mc.active = 2
			mc.eager = false
			if err := answer(51); err != nil || !mc.eager {
				t.Fatalf("a batched flush (err %v) left eager %v, want true", err, mc.eager)
			}
			if err := answer(53); err != nil || mc.eager {
				t.Fatalf("an eager flush (err %v) left eager %v, want false", err, mc.eager)
			}
			// The next round follows a batched flush: its first answer goes alone and
			// at once; the others batch again.
			mc.eager = true
			before := w.writes
			firstWrite := len(w.Bytes())
			round(101)
			if got := w.writes - before; got < 2 || got > tc.maxWrites+1 {
				t.Errorf("the round after a batch made %d writes, want its first answer alone, then at most %d", got, tc.maxWrites)
			}
			alone, _ := framesIn(t, w.Bytes()[firstWrite:firstWrite+w.sizes[before]])
			if len(alone) != 1 {
				t.Errorf("the first write after a batch carried %d streams, want 1", len(alone))
			}
			if _, ended := framesIn(t, w.Bytes()); len(ended) != 2*n+2 {
				t.Errorf("the connection carried the end of %d streams, want %d", len(ended), 2*n+2)
			}

			mc.active = 1
			before = w.writes
			if err := answer(99); err != nil {
				t.Fatal(err)
			}
			if w.writes != before+1 {
				t.Errorf("a lone stream's answer made %d writes, want 1 at once", w.writes-before)
			}
		})
	}
}

// answerTogether runs answer for n streams (IDs first, first+2, ...) at once, as
// streams that finish together do, with mc counting them in flight.
func answerTogether(t *testing.T, mc *muxConn, n int, first uint32, answer func(id uint32) error) {
	t.Helper()
	mc.active = n
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := answer(first + uint32(2*i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

// TestMuxBatchCap: however many streams answer together, one write carries at most
// muxMaxBatch of them, so the peer starts on the first ones while the rest are made;
// and every answer still goes out.
func TestMuxBatchCap(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const n = 3*muxMaxBatch + 2
	var w countingWriter
	mc := newMuxConn(nil, bufio.NewReader(strings.NewReader("")), bufio.NewWriterSize(&w, 64<<10), true)
	fields := []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-length", Value: "0"}}
	answerTogether(t, mc, n, 1, func(id uint32) error { return mc.writeHeaders(id, fields, true, true) })
	if w.writes < n/muxMaxBatch {
		t.Errorf("%d streams answering together made %d writes, want at least %d", n, w.writes, n/muxMaxBatch)
	}
	off := 0
	for i, size := range w.sizes {
		if streams, _ := framesIn(t, w.Bytes()[off:off+size]); len(streams) > muxMaxBatch {
			t.Errorf("write %d carried %d streams, want at most %d", i, len(streams), muxMaxBatch)
		}
		off += size
	}
	if _, ended := framesIn(t, w.Bytes()); len(ended) != n {
		t.Errorf("the connection carried the end of %d streams, want %d", len(ended), n)
	}
}
