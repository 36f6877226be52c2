package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HTTP/1.1 between meshguard sidecars, multiplexed as HTTP/2 streams (RFC 9113) on a
// few long-lived mTLS connections per destination endpoint. The client sidecar turns
// each request it reads from its app into one stream (muxclient.go); the server
// sidecar turns each stream back into an HTTP/1.1 request to its app after the same
// authentication and authorization as any inbound request (muxserver.go).
//
// Both ends are meshguard's own lean HTTP/2 over x/net/http2's Framer and HPACK coder,
// not net/http: x/net/http2's Transport and Server run several goroutines per stream
// and hand every frame through channels, which measured 1.5-2.2x nginx's CPU per
// request (docs/performance.md). Here the goroutine that has something to send writes
// it under the connection's write lock (no writer goroutine), one reader goroutine per
// connection demultiplexes frames, and the server runs one goroutine per stream.
//
// The ALPN protocol alpnMux selects this path, so only a meshguard server ever sees it;
// a peer that does not offer it (an Envoy sidecar) negotiates istio-http/1.1 on the
// same handshake and gets pooled HTTP/1.1.

const alpnMux = "meshguard-h2mux"

const (
	// Receive windows we advertise. The connection window bounds what one peer can make
	// us buffer across all of its streams; data is credited back as it is consumed.
	muxStreamWindow = 256 << 10
	muxConnWindow   = 1 << 20
	// muxWriteBuf is what one flush can carry: a full TLS record (16 KiB of plaintext
	// at most), so the frames of ~14 streams answering together with 1 KiB each cost
	// one record and one write(2), where the pools' 4 KiB buffers cost four.
	muxWriteBuf = 16 << 10
	// muxMaxBatch is how many streams' frames one flush carries at most (see unlockW).
	muxMaxBatch = 12
	// muxMaxStreams is the server's SETTINGS_MAX_CONCURRENT_STREAMS.
	muxMaxStreams = 256
	// HTTP/2's initial values (RFC 9113 §6.5.2) until the peer's SETTINGS say otherwise.
	h2InitialWindow = 65535
	h2MaxFrame      = 16 << 10
)

var (
	errMuxClosed  = errors.New("HTTP/2 connection closed")
	errMuxReset   = errors.New("HTTP/2 stream reset by peer")
	errMuxRefused = errors.New("HTTP/2 stream refused by peer")
)

// muxConn is one HTTP/2 connection, client or server side. The reader goroutine owns
// fr's read half; writes take wmu. mu guards the stream table and flow-control state.
type muxConn struct {
	c      net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	fr     *http2.Framer
	server bool

	wmu     sync.Mutex // fr writes, bw, henc, hbuf, owed, yielded, eager
	wwait   atomic.Int32
	owed    int  // streams whose frames wait in bw for a flush (one writer does it)
	yielded int  // writers in unlockW's yield, the last of which flushes
	eager   bool // the last flush was batched: the next goes at once
	henc    *hpack.Encoder
	hbuf    bytes.Buffer

	// reader goroutine only: the HPACK decoder and the header block it decodes into
	hdec   *hpack.Decoder
	hblock muxHeaders

	mu         sync.Mutex
	cond       sync.Cond // send window opened, a stream slot freed, or the conn ended
	streams    map[uint32]*muxStream
	sendWindow int64 // connection-level, what the peer lets us send
	peerWindow int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE for new streams
	peerFrame  int   // the peer's SETTINGS_MAX_FRAME_SIZE
	peerMax    uint32
	unacked    int64         // consumed bytes not yet credited back on the connection
	recvAvail  int64         // connection receive window left
	free       *muxStream    // finished streams kept for reuse
	err        error         // set once the connection is unusable; streams see it
	closed     chan struct{} // closed with err's first setting
	lastRead   atomic.Int64  // unix nanoseconds of the last frame read
	goAway     bool          // no new streams (GOAWAY sent or received)
	highest    uint32        // the highest stream ID opened on this connection
	active     int           // streams in use (client: open; server: handler running)

	// server side: idle stream workers wait on work until done is closed
	work        chan *muxStream
	done        chan struct{}
	idleWorkers int

	// client side
	nextID uint32
	peer   string // verified server principal
	idle   time.Time
	now    func() time.Time
}

func newMuxConn(c net.Conn, br *bufio.Reader, bw *bufio.Writer, server bool) *muxConn {
	mc := &muxConn{c: c, br: br, bw: bw, server: server,
		streams: make(map[uint32]*muxStream), sendWindow: h2InitialWindow, nextID: 1,
		peerWindow: h2InitialWindow, peerFrame: h2MaxFrame, peerMax: 100, now: time.Now,
		recvAvail: muxConnWindow, closed: make(chan struct{})}
	mc.cond.L = &mc.mu
	mc.fr = http2.NewFramer(bw, br)
	mc.fr.SetReuseFrames()
	mc.hdec = hpack.NewDecoder(4096, mc.emitField)
	mc.hdec.SetMaxStringLength(maxHeadBytes)
	mc.henc = hpack.NewEncoder(&mc.hbuf)
	return mc
}

// muxStream is one stream's receive side (a pipe the reader fills) and send window.
type muxStream struct {
	id         uint32
	sendWindow int64 // guarded by mc.mu
	recvAvail  int64 // receive window left; guarded by mc.mu
	notify     chan struct{}

	// guarded by mc.mu
	hdrs      []hpack.HeaderField // response (client) or request (server) head
	trailers  []hpack.HeaderField
	hdrsReady bool
	status    int // client: the response's :status
	buf       []byte
	off       int
	ended     bool // END_STREAM received
	err       error
	unacked   int64 // consumed, not yet credited back
	reqBody   bool  // server: the request has a body (HEADERS did not end the stream)
	next      *muxStream
}

// newStreamLocked returns a stream for id, reusing a finished one and its buffer so
// that a request allocates no stream state; mc.mu is held.
func (mc *muxConn) newStreamLocked(id uint32) *muxStream {
	s := mc.free
	if s == nil {
		s = &muxStream{notify: make(chan struct{}, 1)}
	} else {
		mc.free = s.next
		buf, hdrs, notify := s.buf[:0], s.hdrs[:0], s.notify
		select {
		case <-notify: // a wake-up nobody waited for
		default:
		}
		*s = muxStream{buf: buf, hdrs: hdrs, notify: notify}
	}
	s.id, s.sendWindow, s.recvAvail = id, mc.peerWindow, muxStreamWindow
	return s
}

// freeStreamLocked keeps s for reuse once it is out of the stream table and no
// goroutine holds it any more; mc.mu is held.
func (mc *muxConn) freeStreamLocked(s *muxStream) {
	if cap(s.buf) > 64<<10 {
		s.buf = nil // do not keep a large body's buffer around
	}
	clear(s.hdrs) // let the strings go; keep the slice
	s.hdrs, s.trailers, s.err = s.hdrs[:0], nil, nil
	s.next, mc.free = mc.free, s
}

func (s *muxStream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// settings are what each side announces first. The connection window is raised
// separately (SETTINGS cannot).
func (mc *muxConn) writeSettings() error {
	ss := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: muxStreamWindow},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeadBytes},
	}
	if mc.server {
		ss = append(ss, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: muxMaxStreams})
	} else {
		ss = append(ss, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	mc.wmu.Lock()
	defer mc.wmu.Unlock()
	if err := mc.fr.WriteSettings(ss...); err != nil {
		return err
	}
	if err := mc.fr.WriteWindowUpdate(0, muxConnWindow-h2InitialWindow); err != nil {
		return err
	}
	return mc.bw.Flush()
}

// fail marks the connection dead and wakes every stream and waiter.
func (mc *muxConn) fail(err error) {
	mc.mu.Lock()
	if mc.err == nil {
		mc.err = err
		close(mc.closed)
	}
	for _, s := range mc.streams {
		if s.err == nil && !s.ended {
			s.err = mc.err
		}
		s.wake()
	}
	mc.cond.Broadcast()
	mc.mu.Unlock()
	mc.c.Close() //nolint:errcheck // the reader sees the close
}

// writeHeaders HPACK-encodes fields into one HEADERS frame and as many CONTINUATION
// frames as the peer's frame size needs.
func (mc *muxConn) writeHeaders(id uint32, fields []hpack.HeaderField, endStream, flush bool) error {
	mc.lockW()
	mc.encode(fields)
	return mc.unlockW(flush, mc.writeBlock(id, endStream))
}

func (mc *muxConn) encode(fields []hpack.HeaderField) {
	mc.hbuf.Reset()
	for _, f := range fields {
		mc.henc.WriteField(f) //nolint:errcheck // writes to a bytes.Buffer
	}
}

// lockW takes the write lock, counting the wait so that the holder knows another
// writer is about to follow it.
func (mc *muxConn) lockW() {
	mc.wwait.Add(1)
	mc.wmu.Lock()
	mc.wwait.Add(-1)
}

// unlockW releases the write lock; flush asks for the caller's frames to be sent.
//
// Concurrent streams should share one write(2) and one TLS record rather than pay one
// each, so a flush is owed (owed > 0) until one writer does it for everybody:
//   - a writer that finds another waiting for the lock leaves the flush to it;
//   - a sidecar runs on one CPU, though, where its goroutines take turns and the lock
//     is hardly ever contended: so while other streams of the connection are in
//     flight, the writer yields once (runtime.Gosched) to let the goroutines that are
//     ready add their frames first, and the last writer to come back from its yield
//     flushes;
//   - while a writer is yielding (yielded > 0), others just add their frames: the
//     yielder's flush carries them. Without this, each writer coming back found the
//     flush the next one had just asked for and sent one record per stream.
//   - but the flush after a batched one goes at once, without the yield (eager): the
//     peer, on the other CPU, starts on the first answer while this side makes the
//     rest, instead of the two sidecars working in turn on whole batches. Measured at
//     maximum throughput: the server's CPU idled 11-13% of the time rather than 17%,
//     at the same CPU per request, and throughput rose ~7%.
//   - and a batch goes as soon as muxMaxBatch streams are in it, yielders or not. At
//     maximum throughput half of all requests went out in flushes of 16 or more of the
//     bench's 32 streams, which the peer could not start on until the last was in;
//     capped at 12 (~13 KiB of 1 KiB answers, about what one TLS record carries
//     anyway) throughput rose ~4% (median of 22 alternated rounds, 15 ahead; 4 was
//     worse, 8 and 16 less steady). At 1,000 req/s nearly every flush holds one
//     stream (9 at most in 10 s), and the cap never binds.
//
// With a single stream in flight every flush happens at once.
func (mc *muxConn) unlockW(flush bool, err error) error {
	if err != nil {
		mc.wmu.Unlock()
		return err
	}
	if flush {
		mc.owed++
	}
	if mc.owed >= muxMaxBatch {
		return mc.flushUnlock(mc.eager)
	}
	if mc.owed == 0 || mc.yielded > 0 {
		mc.wmu.Unlock()
		return nil
	}
	batched := false
	if mc.wwait.Load() == 0 && !mc.eager && mc.othersActive() {
		batched = true
		mc.yielded++
		mc.wmu.Unlock()
		runtime.Gosched()
		mc.lockW()
		mc.yielded--
		if mc.owed == 0 || mc.yielded > 0 { // flushed already, or a later yielder will
			mc.wmu.Unlock()
			return nil
		}
	}
	if mc.wwait.Load() > 0 { // the writer waiting for the lock flushes
		mc.wmu.Unlock()
		return nil
	}
	return mc.flushUnlock(batched)
}

// flushUnlock sends what bw holds and releases the write lock; eager is what the next
// flush does.
func (mc *muxConn) flushUnlock(eager bool) error {
	err := mc.bw.Flush()
	mc.owed, mc.eager = 0, eager
	mc.wmu.Unlock()
	return err
}

// othersActive reports whether streams other than the caller's are in flight.
func (mc *muxConn) othersActive() bool {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return mc.active > 1
}

// writeBlock writes the encoded block in hbuf; wmu is held.
func (mc *muxConn) writeBlock(id uint32, endStream bool) error {
	block := mc.hbuf.Bytes()
	mc.mu.Lock()
	max := mc.peerFrame
	mc.mu.Unlock()
	first := true
	for first || len(block) > 0 {
		n := min(len(block), max)
		frag, last := block[:n], n == len(block)
		var err error
		if first {
			err = mc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: endStream, EndHeaders: last})
			first = false
		} else {
			err = mc.fr.WriteContinuation(id, last, frag)
		}
		if err != nil {
			return err
		}
		block = block[n:]
	}
	return nil
}

// writeData sends data on stream s within the flow-control windows, blocking while
// they are closed; it sets END_STREAM on the last frame when end is true.
func (mc *muxConn) writeData(s *muxStream, data []byte, end, flush bool) error {
	for first := true; first || len(data) > 0; first = false {
		mc.mu.Lock()
		for len(data) > 0 && (mc.sendWindow <= 0 || s.sendWindow <= 0) && mc.err == nil && s.err == nil {
			mc.cond.Wait()
		}
		if err := mc.err; err != nil {
			mc.mu.Unlock()
			return err
		}
		if err := s.err; err != nil {
			mc.mu.Unlock()
			return err
		}
		n := min(int64(len(data)), mc.sendWindow, s.sendWindow, int64(mc.peerFrame))
		mc.sendWindow -= n
		s.sendWindow -= n
		mc.mu.Unlock()
		last := int(n) == len(data)
		mc.lockW()
		err := mc.unlockW(last && flush, mc.fr.WriteData(s.id, end && last, data[:n]))
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// writeRST resets stream id (best effort: a broken connection fails on its own).
func (mc *muxConn) writeRST(id uint32, code http2.ErrCode) {
	mc.wmu.Lock()
	if mc.fr.WriteRSTStream(id, code) == nil {
		mc.bw.Flush() //nolint:errcheck
	}
	mc.wmu.Unlock()
}

// read copies received body bytes into p, waiting for them; io.EOF after END_STREAM.
// Consumed bytes are credited back to the peer in half-window steps, so a steady
// stream costs one WINDOW_UPDATE per 128 KiB, not one per frame.
func (mc *muxConn) read(s *muxStream, p []byte) (int, error) {
	mc.mu.Lock()
	for s.off == len(s.buf) && !s.ended && s.err == nil {
		mc.mu.Unlock()
		<-s.notify
		mc.mu.Lock()
	}
	if s.off == len(s.buf) {
		err := s.err
		mc.mu.Unlock()
		if err == nil {
			err = io.EOF
		}
		return 0, err
	}
	n := copy(p, s.buf[s.off:])
	s.off += n
	if s.off == len(s.buf) {
		s.buf, s.off = s.buf[:0], 0
	}
	var streamCredit, connCredit uint32
	s.unacked += int64(n)
	if !s.ended && s.unacked >= muxStreamWindow/2 {
		streamCredit = uint32(s.unacked)
		s.recvAvail += s.unacked
		s.unacked = 0
	}
	mc.unacked += int64(n)
	if mc.unacked >= muxConnWindow/2 {
		connCredit = uint32(mc.unacked)
		mc.recvAvail += mc.unacked
		mc.unacked = 0
	}
	mc.mu.Unlock()
	if streamCredit > 0 || connCredit > 0 {
		mc.wmu.Lock()
		if streamCredit > 0 {
			mc.fr.WriteWindowUpdate(s.id, streamCredit) //nolint:errcheck // a broken conn fails the next read
		}
		if connCredit > 0 {
			mc.fr.WriteWindowUpdate(0, connCredit) //nolint:errcheck
		}
		mc.bw.Flush() //nolint:errcheck
		mc.wmu.Unlock()
	}
	return n, nil
}

// muxBody is one stream's received body as an io.Reader.
type muxBody struct {
	mc *muxConn
	s  *muxStream
}

func (b muxBody) Read(p []byte) (int, error) { return b.mc.read(b.s, p) }

// onData queues a DATA frame's payload for its stream, enforcing our receive windows.
func (mc *muxConn) onData(f *http2.DataFrame) error {
	length := int64(f.Length)
	mc.mu.Lock()
	if length > mc.recvAvail {
		mc.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	mc.recvAvail -= length
	s := mc.streams[f.StreamID]
	// The connection window counts every DATA frame, even for a stream already gone.
	mc.unacked += length - int64(len(f.Data()))
	if s == nil {
		mc.unacked += int64(len(f.Data()))
		mc.mu.Unlock()
		if f.StreamID == 0 || f.StreamID > mc.highest {
			return http2.ConnectionError(http2.ErrCodeProtocol) // DATA on an idle stream
		}
		return mc.creditConn()
	}
	if s.ended {
		mc.unacked += int64(len(f.Data())) // nobody reads it: credit the connection window back
		mc.mu.Unlock()
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeStreamClosed}
	}
	if length > s.recvAvail {
		mc.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	s.recvAvail -= length
	s.buf = append(s.buf, f.Data()...)
	if f.StreamEnded() {
		s.ended = true
	}
	s.wake()
	mc.mu.Unlock()
	return nil
}

// creditConn returns connection window for data nobody will consume.
func (mc *muxConn) creditConn() error {
	mc.mu.Lock()
	var credit uint32
	if mc.unacked >= muxConnWindow/2 {
		credit = uint32(mc.unacked)
		mc.recvAvail += mc.unacked
		mc.unacked = 0
	}
	mc.mu.Unlock()
	if credit == 0 {
		return nil
	}
	mc.wmu.Lock()
	defer mc.wmu.Unlock()
	if err := mc.fr.WriteWindowUpdate(0, credit); err != nil {
		return err
	}
	return mc.bw.Flush()
}

// nextFrame reads frames until one the caller handles itself: a header block
// (HEADERS and its CONTINUATIONs, decoded) or GOAWAY; exactly one of the two is
// non-nil. Settings, pings, window updates, resets and DATA are handled here for both
// sides; a stream-level error resets that stream and reading goes on. Any other error
// ends the connection. The header block is reused by the next call: whoever keeps its
// fields copies them.
func (mc *muxConn) nextFrame() (*muxHeaders, *http2.GoAwayFrame, error) {
	for {
		f, err := mc.fr.ReadFrame()
		if err == nil {
			mc.lastRead.Store(mc.now().UnixNano()) // any frame, PING answers included
			var handled bool
			if handled, err = mc.onControl(f); !handled {
				switch f := f.(type) {
				case *http2.DataFrame:
					err = mc.onData(f)
				case *http2.HeadersFrame:
					var h *muxHeaders
					if h, err = mc.readHeaderBlock(f); err == nil {
						return h, nil, nil
					}
				case *http2.GoAwayFrame:
					return nil, f, nil
				}
			}
		}
		if err == nil {
			continue
		}
		// Declared here, not above: errors.As makes it escape, and a successful read
		// should not allocate.
		var se http2.StreamError
		if !errors.As(err, &se) {
			return nil, nil, err
		}
		mc.resetStream(se.StreamID, se.Code)
	}
}

// muxHeaders is one decoded header block. x/net's MetaHeadersFrame does the same
// decoding, but it allocates the frame and grows a new field slice for every block,
// which was the largest allocation per request on this path; the reader goroutine
// reuses this one (muxConn.hblock).
type muxHeaders struct {
	streamID  uint32
	endStream bool
	truncated bool // over maxHeadBytes: fields is incomplete
	fields    []hpack.HeaderField
	nPseudo   int // fields[:nPseudo] are the pseudo-header fields
	size      int
	invalid   error
}

func (h *muxHeaders) regular() []hpack.HeaderField { return h.fields[h.nPseudo:] }

func (h *muxHeaders) pseudo(name string) string {
	for _, f := range h.fields[:h.nPseudo] {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// readHeaderBlock decodes f's header block and the CONTINUATION frames that finish
// it (the Framer already refuses any other frame in between) with the checks of RFC
// 9113 §8.2-8.3 that x/net's MetaHeadersFrame makes: valid names and values, pseudo
// fields first, known and not repeated, not request and response ones mixed. A bad
// field fails the stream, after the whole block is decoded so that the connection's
// HPACK state stays in step; a bad encoding, or CONTINUATION frames past the size
// limit or after a bad field, fail the connection.
func (mc *muxConn) readHeaderBlock(f *http2.HeadersFrame) (*muxHeaders, error) {
	h := &mc.hblock
	clear(h.fields) // let the last block's strings go
	*h = muxHeaders{streamID: f.StreamID, endStream: f.StreamEnded(), fields: h.fields[:0]}
	mc.hdec.SetEmitEnabled(true)
	frag, end := f.HeaderBlockFragment(), f.HeadersEnded()
	for {
		// A peer must not make us decode without end what we will discard (the HTTP/2
		// CONTINUATION flood, CVE-2023-45288): like x/net, end the connection at a
		// fragment over twice what is left of the header-list budget, which once the
		// block is truncated is any fragment, and at any CONTINUATION after an invalid
		// field, whose size is no longer counted.
		left := 0
		if !h.truncated {
			left = maxHeadBytes - h.size
		}
		if len(frag) > 2*left || h.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		// The fragment is only valid until the next ReadFrame: decode it now.
		if _, err := mc.hdec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if end {
			break
		}
		next, err := mc.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		c, ok := next.(*http2.ContinuationFrame)
		if !ok {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		frag, end = c.HeaderBlockFragment(), c.HeadersEnded()
	}
	if err := mc.hdec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if h.invalid == nil {
		h.invalid = h.checkPseudos()
	}
	if h.invalid != nil {
		return nil, http2.StreamError{StreamID: h.streamID, Code: http2.ErrCodeProtocol, Cause: h.invalid}
	}
	return h, nil
}

// emitField is the HPACK decoder's callback: it adds one field to the block being
// decoded, within maxHeadBytes (SETTINGS_MAX_HEADER_LIST_SIZE, counted as RFC 9113
// §6.5.2 does).
func (mc *muxConn) emitField(f hpack.HeaderField) {
	h := &mc.hblock
	if h.size += int(f.Size()); h.size > maxHeadBytes {
		h.truncated = true
		mc.hdec.SetEmitEnabled(false)
		return
	}
	if h.invalid != nil {
		mc.hdec.SetEmitEnabled(false)
		return
	}
	switch {
	case !httpguts.ValidHeaderFieldValue(f.Value):
		h.invalid = fmt.Errorf("header field %q has an invalid value", f.Name)
	case f.IsPseudo():
		if h.nPseudo < len(h.fields) {
			h.invalid = fmt.Errorf("pseudo-header field %q after a regular field", f.Name)
		}
		h.nPseudo++
	case !validWireName(f.Name):
		h.invalid = fmt.Errorf("invalid header field name %q", f.Name)
	}
	h.fields = append(h.fields, f)
}

// checkPseudos refuses unknown and repeated pseudo-header fields and a block that
// mixes request and response ones.
func (h *muxHeaders) checkPseudos() error {
	var req, resp bool
	ps := h.fields[:h.nPseudo]
	for i, f := range ps {
		switch f.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			req = true
		case ":status":
			resp = true
		default:
			return fmt.Errorf("unknown pseudo-header field %q", f.Name)
		}
		for _, g := range ps[:i] {
			if g.Name == f.Name {
				return fmt.Errorf("pseudo-header field %q repeated", f.Name)
			}
		}
	}
	if req && resp {
		return errors.New("request and response pseudo-header fields mixed")
	}
	return nil
}

// validWireName reports whether name is a valid HTTP/2 field name: a token, in lower
// case.
func validWireName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !httpguts.IsTokenRune(rune(c)) || ('A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// resetStream fails stream id locally and tells the peer.
func (mc *muxConn) resetStream(id uint32, code http2.ErrCode) {
	mc.mu.Lock()
	if s := mc.streams[id]; s != nil && s.err == nil {
		s.err = fmt.Errorf("HTTP/2 stream %d: %v", id, code)
		s.wake()
	}
	mc.mu.Unlock()
	mc.writeRST(id, code)
}

// onControl handles the frames both sides treat alike; it returns handled=false for
// HEADERS, DATA and GOAWAY, which the caller handles.
func (mc *muxConn) onControl(f http2.Frame) (handled bool, err error) {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return true, nil
		}
		tableSize := int64(-1)
		err := f.ForeachSetting(func(s http2.Setting) error {
			if err := s.Valid(); err != nil {
				return err
			}
			mc.mu.Lock()
			defer mc.mu.Unlock()
			switch s.ID {
			case http2.SettingInitialWindowSize:
				delta := int64(s.Val) - mc.peerWindow
				mc.peerWindow = int64(s.Val)
				for _, st := range mc.streams {
					st.sendWindow += delta
				}
				mc.cond.Broadcast()
			case http2.SettingMaxFrameSize:
				mc.peerFrame = int(s.Val)
			case http2.SettingMaxConcurrentStreams:
				mc.peerMax = s.Val
				mc.cond.Broadcast()
			case http2.SettingHeaderTableSize:
				tableSize = int64(s.Val) // applied below: wmu is taken before mu, never after
			}
			return nil
		})
		if err != nil {
			return true, err
		}
		mc.wmu.Lock()
		defer mc.wmu.Unlock()
		if tableSize >= 0 {
			mc.henc.SetMaxDynamicTableSizeLimit(uint32(tableSize))
		}
		if err := mc.fr.WriteSettingsAck(); err != nil {
			return true, err
		}
		return true, mc.bw.Flush()
	case *http2.PingFrame:
		if f.IsAck() {
			return true, nil
		}
		mc.wmu.Lock()
		defer mc.wmu.Unlock()
		if err := mc.fr.WritePing(true, f.Data); err != nil {
			return true, err
		}
		return true, mc.bw.Flush()
	case *http2.WindowUpdateFrame:
		mc.mu.Lock()
		defer mc.mu.Unlock()
		inc := int64(f.Increment)
		if f.StreamID == 0 {
			if mc.sendWindow+inc > 1<<31-1 {
				return true, http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			mc.sendWindow += inc
		} else if s := mc.streams[f.StreamID]; s != nil {
			if s.sendWindow+inc > 1<<31-1 {
				s.err = fmt.Errorf("%w: flow-control window overflow", errMuxReset)
				s.wake()
			}
			s.sendWindow += inc
		}
		mc.cond.Broadcast()
		return true, nil
	case *http2.RSTStreamFrame:
		mc.mu.Lock()
		if s := mc.streams[f.StreamID]; s != nil {
			if f.ErrCode == http2.ErrCodeRefusedStream {
				s.err = errMuxRefused
			} else {
				s.err = fmt.Errorf("%w: %v", errMuxReset, f.ErrCode)
			}
			s.wake()
			mc.cond.Broadcast()
		}
		mc.mu.Unlock()
		return true, nil
	case *http2.PriorityFrame, *http2.UnknownFrame:
		return true, nil
	case *http2.PushPromiseFrame:
		return true, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return false, nil
}

// lowerName returns an HTTP/1.1 header name as HTTP/2 wants it (RFC 9113 §8.2.1). The
// common names come from a table and other recent ones from recent (if not nil), so
// most headers cost no allocation.
func lowerName(b []byte, recent *recentValues) string {
	for _, n := range commonNames {
		if equalFoldASCII(b, n) {
			return n
		}
	}
	var small [64]byte
	out := small[:0]
	if len(b) > len(small) {
		out = make([]byte, 0, len(b))
	}
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		out = append(out, c)
	}
	if recent != nil {
		return recent.get(out)
	}
	return string(out)
}

// recentValues remembers the last few field values converted to strings: an app or a
// client sends the same user-agent, content-type, content-length and date over and
// over, and HPACK wants strings. Not safe for concurrent use; each exchange has its
// own.
type recentValues struct {
	v [8]string
	n int
}

// get returns b as a string, without allocating when it is a recent value.
func (r *recentValues) get(b []byte) string {
	for _, v := range r.v {
		if v == string(b) {
			return v
		}
	}
	v := string(b)
	r.v[r.n%len(r.v)] = v
	r.n++
	return v
}

// value returns the value of field name as a string, through the cache except for the
// fields that carry credentials: those are not kept beyond their request.
func (r *recentValues) value(name string, b []byte) string {
	switch name {
	case "authorization", "proxy-authorization", "cookie", "set-cookie":
		return string(b)
	}
	return r.get(b)
}

// commonNames are frequent header names, lower case (read-only).
var commonNames = [...]string{
	"accept", "accept-encoding", "accept-language", "authorization", "cache-control",
	"content-encoding", "content-length", "content-type", "cookie", "date", "etag",
	"last-modified", "location", "server", "set-cookie", "user-agent", "vary",
	"x-forwarded-for", "x-forwarded-proto", "x-request-id", "traceparent", "tracestate",
	"x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
	"grpc-status", "grpc-message", "te", "trailer",
}

// isH2Hop reports the connection-specific fields an HTTP/2 message must not carry
// (RFC 9113 §8.2.2), and Host, which becomes :authority.
func isH2Hop(name []byte) bool {
	for _, h := range [...]string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "host"} {
		if equalFoldASCII(name, h) {
			return true
		}
	}
	return false
}

// sendBody streams an HTTP/1.1 body from br as DATA frames on s: exactly n bytes, or a
// chunked body (decoded: HTTP/2 has no chunked coding) whose trailers end the stream
// as a HEADERS frame. It always ends the stream and returns the payload bytes sent.
func (mc *muxConn) sendBody(s *muxStream, br *bufio.Reader, n int64, chunked bool) (int64, error) {
	if !chunked {
		return mc.copyData(s, br, n, true)
	}
	var total int64
	var line []byte
	for {
		var err error
		if line, err = readChunkLine(br, line[:0]); err != nil {
			return total, err
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return total, err
		}
		if size == 0 {
			trailers, err := readTrailers(br)
			if err != nil {
				return total, err
			}
			if len(trailers) == 0 {
				return total, mc.writeData(s, nil, true, true)
			}
			return total, mc.writeHeaders(s.id, trailers, true, true)
		}
		k, err := mc.copyData(s, br, size, false)
		total += k
		if err != nil {
			return total, err
		}
		if line, err = readChunkLine(br, line[:0]); err != nil {
			return total, err
		}
		if !isEmptyLine(line) {
			return total, errBadChunk
		}
	}
}

// copyData sends exactly n bytes from br as DATA frames, straight out of br's buffer,
// flushing whenever br would block so that a streamed body is never held back.
func (mc *muxConn) copyData(s *muxStream, br *bufio.Reader, n int64, end bool) (int64, error) {
	var done int64
	for done < n {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return done, err
			}
		}
		k := min(int64(br.Buffered()), n-done)
		b, _ := br.Peek(int(k))
		last := done+k == n
		if err := mc.writeData(s, b, end && last, last || br.Buffered() == int(k)); err != nil {
			return done, err
		}
		br.Discard(int(k)) //nolint:errcheck // k bytes are buffered
		done += k
	}
	if n == 0 && end {
		return 0, mc.writeData(s, nil, true, true)
	}
	return done, nil
}

// copyUntilEOFData sends a close-delimited HTTP/1.1 body and ends the stream.
func (mc *muxConn) copyUntilEOFData(s *muxStream, br *bufio.Reader) (int64, error) {
	var done int64
	for {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				if errors.Is(err, io.EOF) {
					return done, mc.writeData(s, nil, true, true)
				}
				return done, err
			}
		}
		k := br.Buffered()
		b, _ := br.Peek(k)
		if err := mc.writeData(s, b, false, true); err != nil {
			return done, err
		}
		br.Discard(k) //nolint:errcheck
		done += int64(k)
	}
}

// readTrailers parses an HTTP/1.1 trailer section (after the last chunk) into HTTP/2
// fields, dropping those HTTP/2 forbids.
func readTrailers(br *bufio.Reader) ([]hpack.HeaderField, error) {
	var out []hpack.HeaderField
	var line []byte
	for {
		var err error
		if line, err = readChunkLine(br, line[:0]); err != nil {
			return nil, err
		}
		if isEmptyLine(line) {
			return out, nil
		}
		if len(out) == maxHeaders {
			return nil, errHeadTooLarge
		}
		l := bytes.TrimRight(line, "\r\n")
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 || !isToken(l[:colon]) {
			return nil, fmt.Errorf("%w: bad trailer line", errBadChunk)
		}
		if isH2Hop(l[:colon]) {
			continue
		}
		out = append(out, hpack.HeaderField{Name: lowerName(l[:colon], nil), Value: string(bytes.TrimSpace(l[colon+1:]))})
	}
}

// errBodyLength: a stream's DATA disagreed with its content-length.
var errBodyLength = errors.New("HTTP/2 body length differs from content-length")

// writeH1Body copies a stream's received body to an HTTP/1.1 writer, as is or in
// chunked coding; the stream's trailers, if any, end a chunked body. It flushes every
// piece, so streamed responses are not held back. A body framed by Content-Length
// (length >= 0, not chunked) must be exactly that long: not one byte more is written,
// since on a keep-alive HTTP/1.1 connection extra bytes would be read as the start of
// another message (request smuggling toward the app, response splitting toward it).
func (mc *muxConn) writeH1Body(bw *bufio.Writer, s *muxStream, chunked bool, length int64) (int64, error) {
	var total int64
	for {
		// The stream's bytes are copied straight into bw's free space
		// (AvailableBuffer; bufio's Write of it copies in place), not through a buffer
		// of our own; a chunk also needs room for its size line and CRLF around it.
		if bw.Available() < chunkOverhead+64 && bw.Buffered() > 0 {
			if err := bw.Flush(); err != nil {
				return total, err
			}
		}
		room := bw.AvailableBuffer()
		room = room[:cap(room)]
		if len(room) <= chunkOverhead {
			return total, errors.New("HTTP/1.1 writer buffer too small") // ours hold bufSize
		}
		data := room
		if chunked {
			data = room[:len(room)-chunkOverhead]
		}
		n, err := mc.read(s, data)
		if n > 0 {
			if !chunked && length >= 0 && total+int64(n) > length {
				return total, errBodyLength
			}
			total += int64(n)
			if chunked {
				// The size line goes before the data: move the data up behind it.
				var size [18]byte
				line := append(strconv.AppendInt(size[:0], int64(n), 16), '\r', '\n')
				copy(room[len(line):], room[:n])
				copy(room, line)
				n += len(line)
				n += copy(room[n:], "\r\n")
			}
			bw.Write(room[:n]) //nolint:errcheck // bufio keeps the first error for Flush
			if !mc.pending(s) {
				if err := bw.Flush(); err != nil {
					return total, err
				}
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return total, err
		}
	}
	if !chunked && length >= 0 && total != length {
		return total, errBodyLength
	}
	if chunked {
		bw.WriteString("0\r\n") //nolint:errcheck
		mc.mu.Lock()
		trailers := s.trailers
		mc.mu.Unlock()
		for _, f := range trailers {
			bw.WriteString(f.Name)  //nolint:errcheck
			bw.WriteString(": ")    //nolint:errcheck
			bw.WriteString(f.Value) //nolint:errcheck
			bw.WriteString("\r\n")  //nolint:errcheck
		}
		bw.WriteString("\r\n") //nolint:errcheck
	}
	return total, bw.Flush()
}

// chunkOverhead is the most a chunk adds to its data: a size line of up to 16 hex
// digits, and CRLF after each.
const chunkOverhead = 16 + 4

// pending reports whether s has received bytes not yet read.
func (mc *muxConn) pending(s *muxStream) bool {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return s.off < len(s.buf)
}
