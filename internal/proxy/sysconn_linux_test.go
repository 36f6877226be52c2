package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// sysPair returns a sysConn and the plain TCP peer it talks to over loopback.
func sysPair(t *testing.T) (*sysConn, *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-acc
	if peer == nil {
		t.Fatal("accept failed")
	}
	sc, ok := newSysConn(c).(*sysConn)
	if !ok {
		t.Fatalf("newSysConn(%T) did not wrap", c)
	}
	t.Cleanup(func() { sc.Close(); peer.Close() })
	return sc, peer.(*net.TCPConn)
}

func TestSysConn(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, sc *sysConn, peer *net.TCPConn)
	}{
		{"round trip", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			if n, err := sc.Write([]byte("ping")); n != 4 || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("peer read %q, %v", buf, err)
			}
			peer.Write([]byte("pong")) //nolint:errcheck
			if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "pong" {
				t.Fatalf("Read %q, %v", buf, err)
			}
		}},
		{"empty read returns at once", func(t *testing.T, sc *sysConn, _ *net.TCPConn) {
			if n, err := sc.Read(nil); n != 0 || err != nil {
				t.Fatalf("Read(nil) = %d, %v", n, err)
			}
		}},
		{"peer close is EOF", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			peer.Close()
			if n, err := sc.Read(make([]byte, 8)); n != 0 || err != io.EOF {
				t.Fatalf("Read = %d, %v; want 0, EOF", n, err)
			}
		}},
		{"read deadline", func(t *testing.T, sc *sysConn, _ *net.TCPConn) {
			sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond)) //nolint:errcheck
			_, err := sc.Read(make([]byte, 8))
			var ne net.Error
			if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("Read after deadline: %v; want a timeout", err)
			}
		}},
		{"read after close", func(t *testing.T, sc *sysConn, _ *net.TCPConn) {
			sc.Close()
			if _, err := sc.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read after Close: %v; want net.ErrClosed", err)
			}
		}},
		{"close wakes a blocked read", func(t *testing.T, sc *sysConn, _ *net.TCPConn) {
			go func() { time.Sleep(20 * time.Millisecond); sc.Close() }()
			if _, err := sc.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read: %v; want net.ErrClosed", err)
			}
		}},
		{"write larger than the socket buffers waits for the reader", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
			got := make(chan []byte, 1)
			go func() {
				time.Sleep(20 * time.Millisecond) // let the writer fill the buffers first
				b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
				got <- b
			}()
			if n, err := sc.Write(big); n != len(big) || err != nil {
				t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(big))
			}
			if b := <-got; !bytes.Equal(b, big) {
				t.Fatalf("peer got %d bytes, not the %d written", len(b), len(big))
			}
		}},
		{"write to a reset peer fails", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			peer.SetLinger(0) //nolint:errcheck // close sends RST
			peer.Close()
			var err error
			for i := 0; i < 50 && err == nil; i++ {
				_, err = sc.Write(make([]byte, 1024))
				time.Sleep(time.Millisecond)
			}
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "write" {
				t.Fatalf("Write to reset peer: %v; want a write OpError", err)
			}
		}},
		{"write deadline", func(t *testing.T, sc *sysConn, _ *net.TCPConn) {
			sc.SetWriteDeadline(time.Now().Add(20 * time.Millisecond)) //nolint:errcheck
			var err error
			for err == nil { // the peer never reads: the buffers fill, then the deadline hits
				_, err = sc.Write(make([]byte, 64<<10))
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Write: %v; want a deadline error", err)
			}
		}},
		{"half close reaches the peer", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			sc.Write([]byte("bye")) //nolint:errcheck
			if err := sc.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if b, err := io.ReadAll(peer); err != nil || string(b) != "bye" {
				t.Fatalf("peer read %q, %v", b, err)
			}
		}},
		{"asTCP unwraps", func(t *testing.T, sc *sysConn, _ *net.TCPConn) {
			if tc, ok := asTCP(sc); !ok || tc != sc.TCPConn {
				t.Fatalf("asTCP(sysConn) = %v, %v", tc, ok)
			}
			if tc, ok := asTCP(unwrap(sc)); !ok || tc != sc.TCPConn {
				t.Fatal("unwrap(sysConn) is not its TCPConn")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, peer := sysPair(t)
			tt.run(t, sc, peer)
		})
	}
}

func TestNewSysConnLeavesOthers(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if c := newSysConn(a); c != a {
		t.Fatalf("newSysConn(pipe) = %T, want the pipe unchanged", c)
	}
	if _, ok := asTCP(a); ok {
		t.Fatal("asTCP(pipe) reported a TCP connection")
	}
}

// A read and a write allocate nothing: they run once per request on both sides.
func TestSysConnAllocs(t *testing.T) {
	sc, peer := sysPair(t)
	msg, buf := []byte("0123456789"), make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := sc.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(sc, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per write+read round trip; want 0", allocs)
	}
}
