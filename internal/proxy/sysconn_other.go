//go:build !linux

package proxy

import (
	"bufio"
	"net"
)

// newSysConn is the identity elsewhere: the system-monitor wake-ups it avoids on Linux
// are measured there only.
func newSysConn(c net.Conn) net.Conn { return c }

// idleConnReadable cannot look without reading elsewhere: a closed idle connection is
// found when a request on it fails (retried when it has no body).
func idleConnReadable(net.Conn) bool { return false }

// flushBeforeRead is bw.Flush elsewhere.
func flushBeforeRead(bw *bufio.Writer, _ net.Conn) error { return bw.Flush() }
