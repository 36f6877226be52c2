package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// serveMux serves one inbound connection that negotiated alpnMux: a peer sidecar's
// HTTP/1.1 requests as HTTP/2 streams. The calling goroutine reads frames; each stream
// runs in its own goroutine (admission, then the app over pooled HTTP/1.1) and writes
// its response under the connection's write lock.
func (p *Proxy) serveMux(ctx context.Context, cs *connState, c net.Conn, br *bufio.Reader) {
	c.SetReadDeadline(p.now().Add(p.cfg.ProtocolDetectionTimeout)) //nolint:errcheck // a dead conn fails the read
	preface, err := br.Peek(len(http2.ClientPreface))
	if err != nil || string(preface) != http2.ClientPreface {
		p.log.Debug("HTTP/2 connection without the client preface", "peer", cs.src.String())
		return
	}
	br.Discard(len(preface))                  //nolint:errcheck // peeked
	c.SetReadDeadline(time.Time{})            //nolint:errcheck
	bw := bufio.NewWriterSize(c, muxWriteBuf) // not pooled: stream goroutines may outlive a failed read
	mc := newMuxConn(c, br, bw, true)
	mc.now = p.now
	var streams sync.WaitGroup
	defer streams.Wait()
	mc.work, mc.done = make(chan *muxStream), make(chan struct{})
	defer close(mc.done) // idle workers leave; runs before the Wait above
	if err := mc.writeSettings(); err != nil {
		return
	}
	mc.idleLocked(p, cs) // no stream yet: the idle timeout runs
	err = p.muxFrames(ctx, cs, mc, &streams)
	code := http2.ErrCodeNo
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		code = http2.ErrCode(ce)
		p.log.Debug("HTTP/2 connection error", "peer", cs.src.String(), "err", err)
	}
	mc.mu.Lock()
	last := mc.highest
	mc.mu.Unlock()
	mc.wmu.Lock()
	if mc.fr.WriteGoAway(last, code, nil) == nil {
		mc.bw.Flush() //nolint:errcheck // closing anyway
	}
	mc.wmu.Unlock()
	if code != http2.ErrCodeNo || !errors.Is(err, errMuxDrained) {
		mc.fail(errMuxClosed) // wakes streams blocked on the peer; they end quickly
	}
}

// errMuxDrained ends a connection whose streams all finished after GOAWAY or idleness.
var errMuxDrained = errors.New("HTTP/2 connection drained")

// idleLocked arms the idle timeout when no stream is active (or, draining, ends the
// connection now); mu need not be held by the caller at start-up.
func (mc *muxConn) idleLocked(p *Proxy, cs *connState) {
	if mc.active > 0 {
		return
	}
	cs.idle.Store(true)
	deadline := p.now().Add(p.cfg.IdleTimeout)
	if mc.goAway || p.draining.Load() {
		deadline = time.Unix(1, 0)
	}
	mc.c.SetReadDeadline(deadline) //nolint:errcheck // a dead conn fails the read
}

func (p *Proxy) muxFrames(ctx context.Context, cs *connState, mc *muxConn, streams *sync.WaitGroup) error {
	for {
		h, goAway, err := mc.nextFrame()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			mc.mu.Lock()
			idle := mc.active == 0
			mc.mu.Unlock()
			if idle {
				return errMuxDrained
			}
			continue // a stream started as the deadline fired
		}
		if err != nil {
			return err
		}
		if p.draining.Load() {
			mc.mu.Lock()
			mc.goAway = true
			mc.mu.Unlock()
		}
		if h != nil {
			if err := p.onRequestHeaders(ctx, cs, mc, h, streams); err != nil {
				return err
			}
		} else if goAway != nil {
			mc.mu.Lock()
			mc.goAway = true
			mc.idleLocked(p, cs)
			mc.mu.Unlock()
		}
	}
}

func (p *Proxy) onRequestHeaders(ctx context.Context, cs *connState, mc *muxConn, h *muxHeaders, streams *sync.WaitGroup) error {
	id := h.streamID
	mc.mu.Lock()
	if s := mc.streams[id]; s != nil {
		// Request trailers: they must end the stream.
		if !h.endStream || s.ended {
			mc.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		s.trailers, s.ended = append([]hpack.HeaderField(nil), h.regular()...), true
		if h.truncated {
			s.err = fmt.Errorf("HTTP/2 stream %d: request trailers over %d bytes", id, maxHeadBytes)
		}
		s.wake()
		mc.mu.Unlock()
		return nil
	}
	if id%2 == 0 || id <= mc.highest {
		mc.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	mc.highest = id
	// Streams count until their handler returns, not until the peer resets them, so a
	// peer cannot run more than muxMaxStreams requests at once (the HTTP/2 rapid-reset
	// attack).
	if mc.goAway || mc.active >= muxMaxStreams {
		mc.mu.Unlock()
		mc.writeRST(id, http2.ErrCodeRefusedStream)
		return nil
	}
	if h.truncated {
		mc.mu.Unlock()
		mc.writeRST(id, http2.ErrCodeProtocol) // over MAX_HEADER_LIST_SIZE
		return nil
	}
	s := mc.newStreamLocked(id)
	s.hdrs, s.ended = append(s.hdrs[:0], h.fields...), h.endStream
	s.reqBody = !s.ended
	mc.streams[id] = s
	mc.active++
	cs.idle.Store(false)
	mc.c.SetReadDeadline(time.Time{}) //nolint:errcheck
	mc.mu.Unlock()
	// An idle worker of this connection takes the stream; otherwise a new one starts.
	// Workers outlive their stream so that a request does not pay for a goroutine
	// and for growing its stack again.
	select {
	case mc.work <- s:
	default:
		streams.Go(func() { p.muxWorker(ctx, cs, mc, s) })
	}
	return nil
}

// Idle workers of a connection: up to muxIdleWorkers wait for streams for as long as
// the connection lasts; more, up to muxMaxIdleWorkers, wait muxWorkerLinger before they
// exit. A client sidecar's requests arrive in bursts as wide as its concurrency (32 in
// bench/proxy.sh); when only 4 workers stayed, every burst started most of its
// workers anew: at maximum throughput 6 requests in 10 started a goroutine.
const (
	muxIdleWorkers    = 4
	muxMaxIdleWorkers = 64
	muxWorkerLinger   = 2 * time.Second
)

// muxWorker serves s, then further streams of mc, until the connection ends or the
// worker is not needed any more (waitStream).
func (p *Proxy) muxWorker(ctx context.Context, cs *connState, mc *muxConn, s *muxStream) {
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		id := s.id
		code := p.muxServeStream(ctx, cs, mc, s)
		mc.mu.Lock()
		delete(mc.streams, id)
		mc.active--
		// A stream answered before its request body ended is reset with NO_ERROR so
		// that the peer stops sending (RFC 9113 §8.1).
		reset := code != http2.ErrCodeNo || !s.ended
		mc.freeStreamLocked(s)
		mc.idleLocked(p, cs)
		stop := mc.idleWorkers >= muxMaxIdleWorkers
		if !stop {
			mc.idleWorkers++
		}
		mc.mu.Unlock()
		if reset {
			mc.writeRST(id, code)
		}
		if stop {
			return
		}
		if s = mc.waitStream(&linger, muxWorkerLinger); s == nil {
			return
		}
	}
}

// waitStream is an idle worker's wait (counted in mc.idleWorkers by its caller) for the
// reader to hand it a stream. It returns nil when the worker should exit: the connection
// ended, or the worker waited linger while more than muxIdleWorkers were idle. *t is the
// worker's timer, made on first use.
func (mc *muxConn) waitStream(t **time.Timer, linger time.Duration) *muxStream {
	if *t == nil {
		*t = time.NewTimer(linger)
	} else {
		(*t).Reset(linger)
	}
	expired := (*t).C
	for {
		select {
		case s := <-mc.work:
			(*t).Stop()
			mc.mu.Lock()
			mc.idleWorkers--
			mc.mu.Unlock()
			return s
		case <-mc.done:
			mc.mu.Lock()
			mc.idleWorkers--
			mc.mu.Unlock()
			return nil
		case <-expired:
			mc.mu.Lock()
			if mc.idleWorkers > muxIdleWorkers {
				mc.idleWorkers--
				mc.mu.Unlock()
				return nil
			}
			mc.mu.Unlock()
			expired = nil // one of the workers kept for good: no deadline any more
		}
	}
}

// muxExchange is one server stream's reusable HTTP/1.1 state.
type muxExchange struct {
	req, resp head
	fields    []hpack.HeaderField
	rec       Record       // the access record, as h1Exchange keeps it
	ar        Request      // what authorization sees
	names     recentValues // response field names not in commonNames
	values    recentValues // response field values
}

// muxServeStream forwards one request stream to the app. It returns the code to reset
// the stream with, http2.ErrCodeNo when the exchange completed.
func (p *Proxy) muxServeStream(ctx context.Context, cs *connState, mc *muxConn, s *muxStream) http2.ErrCode {
	cs.requests.Add(1)
	st := p.state.Load()
	mx, _ := p.muxExchanges.Get().(*muxExchange)
	if mx == nil {
		mx = new(muxExchange)
	}
	defer p.muxExchanges.Put(mx)
	req := &mx.req
	req.reset()
	if err := buildMuxHead(req, s.hdrs, s.reqBody); err != nil {
		p.log.Debug("malformed HTTP/2 request", "peer", cs.src.String(), "err", err)
		return http2.ErrCodeProtocol
	}
	rec := &mx.rec
	*rec = cs.record("h2", p.now())
	rec.Method = internMethod(req.method())
	hostb, _ := req.lookup("host")
	path, host := mx.values.get(req.target()), mx.values.get(hostb)
	if p.cfg.Observer != nil {
		rec.Path, rec.Authority, rec.Headers = path, host, req
	}
	defer p.observeTimed(rec)

	ar := &mx.ar
	*ar = cs.request()
	ar.HTTP, ar.Method, ar.Path, ar.Host, ar.Headers = true, rec.Method, path, host, req
	status := p.admit(ctx, cs, st, ar, ar.Path, rec)
	ar.Headers = nil
	if status != 0 {
		rec.Status = status
		if status == 401 {
			rec.Flags = "UAEX"
		} else {
			rec.Denied = true
		}
		return mc.simpleResponse(s, status, denyBody(status))
	}
	app := cs.app
	if cs.hostRouted {
		var ok bool
		if app, rec.Port, ok = p.appForHost(cs, st, ar.Host); !ok {
			rec.Status = 403
			return mc.simpleResponse(s, 403, bodyDenied)
		}
	}
	up, err := app.pool.get(ctx)
	if err != nil {
		p.log.Warn("upstream connect failed", "direction", "inbound", "err", err)
		rec.Status, rec.Flags = 503, "UF"
		return mc.simpleResponse(s, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure")
	}
	if a, ok := up.c.RemoteAddr().(*net.TCPAddr); ok {
		rec.Upstream = a.AddrPort()
	}
	code, up, reusable := p.muxToApp(ctx, mc, s, mx, up, cs.xfccHeader, rec)
	if reusable {
		up.pool.put(up)
	} else {
		up.discard()
	}
	return code
}

// muxToApp sends the request to the app over HTTP/1.1 and its response back on the
// stream. It returns the app connection it ended on (a retry replaces up) and whether
// that connection is clean for another request.
func (p *Proxy) muxToApp(ctx context.Context, mc *muxConn, s *muxStream, mx *muxExchange, up *upConn, xfcc string, rec *Record) (http2.ErrCode, *upConn, bool) {
	hasBody := mx.req.contentLength > 0 || mx.req.chunked
	for attempt := 0; ; attempt++ {
		err := p.muxRequestToApp(mc, s, mx, up, xfcc, rec, hasBody)
		if err == nil {
			break
		}
		// A pooled connection the app closed while idle (apps time keep-alive
		// connections out): retry once on a fresh one when nothing of the request body
		// was consumed, as the HTTP/1.1 path does.
		if attempt == 0 && up.reused && !hasBody && !mc.isErr(s) {
			up.discard()
			var fresh *upConn
			if fresh, err = up.pool.fresh(ctx); err == nil {
				up = fresh
				continue
			}
		}
		p.log.Debug("upstream request failed", "direction", "inbound", "err", err)
		rec.Status, rec.Flags = 503, "URX"
		if mc.isErr(s) {
			return http2.ErrCodeCancel, up, false
		}
		return mc.simpleResponse(s, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination"), up, false
	}
	code, reusable := p.muxResponseFromApp(mc, s, mx, up, rec)
	return code, up, reusable
}

// muxRequestToApp writes the stream's request to the app and reads the response head.
func (p *Proxy) muxRequestToApp(mc *muxConn, s *muxStream, mx *muxExchange, up *upConn, xfcc string, rec *Record, hasBody bool) error {
	req, resp := &mx.req, &mx.resp
	extra := xfcc
	if req.chunked {
		extra += "transfer-encoding: chunked\r\n"
	}
	writeHead(up.bw, req, skipInbound, extra)
	var err error
	if hasBody {
		rec.BytesReceived, err = mc.writeH1Body(up.bw, s, req.chunked, req.contentLength)
	} else {
		err = flushBeforeRead(up.bw, up.c) // written by readHead's read
	}
	if err != nil {
		return err
	}
	if err = readHead(up.br, resp, false); err != nil {
		return err
	}
	for resp.status < 200 && resp.status != 101 {
		if err = readHead(up.br, resp, false); err != nil { // interim: Expect was not forwarded
			return err
		}
	}
	if resp.status == 101 {
		return errors.New("the app switched protocols on a request that did not ask to")
	}
	return nil
}

// muxResponseFromApp sends the app's response (its head already read) back on the
// stream. reusable reports whether the app connection is clean for another request.
func (p *Proxy) muxResponseFromApp(mc *muxConn, s *muxStream, mx *muxExchange, up *upConn, rec *Record) (http2.ErrCode, bool) {
	req, resp := &mx.req, &mx.resp
	var err error
	rec.Status = resp.status
	noBody := !resp.responseHasBody(req.method()) || resp.contentLength == 0
	fields := append(mx.fields[:0], hpack.HeaderField{Name: ":status", Value: statusString(resp.status)})
	for _, f := range resp.hdrs {
		name := resp.b(f.name)
		if isH2Hop(name) || (resp.contentLength < 0 && equalFoldASCII(name, "content-length")) {
			continue
		}
		n := lowerName(name, &mx.names)
		fields = append(fields, hpack.HeaderField{Name: n, Value: mx.values.value(n, resp.b(f.value))})
	}
	err = mc.writeHeaders(s.id, fields, noBody, noBody)
	clear(fields) // let the strings go; keep the slice
	mx.fields = fields[:0]
	if err != nil {
		return http2.ErrCodeCancel, false
	}
	reusable := !resp.close
	switch {
	case noBody:
	case resp.chunked:
		rec.BytesSent, err = mc.sendBody(s, up.br, -1, true)
	case resp.contentLength > 0:
		rec.BytesSent, err = mc.copyData(s, up.br, resp.contentLength, true)
	default:
		rec.BytesSent, err = mc.copyUntilEOFData(s, up.br)
		reusable = false
	}
	if err != nil {
		return http2.ErrCodeInternal, false
	}
	return http2.ErrCodeNo, reusable
}

func (mc *muxConn) isErr(s *muxStream) bool {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return s.err != nil || mc.err != nil
}

// simpleResponse answers a stream with a small response the proxy generates.
func (mc *muxConn) simpleResponse(s *muxStream, status int, body string) http2.ErrCode {
	fields := []hpack.HeaderField{
		{Name: ":status", Value: strconv.Itoa(status)},
		{Name: "content-type", Value: "text/plain"},
		{Name: "content-length", Value: strconv.Itoa(len(body))},
	}
	if err := mc.writeHeaders(s.id, fields, body == "", body == ""); err != nil {
		return http2.ErrCodeCancel
	}
	if body != "" && mc.writeData(s, []byte(body), true, true) != nil {
		return http2.ErrCodeCancel
	}
	return http2.ErrCodeNo
}

// buildMuxHead turns an HTTP/2 request head into an HTTP/1.1 one in h, refusing what
// would be malformed in HTTP/2 (RFC 9113 §8.2-8.3) or could not be expressed safely on
// an HTTP/1.1 request line. hasBody: the HEADERS frame did not end the stream.
func buildMuxHead(h *head, fields []hpack.HeaderField, hasBody bool) error {
	var method, path, authority, scheme string
	for _, f := range fields {
		if !f.IsPseudo() {
			continue
		}
		switch f.Name {
		case ":method":
			method = f.Value
		case ":path":
			path = f.Value
		case ":authority":
			authority = f.Value
		case ":scheme":
			scheme = f.Value
		default:
			return fmt.Errorf("pseudo-header %s not allowed in a request", f.Name)
		}
	}
	switch {
	case method == "" || !isToken([]byte(method)):
		return fmt.Errorf("bad or missing :method %q", method)
	case method == "CONNECT":
		return errors.New("CONNECT is not carried between sidecars")
	case scheme == "":
		return errors.New("missing :scheme")
	case path == "" || (path[0] != '/' && !(path == "*" && method == "OPTIONS")):
		return fmt.Errorf("bad :path %q", path)
	case !visibleASCII(path) || !visibleASCII(authority):
		return errors.New(":path or :authority with spaces or control characters")
	}
	h.buf = append(h.buf, method...)
	h.buf = append(h.buf, ' ')
	h.buf = append(h.buf, path...)
	h.buf = append(h.buf, " HTTP/1.1"...)
	ms := int32(len(method))
	h.first = [3]span{{0, ms}, {ms + 1, ms + 1 + int32(len(path))}, {ms + 2 + int32(len(path)), int32(len(h.buf))}}
	add := func(name, value string) {
		s := int32(len(h.buf))
		h.buf = append(h.buf, name...)
		h.buf = append(h.buf, ": "...)
		h.buf = append(h.buf, value...)
		n := s + int32(len(name))
		h.hdrs = append(h.hdrs, hfield{name: span{s, n}, value: span{n + 2, int32(len(h.buf))}})
	}
	if authority != "" {
		add("host", authority)
	}
	for _, f := range fields {
		if f.IsPseudo() {
			continue
		}
		name := []byte(f.Name)
		// The framer already refuses these (RFC 9113 §8.2.1); checked again because
		// they become HTTP/1.1 header lines.
		if !isToken(name) || bytes.ContainsFunc(name, func(r rune) bool { return 'A' <= r && r <= 'Z' }) || !httpguts.ValidHeaderFieldValue(f.Value) {
			return fmt.Errorf("bad header field %q", f.Name)
		}
		switch {
		case equalFoldASCII(name, "te"):
			if f.Value != "trailers" {
				return errors.New("te other than trailers")
			}
			continue
		case equalFoldASCII(name, "host"):
			if authority == "" {
				add("host", f.Value)
			}
			continue
		case isH2Hop(name):
			return fmt.Errorf("connection-specific header %s", f.Name)
		case equalFoldASCII(name, "content-length"):
			n, err := parseContentLength([]byte(f.Value))
			if err != nil || (h.contentLength >= 0 && n != h.contentLength) {
				return fmt.Errorf("bad content-length %q", f.Value)
			}
			h.contentLength = n
		}
		if len(h.hdrs) == maxHeaders {
			return errHeadTooLarge
		}
		add(f.Name, f.Value)
	}
	if hasBody && h.contentLength < 0 {
		h.chunked = true
	}
	if !hasBody && h.contentLength > 0 {
		return fmt.Errorf("content-length %d on a request without a body", h.contentLength)
	}
	return nil
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// statusString avoids allocating for the common status codes.
func statusString(code int) string {
	switch code {
	case 200:
		return "200"
	case 204:
		return "204"
	case 304:
		return "304"
	case 404:
		return "404"
	}
	return strconv.Itoa(code)
}
