package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	networking "istio.io/api/networking/v1alpha3"
)

// errNoMux: the endpoint did not negotiate alpnMux (not a meshguard sidecar); the
// request goes over pooled HTTP/1.1 instead.
var errNoMux = errors.New("endpoint does not multiplex HTTP/1.1 over HTTP/2")

// noMuxRetry is how long an endpoint that refused alpnMux is served over HTTP/1.1
// before the multiplexed path is offered again (it may have been upgraded).
const noMuxRetry = 5 * time.Minute

// muxPool keeps the multiplexed connections to one endpoint: new streams go to the
// first connection with a free stream slot, and only one dial is in flight at a time,
// so a burst of requests on a cold pool opens one connection, not one each.
type muxPool struct {
	p    *Proxy
	rt   *route
	ep   *endpoint
	mu   sync.Mutex
	cs   []*muxConn
	dial chan struct{} // closed when the dial in progress ends; nil when none
	// noMux is set when the endpoint negotiated another protocol.
	noMux time.Time
	// closed: the route was replaced; connections still dialled for app connections
	// that hold the old route carry one stream each and close after it.
	closed bool
}

// open returns a connection with a stream slot reserved for the caller.
func (mp *muxPool) open(ctx context.Context) (*muxConn, error) {
	for {
		now := mp.p.now()
		mp.mu.Lock()
		if !mp.noMux.IsZero() && now.Sub(mp.noMux) < noMuxRetry {
			mp.mu.Unlock()
			return nil, errNoMux
		}
		mp.pruneLocked(now)
		for _, mc := range mp.cs {
			if mc.reserve() {
				mp.mu.Unlock()
				return mc, nil
			}
		}
		if ch := mp.dial; ch != nil {
			mp.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		ch := make(chan struct{})
		mp.dial = ch
		mp.mu.Unlock()
		mc, err := mp.connect(ctx)
		mp.mu.Lock()
		mp.dial = nil
		close(ch)
		if err != nil {
			if errors.Is(err, errNoMux) {
				mp.noMux = now
			}
			mp.mu.Unlock()
			return nil, err
		}
		if mp.closed {
			mp.mu.Unlock()
			mc.reserve()
			mc.mu.Lock()
			mc.goAway = true
			mc.mu.Unlock()
			return mc, nil
		}
		mp.cs = append(mp.cs, mc)
		mp.mu.Unlock()
	}
}

// connect dials the endpoint offering alpnMux and, for a peer that is not a meshguard
// sidecar, istio-http/1.1: that connection then goes to the HTTP/1.1 pool.
func (mp *muxPool) connect(ctx context.Context) (*muxConn, error) {
	c, peer, err := mp.p.dialRoute(ctx, mp.rt, mp.ep.addr, mp.rt.tlsMux, protoH2)
	if err != nil {
		return nil, err
	}
	if cst, ok := c.(interface{ ConnectionState() tls.ConnectionState }); !ok || cst.ConnectionState().NegotiatedProtocol != alpnMux {
		mp.ep.http1.put(&upConn{c: c, br: mp.p.bufs.reader(c), bw: mp.p.bufs.writer(c), pool: mp.ep.http1, peer: peer})
		return nil, errNoMux
	}
	// Own buffers, not the pools': the connection lives long and its buffers are in
	// use by several goroutines until the last of them is done.
	bw := bufio.NewWriterSize(c, muxWriteBuf)
	bw.WriteString(http2.ClientPreface) //nolint:errcheck // settings' Flush reports it
	mc := newMuxConn(c, bufio.NewReaderSize(c, bufSize), bw, false)
	mc.peer, mc.now = peer, mp.p.now
	mc.idle = mc.now()
	if err := mc.writeSettings(); err != nil {
		c.Close() //nolint:errcheck
		return nil, fmt.Errorf("HTTP/2 to %s: %w", mp.ep.addr, err)
	}
	mc.lastRead.Store(mc.now().UnixNano())
	go mp.readLoop(mc)
	go mp.healthLoop(mc)
	return mc, nil
}

// healthLoop probes a connection that went quiet with a PING and closes it when the
// peer answers nothing at all, so that streams on a connection to a vanished peer fail
// (and idempotent ones retry elsewhere) instead of waiting for TCP keep-alive.
func (mp *muxPool) healthLoop(mc *muxConn) {
	idle, wait := mp.p.cfg.H2ReadIdleTimeout, mp.p.cfg.H2PingTimeout
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case <-mc.closed:
			return
		case <-t.C:
		}
		quiet := mc.now().Sub(time.Unix(0, mc.lastRead.Load()))
		if quiet < idle {
			t.Reset(idle - quiet)
			continue
		}
		sent := mc.now().UnixNano()
		mc.wmu.Lock()
		if mc.fr.WritePing(false, [8]byte{'m', 'g', 'p', 'i', 'n', 'g'}) == nil {
			mc.bw.Flush() //nolint:errcheck // a dead connection fails below
		}
		mc.wmu.Unlock()
		t.Reset(wait)
		select {
		case <-mc.closed:
			return
		case <-t.C:
		}
		if mc.lastRead.Load() < sent {
			mp.p.log.Warn("multiplexed connection closed: the peer answered no PING", "peer", mc.c.RemoteAddr().String(), "after", idle+wait)
			mc.fail(fmt.Errorf("%w: no frame from the peer for %s, PING unanswered", errMuxClosed, idle+wait))
			return
		}
		t.Reset(idle)
	}
}

// muxIdleTimeout closes a connection that carried no stream for this long, as the
// HTTP/1.1 pool does.
const muxIdleTimeout = 60 * time.Second

// pruneLocked closes connections idle for muxIdleTimeout; mp.mu is held.
func (mp *muxPool) pruneLocked(now time.Time) {
	keep := mp.cs[:0]
	for _, mc := range mp.cs {
		mc.mu.Lock()
		stale := mc.active == 0 && now.Sub(mc.idle) > muxIdleTimeout
		mc.mu.Unlock()
		if stale {
			go mc.fail(errMuxClosed) // Close may block on a dead peer; not under mp.mu
			continue
		}
		keep = append(keep, mc)
	}
	clear(mp.cs[len(keep):])
	mp.cs = keep
}

// reserve takes a stream slot if the connection can open another stream.
func (mc *muxConn) reserve() bool {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.err != nil || mc.goAway || mc.active >= int(mc.peerMax) || mc.nextID > 1<<31-1 {
		return false
	}
	mc.active++
	return true
}

// release frees the slot of a reservation that opened no stream.
func (mc *muxConn) release() {
	mc.mu.Lock()
	mc.active--
	mc.idle = mc.now()
	mc.cond.Broadcast()
	mc.mu.Unlock()
}

// closeStream forgets s and frees its slot; a stream not cleanly finished on both sides
// is reset, so the server stops working on it.
func (mc *muxConn) closeStream(s *muxStream, reset bool) {
	id := s.id
	mc.mu.Lock()
	delete(mc.streams, id)
	mc.freeStreamLocked(s)
	mc.active--
	mc.idle = mc.now()
	idleGoAway := mc.goAway && mc.active == 0
	mc.cond.Broadcast()
	mc.mu.Unlock()
	if reset {
		mc.writeRST(id, http2.ErrCodeCancel)
	}
	if idleGoAway {
		mc.c.Close() //nolint:errcheck // drained after GOAWAY
	}
}

func (mp *muxPool) remove(mc *muxConn) {
	mp.mu.Lock()
	mp.cs = slices.DeleteFunc(mp.cs, func(x *muxConn) bool { return x == mc })
	mp.mu.Unlock()
}

// close retires every connection (route removed by a policy change, or proxy
// shutdown): no new streams, and each closes once its streams in flight are done, as
// the HTTP/1.1 pool closes only idle connections.
func (mp *muxPool) close() {
	mp.mu.Lock()
	cs := mp.cs
	mp.cs, mp.closed = nil, true
	mp.mu.Unlock()
	for _, mc := range cs {
		mc.mu.Lock()
		mc.goAway = true
		idle := mc.active == 0
		mc.mu.Unlock()
		if idle {
			mc.fail(errMuxClosed)
		}
	}
}

// readLoop is the connection's one reader: it delivers response heads, bodies and
// trailers to the streams, and ends with the connection.
func (mp *muxPool) readLoop(mc *muxConn) {
	err := mc.clientFrames()
	mp.remove(mc)
	mc.fail(fmt.Errorf("%w: %w", errMuxClosed, err))
}

func (mc *muxConn) clientFrames() error {
	for {
		h, goAway, err := mc.nextFrame()
		if err != nil {
			return err
		}
		if h != nil {
			if err := mc.onResponseHeaders(h); err != nil {
				return err
			}
			continue
		}
		mc.mu.Lock()
		mc.goAway = true
		for id, s := range mc.streams {
			if id > goAway.LastStreamID && s.err == nil {
				s.err = errMuxRefused // never processed: safe to retry
				s.wake()
			}
		}
		done := mc.active == 0
		mc.mu.Unlock()
		if done {
			return io.EOF
		}
	}
}

func (mc *muxConn) onResponseHeaders(h *muxHeaders) error {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	s := mc.streams[h.streamID]
	if s == nil {
		if h.streamID > mc.highest || h.streamID%2 == 0 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil // a stream we already gave up on
	}
	switch {
	case h.truncated:
		s.err = fmt.Errorf("HTTP/2 stream %d: response head over %d bytes", h.streamID, maxHeadBytes)
	case s.hdrsReady:
		if !h.endStream {
			return http2.ConnectionError(http2.ErrCodeProtocol) // trailers must end the stream
		}
		s.trailers = append([]hpack.HeaderField(nil), h.regular()...)
	default:
		code, err := strconv.Atoi(h.pseudo(":status"))
		switch {
		case err != nil || code < 100 || code > 999 || code == 101:
			s.err = fmt.Errorf("HTTP/2 stream %d: bad :status %q", h.streamID, h.pseudo(":status"))
		case code < 200:
			return nil // interim (100, 103): the HTTP/1.1 side already answered Expect
		default:
			s.hdrs, s.hdrsReady, s.status = append(s.hdrs[:0], h.regular()...), true, code
		}
	}
	if h.endStream {
		s.ended = true
	}
	s.wake()
	return nil
}

// useMux reports whether this outbound request goes over the route's multiplexed
// connections: mesh mTLS to another sidecar, not an upgrade (101 cannot ride a stream).
func (ex *h1Exchange) useMux(rt *route) bool {
	return !ex.p.cfg.DisableH2Upstream && rt.mode == networking.ClientTLSSettings_ISTIO_MUTUAL && rt.err == nil && !ex.req.upgrade
}

// exchangeMux forwards the current request as one HTTP/2 stream and writes the answer
// back as HTTP/1.1. handled is false when the endpoint does not multiplex and nothing
// was sent: the caller then uses HTTP/1.1. keep reports whether the downstream
// connection may carry another request.
func (ex *h1Exchange) exchangeMux(ctx context.Context, rt *route, hasBody bool) (keep, handled bool) {
	req, rec, bw := &ex.req, &ex.rec, ex.bw
	ep, err := rt.pick()
	if err != nil {
		rec.Status, rec.Flags = 503, "UF"
		simpleResponse(bw, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", true) //nolint:errcheck // closing anyway
		return false, true
	}
	fields := ex.muxRequestFields(rt)
	expectAnswered := false
	var s *muxStream
	var mc *muxConn
	for attempt := 0; ; attempt++ {
		mc, err = ep.mux.open(ctx)
		if errors.Is(err, errNoMux) {
			return false, false
		}
		if err != nil {
			ex.p.log.Warn("upstream connect failed", "direction", "outbound", "err", err)
			rec.Status, rec.Flags = 503, "UF"
			simpleResponse(bw, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", true) //nolint:errcheck // closing anyway
			return false, true
		}
		if req.expect100 && !expectAnswered {
			// As on the HTTP/1.1 path: answer 100-continue here, do not forward Expect.
			expectAnswered = true
			bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n") //nolint:errcheck
			if bw.Flush() != nil {
				mc.release()
				return false, true
			}
		}
		s, err = mc.openStream(fields, !hasBody)
		if err == nil && hasBody {
			rec.BytesReceived, err = mc.sendBody(s, ex.br, req.contentLength, req.chunked)
		}
		if err == nil {
			err = mc.awaitHeaders(s)
		}
		if err == nil {
			break
		}
		if s != nil {
			mc.closeStream(s, true)
		} else {
			mc.release()
		}
		// Retry once on another connection, when no body was consumed: a stream the
		// server refused or never processed (REFUSED_STREAM, beyond GOAWAY's last
		// stream) always; one lost with its connection only if the method is
		// idempotent, since the server may have acted on it.
		if attempt == 0 && !hasBody && (errors.Is(err, errMuxRefused) || (errors.Is(err, errMuxClosed) && idempotent(rec.Method))) {
			continue
		}
		ex.p.log.Debug("upstream request failed", "direction", "outbound", "err", err)
		rec.Status, rec.Flags = 503, "URX"
		simpleResponse(bw, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination", true) //nolint:errcheck // closing anyway
		return false, true
	}
	clear(fields) // the strings are encoded; keep only the slice
	rec.PeerPrincipal = mc.peer
	if a, ok := mc.c.RemoteAddr().(*net.TCPAddr); ok {
		rec.Upstream = a.AddrPort()
	}
	mc.mu.Lock()
	hdrs, ended := s.hdrs, s.ended && s.off == len(s.buf)
	mc.mu.Unlock()
	status := s.status
	rec.Status = status
	keep = !req.close
	noBody := string(req.method()) == "HEAD" || status == 204 || status == 304
	length := int64(-1)
	for _, f := range hdrs {
		if f.Name != "content-length" {
			continue
		}
		n, err := parseContentLength([]byte(f.Value))
		if err != nil || (length >= 0 && n != length) {
			mc.closeStream(s, true)
			ex.p.log.Debug("upstream response with a bad content-length", "direction", "outbound", "value", f.Value)
			rec.Status, rec.Flags = 502, "UPE"
			simpleResponse(bw, 502, "upstream sent an invalid content-length", true) //nolint:errcheck // closing anyway
			return false, true
		}
		length = n
	}
	chunked := false
	bw.WriteString("HTTP/1.1 ") //nolint:errcheck // bufio keeps the first error for Flush
	writeInt(bw, status)
	bw.WriteString(" ")                //nolint:errcheck
	bw.WriteString(statusText(status)) //nolint:errcheck
	bw.WriteString("\r\n")             //nolint:errcheck
	for _, f := range hdrs {
		if isH2Hop([]byte(f.Name)) {
			continue
		}
		bw.WriteString(f.Name)  //nolint:errcheck
		bw.WriteString(": ")    //nolint:errcheck
		bw.WriteString(f.Value) //nolint:errcheck
		bw.WriteString("\r\n")  //nolint:errcheck
	}
	if !noBody && length < 0 {
		if ended {
			length = 0
			bw.WriteString("content-length: 0\r\n") //nolint:errcheck
		} else {
			chunked = true
			bw.WriteString("transfer-encoding: chunked\r\n") //nolint:errcheck
		}
	}
	if !keep {
		bw.WriteString("connection: close\r\n") //nolint:errcheck
	}
	bw.WriteString("\r\n") //nolint:errcheck
	if noBody {
		length = 0 // a HEAD, 204 or 304 response carries no DATA
	}
	n, err := mc.writeH1Body(bw, s, chunked, length)
	rec.BytesSent = n
	mc.mu.Lock()
	clean := s.ended && s.err == nil
	mc.mu.Unlock()
	mc.closeStream(s, !clean)
	if err != nil {
		return false, true
	}
	return keep, true
}

// idempotent reports RFC 9110 §9.2.2's idempotent methods.
func idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// muxRequestFields turns the HTTP/1.1 request head into HTTP/2 fields.
func (ex *h1Exchange) muxRequestFields(rt *route) []hpack.HeaderField {
	req := &ex.req
	authority := rt.host
	if v, ok := req.lookup("host"); ok {
		authority = ex.values.get(v)
	}
	path := ex.values.get(req.target())
	if len(path) > 0 && path[0] != '/' && path != "*" {
		// absolute-form (RFC 9112 §3.2.2): keep the path and query.
		if u, err := url.ParseRequestURI(path); err == nil && u.Host != "" {
			path = u.RequestURI()
		}
	}
	fields := append(ex.fields[:0],
		hpack.HeaderField{Name: ":method", Value: ex.rec.Method},
		hpack.HeaderField{Name: ":scheme", Value: "http"},
		hpack.HeaderField{Name: ":authority", Value: authority},
		hpack.HeaderField{Name: ":path", Value: path})
	for _, f := range req.hdrs {
		name := req.b(f.name)
		if isH2Hop(name) || equalFoldASCII(name, "expect") {
			continue
		}
		n := lowerName(name, &ex.names)
		fields = append(fields, hpack.HeaderField{Name: n, Value: ex.values.value(n, req.b(f.value))})
	}
	ex.fields = fields
	return fields
}

// openStream assigns the next stream ID and sends the request head; IDs must reach
// the wire in order, so both happen under the write lock.
func (mc *muxConn) openStream(fields []hpack.HeaderField, endStream bool) (*muxStream, error) {
	mc.lockW()
	mc.mu.Lock()
	if mc.err != nil {
		err := mc.err
		mc.mu.Unlock()
		mc.wmu.Unlock()
		return nil, err
	}
	id := mc.nextID
	mc.nextID += 2
	s := mc.newStreamLocked(id)
	mc.streams[id] = s
	mc.highest = id
	mc.mu.Unlock()
	mc.encode(fields)
	if err := mc.unlockW(endStream, mc.writeBlock(id, endStream)); err != nil {
		return s, fmt.Errorf("%w: %w", errMuxClosed, err)
	}
	return s, nil
}

// awaitHeaders waits for the final response head.
func (mc *muxConn) awaitHeaders(s *muxStream) error {
	mc.mu.Lock()
	for !s.hdrsReady && s.err == nil {
		mc.mu.Unlock()
		<-s.notify
		mc.mu.Lock()
	}
	err := s.err
	if s.hdrsReady {
		err = nil
	}
	mc.mu.Unlock()
	return err
}
