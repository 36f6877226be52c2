//go:build !linux

package redirect

import (
	"fmt"
	"net/netip"
	"runtime"
)

// SO_ORIGINAL_DST is Linux's (netfilter conntrack): transparent capture needs Linux.
func originalDst4(int) (netip.AddrPort, error) { return netip.AddrPort{}, errNoOrigDst }

func originalDst6(int) (netip.AddrPort, error) { return netip.AddrPort{}, errNoOrigDst }

var errNoOrigDst = fmt.Errorf("SO_ORIGINAL_DST needs Linux (netfilter), this is %s", runtime.GOOS)
