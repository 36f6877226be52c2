package proxy

import (
	"bufio"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// sysConn is a TCP connection whose Read and Write issue the read(2)/write(2) system
// calls directly (syscall.RawSyscall) instead of through the runtime's blocking-syscall
// bookkeeping. The socket is non-blocking, so neither call can block; readiness waits
// still go through the runtime's netpoller (and so honour deadlines and Close).
//
// Why: in a sidecar pinned to one CPU (GOMAXPROCS=1) the runtime's system monitor deep-
// sleeps whenever the process is idle, and every entersyscall after such an idle spell
// wakes it (a futex), after which it polls in 20 µs nanosleeps until idle again. At a
// typical sidecar load of a request every millisecond or so that was 1.4 context
// switches and ~10 µs of CPU per request, more than the proxy's own work on a 1 KiB
// request. The system monitor still wakes for timers, GC and every other syscall.
type sysConn struct {
	*net.TCPConn
	rc syscall.RawConn

	// One read and one write at a time (the mutexes), each with its arguments and
	// results in fields and its callback bound once, so that a call allocates nothing:
	// a closure handed to RawConn would escape to the heap on every call.
	rmu, wmu   sync.Mutex
	rbuf, wbuf []byte
	rn, wn     int
	rerr, werr syscall.Errno
	readFn     func(fd uintptr) bool
	writeFn    func(fd uintptr) bool

	// A request's last write can be left to the read that waits for its answer
	// (flushBeforeRead). deferNext and pend are guarded by wmu; the rest belong to
	// the read in progress.
	deferNext   bool
	wrote       bool // something was written since the last Read began
	pend        []byte
	pendWrite   bool          // the read's first callback writes pend
	pendRest    bool          // the socket took only part of pend: Read writes the rest
	pendErr     syscall.Errno // the deferred write failed
	writeReadFn func(fd uintptr) bool
}

// maxDeferredWrite bounds what a sysConn copies to write later (and so keeps a buffer
// for): one flush of the pools' bufSize writers, with room for a TLS record's framing.
const maxDeferredWrite = 2 * bufSize

// newSysConn wraps a TCP connection; anything else is returned unchanged.
func newSysConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	sc := &sysConn{TCPConn: tc, rc: rc}
	sc.readFn, sc.writeFn, sc.writeReadFn = sc.readOnce, sc.writeAll, sc.writeThenRead
	return sc
}

// flushBeforeRead flushes bw, the writer of c, when what c does next is read the
// peer's answer to what bw holds (an upstream request). On a sysConn the write is left
// to that read: it is made inside the read's wait for readiness, so the read(2) that
// would only have found nothing yet (EAGAIN) is not made; one system call less per
// request. This is safe only where the peer sends nothing before it has the request:
// the netpoller's readiness is reset before that write, so an answer to it cannot be
// missed, but data that arrived earlier and was already reported ready would be (a
// pipelining HTTP/1.1 client's next request; an app's early answer to a request whose
// head or body went out in earlier writes). So a write is deferred only when nothing
// was written since the last read (the whole request is in this flush), and never on
// downstream connections.
func flushBeforeRead(bw *bufio.Writer, c net.Conn) error {
	sc, ok := socketOf(c).(*sysConn)
	if !ok || bw.Buffered() == 0 {
		return bw.Flush()
	}
	sc.setDeferNext(true)
	err := bw.Flush()
	sc.setDeferNext(false) // a Flush that wrote nothing (a sticky error) leaves no flag
	return err
}

func (c *sysConn) setDeferNext(v bool) {
	c.wmu.Lock()
	c.deferNext = v
	c.wmu.Unlock()
}

func (c *sysConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr = b, 0, 0
	c.wmu.Lock()
	deferred := len(c.pend) > 0
	c.wrote = false
	c.wmu.Unlock()
	var err error
	if !deferred {
		err = c.rc.Read(c.readFn)
	} else {
		c.pendWrite, c.pendRest, c.pendErr = true, false, 0
		err = c.rc.Read(c.writeReadFn)
		switch {
		case err != nil:
		case c.pendErr != 0:
			c.rbuf = nil
			return c.result("write", 0, nil, c.pendErr)
		case c.pendRest: // the send buffer was full: the rest as any write, then read
			if err = c.flushPend(); err == nil {
				err = c.rc.Read(c.readFn)
			}
		}
	}
	c.rbuf = nil
	n, err := c.result("read", c.rn, err, c.rerr)
	if err == nil && n == 0 {
		return 0, io.EOF
	}
	return n, err
}

// writeThenRead is a read's callback when a write was left to it: its first call
// writes, and then waits for readiness without reading (RawConn reset the readiness
// before calling it, so the answer cannot be missed); later calls read.
func (c *sysConn) writeThenRead(fd uintptr) bool {
	if !c.pendWrite {
		return c.readOnce(fd)
	}
	c.pendWrite = false
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.pend) == 0 { // a Write sent it first
		return c.readOnce(fd)
	}
	c.wbuf, c.wn, c.werr = c.pend, 0, 0
	done := c.writeAll(fd)
	c.pend, c.pendErr = c.pend[:copy(c.pend, c.pend[c.wn:])], c.werr
	c.wbuf = nil
	switch {
	case c.pendErr != 0:
		c.pend = c.pend[:0]
		return true
	case !done: // the send buffer is full
		c.pendRest = true
		return true
	}
	return false
}

// readOnce makes one read(2); false asks the netpoller to wait for readiness.
func (c *sysConn) readOnce(fd uintptr) bool {
	b := c.rbuf
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case 0:
			c.rn = int(r)
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = e
			return true
		}
	}
}

// Write writes b, or after flushBeforeRead's setDeferNext keeps a copy of it for the
// next Read to write. Anything kept goes out before the next Write's bytes; Close
// drops it (the request was abandoned).
func (c *sysConn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.deferNext {
		c.deferNext = false
		if !c.wrote && len(c.pend) == 0 && len(b) <= maxDeferredWrite {
			c.pend = append(c.pend, b...)
			return len(b), nil
		}
	}
	c.wrote = true
	if err := c.flushPendLocked(); err != nil {
		return 0, err
	}
	return c.writeLocked(b)
}

// flushPend writes what a read left unwritten.
func (c *sysConn) flushPend() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushPendLocked()
}

func (c *sysConn) flushPendLocked() error {
	if len(c.pend) == 0 {
		return nil
	}
	_, err := c.writeLocked(c.pend)
	c.pend = c.pend[:0]
	return err
}

// writeLocked writes b through the netpoller; wmu is held.
func (c *sysConn) writeLocked(b []byte) (int, error) {
	c.wbuf, c.wn, c.werr = b, 0, 0
	err := c.rc.Write(c.writeFn)
	c.wbuf = nil
	return c.result("write", c.wn, err, c.werr)
}

// writeAll writes until done; false (socket buffer full) asks the netpoller to wait
// for room, and the next call goes on where this one stopped.
func (c *sysConn) writeAll(fd uintptr) bool {
	b := c.wbuf
	for c.wn < len(b) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[c.wn])), uintptr(len(b)-c.wn))
		switch e {
		case 0:
			c.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// result turns one call's outcome into net.Conn's: n bytes, and the netpoller's error
// (deadline, close) or the system call's, if any.
func (c *sysConn) result(op string, n int, err error, errno syscall.Errno) (int, error) {
	switch {
	case err != nil:
		return n, c.opError(op, err)
	case errno != 0:
		return n, c.opError(op, os.NewSyscallError(op, errno))
	}
	return n, nil
}

// opError gives errors the shape net.TCPConn's have, so callers' errors.Is checks
// (net.ErrClosed, os.ErrDeadlineExceeded) and Timeout() keep working.
func (c *sysConn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		// RawConn reports deadline and close as a "raw-read"/"raw-write" OpError.
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// socketOf returns the connection under a TLS one (c itself otherwise).
func socketOf(c net.Conn) net.Conn {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		return tc.NetConn()
	}
	return c
}

// tcpConn returns the *net.TCPConn under c, if any.
func (c *sysConn) tcpConn() *net.TCPConn { return c.TCPConn }

// idleConnReadable reports whether an idle connection has anything to read: its peer's
// close (EOF), a reset, or data. A non-blocking MSG_PEEK looks without consuming. A TLS
// connection is looked at underneath: a close_notify alert is data.
func idleConnReadable(c net.Conn) bool {
	sc, ok := socketOf(c).(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true // closed
	}
	readable := false
	var b [1]byte
	err = rc.Control(func(fd uintptr) {
		for {
			n, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if e == syscall.EINTR {
				continue
			}
			// n == 0 without an error is the peer's FIN.
			readable = e != syscall.EAGAIN || n > 0
			return
		}
	})
	return readable || err != nil
}
