package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/net/http2/hpack"
)

// serveHTTP1 is the keep-alive loop of one downstream HTTP/1.1 connection, inbound or
// outbound. It runs in the connection's goroutine: no goroutine per request.
func (p *Proxy) serveHTTP1(ctx context.Context, cs *connState, c net.Conn, br *bufio.Reader) {
	bw := p.bufs.writer(c)
	defer p.bufs.putWriter(bw)
	ex := &h1Exchange{p: p, cs: cs, c: c, br: br, bw: bw}
	ex.req.reset()
	ex.resp.reset()
	for !p.draining.Load() {
		cs.idle.Store(true)
		c.SetReadDeadline(p.now().Add(p.cfg.IdleTimeout)) //nolint:errcheck // a dead conn fails the read
		if p.draining.Load() {
			return
		}
		err := readHead(br, &ex.req, true)
		cs.idle.Store(false)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, net.ErrClosed) {
				status := 400
				if errors.Is(err, errHeadTooLarge) {
					status = 431
				}
				p.log.Debug("bad HTTP/1.1 request", "peer", cs.src.String(), "err", err)
				simpleResponse(bw, status, "", true) //nolint:errcheck // closing anyway
			}
			return
		}
		c.SetReadDeadline(time.Time{}) //nolint:errcheck
		cs.requests.Add(1)
		if !ex.exchange(ctx) {
			return
		}
	}
}

// h1Exchange holds one connection's reusable request state.
type h1Exchange struct {
	p    *Proxy
	cs   *connState
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	req  head
	resp head
	rec  Record
	ar   Request
	// fields is the multiplexed path's HTTP/2 request head, reused per request.
	fields []hpack.HeaderField
	names  recentValues // its field names not in commonNames
	values recentValues // its field values
}

// reuseString returns b as a string: prev, without allocating, when they are equal. A
// keep-alive client sends the same Host, and often the same path, on every request.
func reuseString(prev string, b []byte) string {
	if prev == string(b) {
		return prev
	}
	return string(b)
}

func skipExpect(name []byte) bool { return equalFoldASCII(name, "expect") }

func skipInbound(name []byte) bool { return isXFCC(name) || equalFoldASCII(name, "expect") }

// The downstream's "Connection: close" is hop-by-hop: it closes the downstream
// connection after this response, not the pooled upstream one, so it is not forwarded.
func skipExpectConn(name []byte) bool { return skipExpect(name) || equalFoldASCII(name, "connection") }

func skipInboundConn(name []byte) bool {
	return skipInbound(name) || equalFoldASCII(name, "connection")
}

// exchange forwards one request and its response; it reports whether the downstream
// connection may carry another request.
func (ex *h1Exchange) exchange(ctx context.Context) bool {
	p, cs, req := ex.p, ex.cs, &ex.req
	st := p.state.Load()
	rec := &ex.rec
	prevPath, prevAuthority := rec.Path, rec.Authority
	*rec = cs.record("http/1.1", p.now())
	rec.Method = internMethod(req.method())
	if p.cfg.Observer != nil {
		rec.Path = reuseString(prevPath, req.target())
		if v, ok := req.lookup("host"); ok {
			rec.Authority = reuseString(prevAuthority, v)
		}
		rec.Headers = req
	}
	defer p.observeTimed(rec)
	hasBody := req.hasBody()

	var up *upConn
	var err error
	skip := skipExpect
	if req.close && !req.upgrade {
		skip = skipExpectConn
	}
	extra := ""
	if cs.dir == Inbound {
		ar := &ex.ar
		prevPath, prevHost := ar.Path, ar.Host
		*ar = cs.request()
		ar.HTTP = true
		ar.Method = rec.Method
		target := reuseString(prevPath, req.target())
		ar.Path = target
		if v, ok := req.lookup("host"); ok {
			ar.Host = reuseString(prevHost, v)
		}
		ar.Headers = req
		status := p.admit(ctx, cs, st, ar, target, rec)
		ar.Headers = nil
		if status != 0 {
			rec.Status = status
			body := denyBody(status)
			if status == 401 {
				rec.Flags = "UAEX"
			} else {
				rec.Denied = true
			}
			// With an unread body the connection cannot be reused.
			return simpleResponse(ex.bw, status, body, hasBody) == nil && !hasBody
		}
		skip = skipInbound
		if req.close && !req.upgrade {
			skip = skipInboundConn
		}
		extra = cs.xfccHeader
		app := cs.app
		if cs.hostRouted {
			var ok bool
			if app, rec.Port, ok = p.appForHost(cs, st, ar.Host); !ok {
				p.handshakeFailed(Inbound, "plaintext_to_strict", "peer", cs.src.String(), "host", ar.Host)
				return false
			}
		}
		up, err = app.pool.get(ctx)
	} else {
		if ex.useMux(cs.route) {
			if keep, handled := ex.exchangeMux(ctx, cs.route, hasBody); handled {
				return keep
			}
		}
		up, err = cs.route.getHTTP1(ctx)
	}
	if err != nil {
		p.log.Warn("upstream connect failed", "direction", cs.dir.String(), "err", err)
		rec.Status, rec.Flags = 503, "UF"
		simpleResponse(ex.bw, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", true) //nolint:errcheck // closing anyway
		return false
	}
	if up.peer != "" {
		rec.PeerPrincipal = up.peer
	}
	if a, ok := up.c.RemoteAddr().(*net.TCPAddr); ok {
		rec.Upstream = a.AddrPort()
	}
	if req.expect100 {
		// Like Envoy, answer 100-continue here and do not forward the Expect header.
		ex.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n") //nolint:errcheck
		if err := ex.bw.Flush(); err != nil {
			up.discard()
			return false
		}
	}
	for attempt := 0; ; attempt++ {
		err = ex.sendRequest(up, skip, extra, hasBody)
		if err == nil {
			err = readHead(up.br, &ex.resp, false)
			for err == nil && ex.resp.status < 200 && ex.resp.status != 101 {
				writeHead(ex.bw, &ex.resp, nil, "") // interim response
				if err = ex.bw.Flush(); err == nil {
					err = readHead(up.br, &ex.resp, false)
				}
			}
		}
		if err == nil {
			break
		}
		up.discard()
		// A pooled connection the server closed while idle: retry once on a fresh one
		// when nothing of the request body was consumed.
		if attempt == 0 && up.reused && !hasBody {
			if up, err = up.pool.fresh(ctx); err == nil {
				continue
			}
		}
		p.log.Debug("upstream request failed", "direction", cs.dir.String(), "err", err)
		rec.Status, rec.Flags = 503, "URX"
		simpleResponse(ex.bw, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination", true) //nolint:errcheck
		return false
	}
	resp := &ex.resp
	rec.Status = resp.status
	respExtra := ""
	if req.close && !resp.close {
		respExtra = "connection: close\r\n" // the downstream asked to close after this one
	}
	writeHead(ex.bw, resp, nil, respExtra)
	reusable := !resp.close // the upstream connection; the downstream also needs !req.close
	switch {
	case resp.status == 101:
		if err := ex.bw.Flush(); err != nil {
			up.discard()
			return false
		}
		sent, recv := splice(ex.c, ex.br, up.c, up.br)
		rec.BytesReceived += sent
		rec.BytesSent += recv
		up.discard()
		return false
	case !resp.responseHasBody(req.method()):
	case resp.chunked:
		n, err := copyChunked(ex.bw, up.br)
		rec.BytesSent = n
		if err != nil {
			up.discard()
			return false
		}
	case resp.contentLength >= 0:
		n, err := copyN(ex.bw, up.br, resp.contentLength)
		rec.BytesSent = n
		if err != nil {
			up.discard()
			return false
		}
	default:
		n, _ := copyUntilEOF(ex.bw, up.br)
		rec.BytesSent = n
		reusable = false
	}
	if err := ex.bw.Flush(); err != nil {
		up.discard()
		return false
	}
	if reusable {
		up.pool.put(up)
	} else {
		up.discard()
	}
	return reusable && !req.close
}

func (ex *h1Exchange) sendRequest(up *upConn, skip func([]byte) bool, extra string, hasBody bool) error {
	req := &ex.req
	writeHead(up.bw, req, skip, extra)
	if hasBody {
		var n int64
		var err error
		if req.chunked {
			n, err = copyChunked(up.bw, ex.br)
		} else {
			n, err = copyN(up.bw, ex.br, req.contentLength)
		}
		ex.rec.BytesReceived = n
		if err != nil {
			return err
		}
	}
	return flushBeforeRead(up.bw, up.c) // the caller reads the response next
}

func (p *Proxy) observeTimed(r *Record) {
	if p.cfg.Observer == nil {
		return
	}
	r.Duration = p.now().Sub(r.Start)
	p.cfg.Observer.Observe(r)
}
