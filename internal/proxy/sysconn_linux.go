package proxy

import (
	"io"
	"net"
	"os"
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
}

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
	return &sysConn{TCPConn: tc, rc: rc}
}

func (c *sysConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch e {
			case 0:
				n = int(r)
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait for readiness
			default:
				errno = e
				return true
			}
		}
	})
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *sysConn) Write(b []byte) (int, error) {
	var n int
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[n])), uintptr(len(b)-n))
			switch e {
			case 0:
				n += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // socket buffer full: wait for room
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
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

// tcpConn returns the *net.TCPConn under c, if any.
func (c *sysConn) tcpConn() *net.TCPConn { return c.TCPConn }
