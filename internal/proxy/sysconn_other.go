//go:build !linux

package proxy

import "net"

// newSysConn is the identity elsewhere: the system-monitor wake-ups it avoids on Linux
// are measured there only.
func newSysConn(c net.Conn) net.Conn { return c }
