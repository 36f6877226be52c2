package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ErrNotRedirected reports that a connection carries no NAT original destination: it was
// not captured by a REDIRECT/DNAT rule (for example the app dialled the proxy port
// directly, which would make a proxy loop to itself). Callers branch on it with errors.Is.
var ErrNotRedirected = errors.New("connection was not redirected (no SO_ORIGINAL_DST)")

// OriginalDst returns the destination a redirected TCP connection was addressed to before
// the nat rules rewrote it to the proxy's port. It reads SO_ORIGINAL_DST (IPv4) or
// IP6T_SO_ORIGINAL_DST (IPv6) from the kernel's conntrack entry, choosing by the
// connection's local address family. A connection that was not redirected yields
// ErrNotRedirected: the kernel has no conntrack entry (ENOENT), no conntrack at all in
// the namespace (ENOPROTOOPT), or the original destination is the local address itself.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	if c == nil {
		return netip.AddrPort{}, errors.New("original destination: nil connection")
	}
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok || local == nil {
		return netip.AddrPort{}, errors.New("original destination: connection has no TCP local address")
	}
	// An IPv4 address on an AF_INET6 socket (v4-mapped) is still tracked by the IPv4 nat
	// table, so the family of the local address, not of the socket, picks the option.
	v4 := local.IP.To4() != nil
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %s: %w", local, err)
	}
	var (
		dst  netip.AddrPort
		serr error
	)
	cerr := rc.Control(func(fd uintptr) {
		if v4 {
			dst, serr = originalDst4(int(fd))
		} else {
			dst, serr = originalDst6(int(fd))
		}
	})
	if cerr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %s: %w", local, cerr)
	}
	if serr != nil {
		if errors.Is(serr, unix.ENOENT) || errors.Is(serr, unix.ENOPROTOOPT) {
			return netip.AddrPort{}, fmt.Errorf("original destination of %s: %w", local, ErrNotRedirected)
		}
		return netip.AddrPort{}, fmt.Errorf("original destination of %s: getsockopt: %w", local, serr)
	}
	if dst == local.AddrPort() || dst.Addr().Unmap() == local.AddrPort().Addr().Unmap() && dst.Port() == local.AddrPort().Port() {
		return netip.AddrPort{}, fmt.Errorf("original destination of %s: %w", local, ErrNotRedirected)
	}
	return dst, nil
}

// parseSockaddrIn decodes a struct sockaddr_in: family (host order), port and address
// (network order).
func parseSockaddrIn(b []byte) (netip.AddrPort, error) {
	if len(b) < 8 {
		return netip.AddrPort{}, fmt.Errorf("sockaddr_in: %d bytes, want at least 8", len(b))
	}
	if fam := binary.NativeEndian.Uint16(b[0:2]); fam != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("sockaddr_in: address family %d, want AF_INET", fam)
	}
	port := binary.BigEndian.Uint16(b[2:4])
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
}

// parseSockaddrIn6 decodes a struct sockaddr_in6: family, port, flowinfo, address,
// scope id.
func parseSockaddrIn6(b []byte) (netip.AddrPort, error) {
	if len(b) < 28 {
		return netip.AddrPort{}, fmt.Errorf("sockaddr_in6: %d bytes, want at least 28", len(b))
	}
	if fam := binary.NativeEndian.Uint16(b[0:2]); fam != unix.AF_INET6 {
		return netip.AddrPort{}, fmt.Errorf("sockaddr_in6: address family %d, want AF_INET6", fam)
	}
	port := binary.BigEndian.Uint16(b[2:4])
	addr := netip.AddrFrom16([16]byte(b[8:24]))
	if scope := binary.NativeEndian.Uint32(b[24:28]); scope != 0 && addr.IsLinkLocalUnicast() {
		addr = addr.WithZone(fmt.Sprint(scope))
	}
	return netip.AddrPortFrom(addr, port), nil
}
