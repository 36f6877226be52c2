package proxy

import (
	"bufio"
	"context"
	"net"
	"sync"
	"time"
)

const bufSize = 4 << 10

// bufPools recycle per-connection buffers: a sidecar's memory is mostly these.
type bufPools struct {
	r, w sync.Pool
}

func (b *bufPools) reader(c net.Conn) *bufio.Reader {
	if v, ok := b.r.Get().(*bufio.Reader); ok {
		v.Reset(c)
		return v
	}
	return bufio.NewReaderSize(c, bufSize)
}

func (b *bufPools) putReader(r *bufio.Reader) {
	r.Reset(nil)
	b.r.Put(r)
}

func (b *bufPools) writer(c net.Conn) *bufio.Writer {
	if v, ok := b.w.Get().(*bufio.Writer); ok {
		v.Reset(c)
		return v
	}
	return bufio.NewWriterSize(c, bufSize)
}

func (b *bufPools) putWriter(w *bufio.Writer) {
	w.Reset(nil)
	b.w.Put(w)
}

// upConn is one keep-alive upstream connection with its buffers.
type upConn struct {
	c      net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	pool   *connPool
	peer   string // verified server principal (ISTIO_MUTUAL), else ""
	reused bool
	idle   time.Time
}

// dialFunc opens one upstream connection and returns the verified server principal.
type dialFunc func(ctx context.Context) (net.Conn, string, error)

// connPool keeps idle keep-alive connections to one upstream (an app port, or one
// endpoint of a destination over one ALPN protocol). LIFO, so the warmest connection is
// reused and surplus ones age out; stale ones are dropped on get, no goroutine needed.
type connPool struct {
	dial        dialFunc
	bufs        *bufPools
	maxIdle     int
	idleTimeout time.Duration
	now         func() time.Time

	mu     sync.Mutex
	idle   []*upConn
	closed bool
}

// idleProbeAfter: a connection idle for longer is probed before reuse. Servers close
// keep-alive connections they find idle (Go's and Node's after seconds, nginx's after
// 75 s); a request written to one fails, and one with a body cannot be retried. Under
// load connections come back within milliseconds and are not probed, so the probe's
// system call is only paid at low request rates.
const idleProbeAfter = 250 * time.Millisecond

func (cp *connPool) get(ctx context.Context) (*upConn, error) {
	now := cp.now()
	for {
		cp.mu.Lock()
		n := len(cp.idle)
		if n == 0 {
			cp.mu.Unlock()
			return cp.fresh(ctx)
		}
		u := cp.idle[n-1]
		cp.idle = cp.idle[:n-1]
		cp.mu.Unlock()
		age := now.Sub(u.idle)
		if age < cp.idleTimeout && (age < idleProbeAfter || !u.readable()) {
			u.reused = true
			return u, nil
		}
		u.discard()
	}
}

// readable reports whether an idle connection has something to read: the server's
// close, a reset, or bytes it sent unasked (a 408, a TLS alert). Any of them means the
// connection cannot carry another request.
func (u *upConn) readable() bool {
	return u.br.Buffered() > 0 || idleConnReadable(u.c)
}

func (cp *connPool) fresh(ctx context.Context) (*upConn, error) {
	c, peer, err := cp.dial(ctx)
	if err != nil {
		return nil, err
	}
	return &upConn{c: c, br: cp.bufs.reader(c), bw: cp.bufs.writer(c), pool: cp, peer: peer}, nil
}

// put returns a connection whose last exchange completed cleanly.
func (cp *connPool) put(u *upConn) {
	u.idle = cp.now()
	cp.mu.Lock()
	if cp.closed || len(cp.idle) >= cp.maxIdle {
		cp.mu.Unlock()
		u.discard()
		return
	}
	cp.idle = append(cp.idle, u)
	cp.mu.Unlock()
}

func (cp *connPool) close() {
	cp.mu.Lock()
	idle := cp.idle
	cp.idle, cp.closed = nil, true
	cp.mu.Unlock()
	for _, u := range idle {
		u.discard()
	}
}

func (u *upConn) discard() {
	u.c.Close() //nolint:errcheck // nothing to do about a failed close
	if u.br != nil {
		u.pool.bufs.putReader(u.br)
		u.pool.bufs.putWriter(u.bw)
		u.br, u.bw = nil, nil
	}
}
