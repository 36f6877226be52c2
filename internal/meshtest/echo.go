package meshtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Echo is an HTTP backend on 127.0.0.1 speaking HTTP/1.1 and h2c on one port. Every
// response carries what the backend saw, so tests can assert on what a proxy forwarded:
//
//	X-Echo-Method, X-Echo-Path, X-Echo-Proto      the request line
//	X-Echo-Xfcc                                    the x-forwarded-client-cert it got
//	X-Echo-Xfcc-Count                              how many XFCC values it got
//	X-Echo-Chunked                                 "true" if the request body was chunked
//
// The body echoes the request body; with ?size=N it is N bytes of 'x' instead, and with
// ?sleep=DURATION the response waits that long first.
type Echo struct {
	Addr netip.AddrPort
	// URL is "http://ADDR".
	URL string
}

// StartEcho starts an Echo that stops when the test ends.
func StartEcho(tb testing.TB) *Echo {
	tb.Helper()
	l := listen(tb)
	srv := &http.Server{Handler: http.HandlerFunc(echoHandler), ReadHeaderTimeout: 10 * time.Second}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	serve(tb, func() error { return srv.Serve(l) }, func() { srv.Close() })
	addr := l.Addr().(*net.TCPAddr).AddrPort()
	return &Echo{Addr: addr, URL: "http://" + addr.String()}
}

func echoHandler(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Echo-Method", r.Method)
	h.Set("X-Echo-Path", r.URL.RequestURI())
	h.Set("X-Echo-Proto", r.Proto)
	h.Set("X-Echo-Chunked", strconv.FormatBool(slices.Contains(r.TransferEncoding, "chunked")))
	xfcc := r.Header.Values("X-Forwarded-Client-Cert")
	h.Set("X-Echo-Xfcc-Count", strconv.Itoa(len(xfcc)))
	if len(xfcc) > 0 {
		h.Set("X-Echo-Xfcc", xfcc[0])
	}
	q := r.URL.Query()
	if d, err := time.ParseDuration(q.Get("sleep")); err == nil {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if s := q.Get("size"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 64<<20 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		h.Set("Content-Length", strconv.Itoa(n))
		buf := make([]byte, min(n, 32<<10))
		for i := range buf {
			buf[i] = 'x'
		}
		for n > 0 {
			k := min(n, len(buf))
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			n -= k
		}
		return
	}
	// Read all first: Go's HTTP/1 server stops reading the body once the response
	// has begun.
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Write(b) //nolint:errcheck // client may go away
}

// StartTCPEcho starts an opaque TCP server that writes back what it reads, until the
// client half-closes; it stops when the test ends.
func StartTCPEcho(tb testing.TB) netip.AddrPort {
	tb.Helper()
	l := listen(tb)
	var wg sync.WaitGroup
	serve(tb, func() error {
		for {
			c, err := l.Accept()
			if err != nil {
				return err
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c) //nolint:errcheck // test echo
			})
		}
	}, func() { l.Close(); wg.Wait() })
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// StartUpgradeEcho starts an HTTP/1.1 server on 127.0.0.1 that answers every request
// with 101 Switching Protocols (Upgrade: echo) and then writes back whatever it reads,
// for tests of protocol upgrades (WebSocket-like) through proxies. It stops when the
// test ends.
func StartUpgradeEcho(tb testing.TB) netip.AddrPort {
	tb.Helper()
	l := listen(tb)
	var wg sync.WaitGroup
	serve(tb, func() error {
		for {
			c, err := l.Accept()
			if err != nil {
				return err
			}
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for { // the request head
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"); err != nil {
					return
				}
				io.Copy(c, br) //nolint:errcheck // test echo
			})
		}
	}, func() { l.Close(); wg.Wait() })
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// GRPCEcho is a gRPC server on 127.0.0.1 (h2c) with the standard health service;
// Health lets a test change statuses to drive streaming Watch calls.
type GRPCEcho struct {
	Addr   netip.AddrPort
	Health *health.Server
}

// StartGRPCEcho starts a GRPCEcho that stops when the test ends.
func StartGRPCEcho(tb testing.TB) *GRPCEcho {
	tb.Helper()
	l := listen(tb)
	s := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	serve(tb, func() error { return s.Serve(l) }, s.Stop)
	return &GRPCEcho{Addr: l.Addr().(*net.TCPAddr).AddrPort(), Health: hs}
}

func listen(tb testing.TB) net.Listener {
	tb.Helper()
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen on 127.0.0.1:0: %v", err)
	}
	return l
}

// serve runs fn until the test ends, then calls stop and checks fn returned.
func serve(tb testing.TB, fn func() error, stop func()) {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	tb.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
				tb.Logf("test server stopped: %v", err)
			}
		case <-time.After(10 * time.Second):
			tb.Errorf("%s", fmt.Sprint("test server did not stop within 10s"))
		}
	})
}
