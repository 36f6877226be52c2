package redirect

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// originalDst4 reads a struct sockaddr_in. x/sys has no getsockopt for raw sockaddrs, so
// it borrows IPv6Mreq, which is exactly 16 bytes like sockaddr_in.
func originalDst4(fd int) (netip.AddrPort, error) {
	m, err := unix.GetsockoptIPv6Mreq(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return parseSockaddrIn((*[unsafe.Sizeof(*m)]byte)(unsafe.Pointer(m))[:])
}

// originalDst6 reads a struct sockaddr_in6 (28 bytes) through IPv6MTUInfo (32 bytes,
// sockaddr_in6 followed by a uint32), the same trick Envoy-adjacent Go proxies use.
func originalDst6(fd int) (netip.AddrPort, error) {
	// IP6T_SO_ORIGINAL_DST has the same value (80) as SO_ORIGINAL_DST.
	m, err := unix.GetsockoptIPv6MTUInfo(fd, unix.SOL_IPV6, unix.SO_ORIGINAL_DST)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return parseSockaddrIn6((*[unsafe.Sizeof(*m)]byte)(unsafe.Pointer(m))[:])
}
