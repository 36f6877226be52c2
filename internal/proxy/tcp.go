package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
)

// splice copies both ways until both directions end, passing on half-closes; bytes
// already buffered by sniffing go first. It returns a→b and b→a byte counts.
func splice(a net.Conn, ar *bufio.Reader, b net.Conn, brd *bufio.Reader) (aToB, bToA int64) {
	done := make(chan int64, 1)
	go func() {
		n := pump(b, a, ar)
		closeWrite(b)
		done <- n
	}()
	bToA = pump(a, b, brd)
	closeWrite(a)
	aToB = <-done
	return aToB, bToA
}

func pump(dst, src net.Conn, buffered *bufio.Reader) int64 {
	var n int64
	if buffered != nil {
		if k := buffered.Buffered(); k > 0 {
			b, _ := buffered.Peek(k)
			w, err := dst.Write(b)
			n += int64(w)
			buffered.Discard(k) //nolint:errcheck // k bytes are buffered
			if err != nil {
				return n
			}
		}
	}
	// io.Copy between two *net.TCPConn uses splice(2): no user-space copy.
	w, _ := io.Copy(dst, unwrap(src))
	return n + w
}

// unwrap exposes the *net.TCPConn under a peekedConn whose buffer is drained (and
// under a sysConn), so that io.Copy can use the kernel's splice.
func unwrap(c net.Conn) net.Conn {
	if pc, ok := c.(*peekedConn); ok && (pc.r == nil || pc.r.Buffered() == 0) {
		pc.release()
		c = pc.Conn
	}
	if tc, ok := asTCP(c); ok {
		return tc
	}
	return c
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite() //nolint:errcheck // peer may be gone
		return
	}
	c.Close() //nolint:errcheck
}

// serveInboundTCP authorizes an opaque TCP connection (HTTP-only rule fields fail
// closed in the Authorizer) and splices it to the app. Denied: the connection closes.
func (p *Proxy) serveInboundTCP(ctx context.Context, cs *connState, c net.Conn, br *bufio.Reader) {
	st := p.state.Load()
	rec := cs.record("tcp", cs.start)
	defer p.observeTimed(&rec)
	r := cs.request()
	status := p.admit(ctx, cs, st, &r, "", &rec)
	if status != 0 {
		rec.Denied = true
		return
	}
	dctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	up, err := p.dialer().DialContext(dctx, "tcp", cs.app.addr.String())
	cancel()
	if err != nil {
		rec.Flags = "UF"
		p.log.Warn("app connect failed", "app", cs.app.addr.String(), "err", err)
		return
	}
	defer up.Close()
	rec.BytesReceived, rec.BytesSent = splice(c, br, up, nil)
}
