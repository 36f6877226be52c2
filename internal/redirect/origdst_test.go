package redirect

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func sockaddrIn(fam uint16, port uint16, a [4]byte) []byte {
	b := make([]byte, 16)
	binary.NativeEndian.PutUint16(b[0:2], fam)
	binary.BigEndian.PutUint16(b[2:4], port)
	copy(b[4:8], a[:])
	return b
}

func sockaddrIn6(fam uint16, port uint16, a [16]byte, scope uint32) []byte {
	b := make([]byte, 32)
	binary.NativeEndian.PutUint16(b[0:2], fam)
	binary.BigEndian.PutUint16(b[2:4], port)
	copy(b[8:24], a[:])
	binary.NativeEndian.PutUint32(b[24:28], scope)
	return b
}

func TestParseSockaddr(t *testing.T) {
	ll := netip.MustParseAddr("fe80::1").As16()
	tests := []struct {
		name    string
		in      []byte
		v6      bool
		want    string
		wantErr bool
	}{
		{name: "ipv4", in: sockaddrIn(unix.AF_INET, 8080, [4]byte{10, 1, 2, 3}), want: "10.1.2.3:8080"},
		{name: "ipv4 high port", in: sockaddrIn(unix.AF_INET, 65535, [4]byte{192, 168, 0, 1}), want: "192.168.0.1:65535"},
		{name: "ipv4 wrong family", in: sockaddrIn(unix.AF_INET6, 80, [4]byte{1, 2, 3, 4}), wantErr: true},
		{name: "ipv4 short", in: []byte{2, 0, 0}, wantErr: true},
		{name: "ipv6", in: sockaddrIn6(unix.AF_INET6, 9080, netip.MustParseAddr("fd00::7").As16(), 0), v6: true, want: "[fd00::7]:9080"},
		{name: "ipv6 link-local zone", in: sockaddrIn6(unix.AF_INET6, 443, ll, 3), v6: true, want: "[fe80::1%3]:443"},
		{name: "ipv6 global ignores scope", in: sockaddrIn6(unix.AF_INET6, 443, netip.MustParseAddr("2001:db8::1").As16(), 3), v6: true, want: "[2001:db8::1]:443"},
		{name: "ipv6 wrong family", in: sockaddrIn6(unix.AF_INET, 80, ll, 0), v6: true, wantErr: true},
		{name: "ipv6 short", in: make([]byte, 27), v6: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parse := parseSockaddrIn
			if tt.v6 {
				parse = parseSockaddrIn6
			}
			got, err := parse(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parse(%x) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if err == nil && got.String() != tt.want {
				t.Errorf("parse(%x) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzParseSockaddr checks that a decoded address re-encodes to the same bytes and that
// a rejected input never yields a partial value.
func FuzzParseSockaddr(f *testing.F) {
	f.Add(sockaddrIn(unix.AF_INET, 8080, [4]byte{10, 1, 2, 3}))
	f.Add(sockaddrIn6(unix.AF_INET6, 9080, netip.MustParseAddr("fd00::7").As16(), 0))
	f.Add(sockaddrIn6(unix.AF_INET6, 1, netip.MustParseAddr("fe80::1").As16(), 9))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if ap, err := parseSockaddrIn(b); err != nil {
			if ap.IsValid() {
				t.Fatalf("parseSockaddrIn(%x) = %v with error %v", b, ap, err)
			}
		} else if re := sockaddrIn(unix.AF_INET, ap.Port(), ap.Addr().As4()); string(re[:8]) != string(b[:8]) {
			t.Fatalf("parseSockaddrIn(%x) = %v, re-encodes to %x", b, ap, re[:8])
		}
		if ap, err := parseSockaddrIn6(b); err != nil {
			if ap.IsValid() {
				t.Fatalf("parseSockaddrIn6(%x) = %v with error %v", b, ap, err)
			}
		} else {
			if !ap.Addr().Is6() {
				t.Fatalf("parseSockaddrIn6(%x) = %v, not IPv6", b, ap)
			}
			re := sockaddrIn6(unix.AF_INET6, ap.Port(), ap.Addr().As16(), 0)
			if string(re[:4]) != string(b[:4]) || string(re[8:24]) != string(b[8:24]) {
				t.Fatalf("parseSockaddrIn6(%x) = %v, re-encodes to %x", b, ap, re[:24])
			}
		}
	})
}

// TestOriginalDstNotRedirected: a plain loopback connection has no NAT original
// destination, so the proxy must get ErrNotRedirected rather than its own address (which
// would make it dial itself).
func TestOriginalDstNotRedirected(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s loopback here: %v", network, err)
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					accepted <- c
				}
				close(accepted)
			}()
			cc, err := net.DialTimeout(network, ln.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			var sc net.Conn
			select {
			case sc = <-accepted:
			case <-time.After(5 * time.Second):
				t.Fatal("accept timed out")
			}
			if sc == nil {
				t.Fatal("accept failed")
			}
			defer sc.Close()
			got, err := OriginalDst(sc.(*net.TCPConn))
			if !errors.Is(err, ErrNotRedirected) {
				t.Fatalf("OriginalDst(loopback conn) = %v, %v; want ErrNotRedirected", got, err)
			}
		})
	}
}

// BenchmarkOriginalDst measures the per-connection cost the transparent listeners pay
// (one getsockopt through SyscallConn). On loopback without rules the kernel answers
// from the same conntrack lookup a redirected connection needs.
func BenchmarkOriginalDst(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	sc, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Close()
	tc := sc.(*net.TCPConn)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = OriginalDst(tc)
	}
}
