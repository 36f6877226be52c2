package proxy

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
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

// selfSignedTLS is a throwaway server certificate for a TLS pair over loopback.
func selfSignedTLS(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// expectNothing fails if c delivers anything within d.
func expectNothing(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d)) //nolint:errcheck
	defer c.SetReadDeadline(time.Time{}) //nolint:errcheck
	var b [1]byte
	if n, err := c.Read(b[:]); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("peer received %d bytes (%v) before the read that should write them", n, err)
	}
}

// answer reads want from c and then writes reply, in the background.
func answer(t *testing.T, c net.Conn, want, reply []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil {
			done <- err
			return
		}
		if !bytes.Equal(got, want) {
			done <- fmt.Errorf("peer got %q, want %q", got, want)
			return
		}
		_, err := c.Write(reply)
		done <- err
	}()
	return done
}

// expectReply reads want from c within 10 s, then waits for the peer's side (answer).
func expectReply(t *testing.T, c net.Conn, want string, peerDone <-chan error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("Read = %q, %v; want %q", got, err, want)
	}
	if err := <-peerDone; err != nil {
		t.Fatal(err)
	}
}

// TestFlushBeforeRead: an upstream request's last write is made by the read that waits
// for the answer, in order with any later write, and fails that read when it fails.
func TestFlushBeforeRead(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, sc *sysConn, peer *net.TCPConn)
	}{
		{"the read makes the write, then gets the answer", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			bw := bufio.NewWriterSize(sc, bufSize)
			bw.WriteString("GET / HTTP/1.1\r\n\r\n") //nolint:errcheck
			if err := flushBeforeRead(bw, sc); err != nil || bw.Buffered() != 0 {
				t.Fatalf("flushBeforeRead = %v, %d bytes left buffered", err, bw.Buffered())
			}
			expectNothing(t, peer, 30*time.Millisecond)
			done := answer(t, peer, []byte("GET / HTTP/1.1\r\n\r\n"), []byte("HTTP/1.1 204 No Content\r\n\r\n"))
			expectReply(t, sc, "HTTP/1.1 204 No Content\r\n\r\n", done)
		}},
		{"a later write goes after it", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			bw := bufio.NewWriterSize(sc, bufSize)
			bw.WriteString("one,") //nolint:errcheck
			if err := flushBeforeRead(bw, sc); err != nil {
				t.Fatal(err)
			}
			if _, err := sc.Write([]byte("two")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 7)
			if _, err := io.ReadFull(peer, got); err != nil || string(got) != "one,two" {
				t.Fatalf("peer got %q, %v; want \"one,two\"", got, err)
			}
		}},
		{"after part of the request went out, the rest goes at once", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			// The peer may answer from the part it has (a 413 to a body still coming);
			// that answer could arrive before the read's readiness reset.
			if _, err := sc.Write([]byte("POST / HTTP/1.1\r\n")); err != nil {
				t.Fatal(err)
			}
			bw := bufio.NewWriterSize(sc, bufSize)
			bw.WriteString("\r\nbody") //nolint:errcheck
			if err := flushBeforeRead(bw, sc); err != nil {
				t.Fatal(err)
			}
			want := "POST / HTTP/1.1\r\n\r\nbody"
			got := make([]byte, len(want))
			peer.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
			if _, err := io.ReadFull(peer, got); err != nil || string(got) != want {
				t.Fatalf("peer got %q, %v; want %q without a read on our side", got, err, want)
			}
			// A read starts the next exchange: its request may be deferred again.
			peer.Write([]byte("HTTP/1.1 204 No Content\r\n\r\n")) //nolint:errcheck
			if _, err := sc.Read(make([]byte, 64)); err != nil {
				t.Fatal(err)
			}
			bw.WriteString("GET / HTTP/1.1\r\n\r\n") //nolint:errcheck
			if err := flushBeforeRead(bw, sc); err != nil {
				t.Fatal(err)
			}
			expectNothing(t, peer, 30*time.Millisecond)
		}},
		{"a flush with nothing to write leaves no deferral behind", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			bw := bufio.NewWriterSize(sc, bufSize)
			if err := flushBeforeRead(bw, sc); err != nil { // nothing buffered: no flag left behind
				t.Fatal(err)
			}
			if _, err := sc.Write([]byte("now")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 3)
			peer.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
			if _, err := io.ReadFull(peer, got); err != nil || string(got) != "now" {
				t.Fatalf("peer got %q, %v; a plain Write must go at once", got, err)
			}
		}},
		{"more than the bound goes at once", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			big := bytes.Repeat([]byte("x"), maxDeferredWrite+1)
			bw := bufio.NewWriterSize(sc, 2*maxDeferredWrite)
			bw.Write(big) //nolint:errcheck
			if err := flushBeforeRead(bw, sc); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(big))
			peer.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
			if _, err := io.ReadFull(peer, got); err != nil {
				t.Fatalf("peer read: %v; a write over the bound must not wait for a read", err)
			}
		}},
		{"a failed write is the read's error", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			peer.SetLinger(0) //nolint:errcheck // close sends RST
			peer.Close()
			time.Sleep(20 * time.Millisecond) // the RST arrives
			bw := bufio.NewWriterSize(sc, bufSize)
			bw.WriteString("GET / HTTP/1.1\r\n\r\n") //nolint:errcheck
			if err := flushBeforeRead(bw, sc); err != nil {
				t.Fatal(err)
			}
			sc.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
			_, err := sc.Read(make([]byte, 64))
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "write" || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Read after a deferred write to a reset peer: %v; want the write's OpError", err)
			}
		}},
		{"a full send buffer: the rest is written before the read waits", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			// Small buffers, filled while the peer does not read, so that the deferred
			// write cannot go out whole.
			if err := sc.SetWriteBuffer(4096); err != nil {
				t.Fatal(err)
			}
			if err := peer.SetReadBuffer(4096); err != nil {
				t.Fatal(err)
			}
			filler := bytes.Repeat([]byte("f"), 64<<10)
			var sent int
			sc.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)) //nolint:errcheck
			for {
				n, err := sc.Write(filler)
				sent += n
				if err != nil {
					break
				}
			}
			sc.SetWriteDeadline(time.Time{}) //nolint:errcheck
			// A read in between, as an exchange's answer would be: the filler is not
			// part of the request, which may then be deferred.
			peer.Write([]byte("x")) //nolint:errcheck
			if _, err := sc.Read(make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			req := bytes.Repeat([]byte("r"), maxDeferredWrite)
			bw := bufio.NewWriterSize(sc, maxDeferredWrite)
			bw.Write(req) //nolint:errcheck
			// A flush that writes at once would wait for room the peer does not make.
			sc.SetWriteDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
			if err := flushBeforeRead(bw, sc); err != nil {
				t.Fatalf("flushBeforeRead: %v; the write should have been left to the read", err)
			}
			sc.SetWriteDeadline(time.Time{}) //nolint:errcheck
			// The peer gets the filler, then the deferred bytes, in order and whole.
			done := answer(t, peer, append(bytes.Repeat([]byte("f"), sent), req...), []byte("ok"))
			expectReply(t, sc, "ok", done)
		}},
		{"under TLS", func(t *testing.T, sc *sysConn, peer *net.TCPConn) {
			cert := selfSignedTLS(t)
			srv := tls.Server(peer, &tls.Config{Certificates: []tls.Certificate{cert}})
			cli := tls.Client(sc, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a throwaway loopback pair
			errc := make(chan error, 1)
			go func() { errc <- srv.Handshake() }()
			if err := cli.Handshake(); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			// The client's Finished went out last: an exchange's answer is read first,
			// as on a pooled connection's second request.
			go srv.Write([]byte("hi")) //nolint:errcheck
			if _, err := io.ReadFull(cli, make([]byte, 2)); err != nil {
				t.Fatal(err)
			}
			bw := bufio.NewWriterSize(cli, bufSize)
			bw.WriteString("ping") //nolint:errcheck
			if err := flushBeforeRead(bw, cli); err != nil {
				t.Fatal(err)
			}
			expectNothing(t, srv, 30*time.Millisecond)
			expectReply(t, cli, "pong", answer(t, srv, []byte("ping"), []byte("pong")))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, peer := sysPair(t)
			tt.run(t, sc, peer)
		})
	}
}

// A deferred round trip allocates nothing either, once the connection has its buffer.
func TestFlushBeforeReadAllocs(t *testing.T) {
	sc, peer := sysPair(t)
	bw := bufio.NewWriterSize(sc, bufSize)
	msg, buf := []byte("0123456789"), make([]byte, 64)
	go func() { // echoes each message until the connection closes
		var b [10]byte
		for {
			if _, err := io.ReadFull(peer, b[:]); err != nil {
				return
			}
			if _, err := peer.Write(b[:]); err != nil {
				return
			}
		}
	}()
	allocs := testing.AllocsPerRun(200, func() {
		bw.Write(msg) //nolint:errcheck
		if err := flushBeforeRead(bw, sc); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(sc, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
			t.Fatalf("echo = %q, %v", buf[:len(msg)], err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per deferred round trip; want 0", allocs)
	}
}
