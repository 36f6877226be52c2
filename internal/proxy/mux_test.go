package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/proxy"
)

const alpnMux = "meshguard-h2mux"

// muxDial opens a mesh mTLS connection to a server sidecar's inbound port, offering
// only the multiplexing protocol.
func muxDial(t *testing.T, addr netip.AddrPort, svid *x509svid.SVID) *tls.Conn {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{Certificates: []tls.Certificate{tlsCert(svid)}, InsecureSkipVerify: true, NextProtos: []string{alpnMux}}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	tc := c.(*tls.Conn)
	if p := tc.ConnectionState().NegotiatedProtocol; p != alpnMux {
		t.Fatalf("negotiated %q, want %q", p, alpnMux)
	}
	t.Cleanup(func() { tc.Close() })
	return tc
}

// tlsCert turns an SVID into a certificate for crypto/tls.
func tlsCert(svid *x509svid.SVID) tls.Certificate {
	cert := tls.Certificate{PrivateKey: svid.PrivateKey}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert
}

// peerListener is a hand-made peer on 127.0.0.1 with the server identity's
// certificate, negotiating only alpn; it closes when the test ends.
func peerListener(t *testing.T, ca *testCA, alpn string) net.Listener {
	t.Helper()
	cert := tlsCert(ca.svid(t, serverPath, time.Time{}, time.Time{}))
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{alpn}, ClientAuth: tls.RequireAnyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// clientSidecarTo starts a client sidecar whose registry says echoHost:80 is served at
// addr by the server identity: a peer the test stands up by hand.
func clientSidecarTo(t *testing.T, ca *testCA, addr net.Addr, opts ...func(*meshtest.SidecarOptions)) *meshtest.Sidecar {
	t.Helper()
	port := uint32(addr.(*net.TCPAddr).Port)
	o := meshtest.SidecarOptions{
		Certs:    newCertSource(ca.svid(t, clientPath, time.Time{}, time.Time{}), ca.bundle()),
		Apps:     []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")},
		Outbound: []proxy.ExplicitOutbound{{Host: echoHost, Port: 80}},
		Policy: &proxy.Policy{Services: []proxy.Service{{
			Host: echoHost, Ports: []proxy.ServicePort{{Number: 80, Name: "http"}},
			Endpoints: []proxy.Endpoint{{Address: "127.0.0.1", Ports: map[string]uint32{"http": port}, Identity: ca.id(serverPath)}},
		}}},
	}
	for _, f := range opts {
		f(&o)
	}
	return meshtest.StartSidecar(t, o)
}

// TestMuxServerWithStandardClient: the server sidecar's multiplexed port is plain
// RFC 9113 HTTP/2: x/net/http2's own client gets the same service a client sidecar
// does, including flow control beyond both receive windows and concurrent streams.
// serveConns runs handle on each connection l accepts, in its own goroutine, until l
// is closed; each connection is closed when handle returns, and gets a 10 s deadline
// so that a stuck test peer cannot outlive the test for long.
func serveConns(l net.Listener, handle func(c net.Conn)) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
				handle(c)
			}()
		}
	}()
}

func TestMuxServerWithStandardClient(t *testing.T) {
	checkNoLeaks(t)
	echo := meshtest.StartEcho(t)
	pr := startPair(t, pairOptions{app: echo.Addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}})
	tc := muxDial(t, pr.server.Inbound, pr.ca.svid(t, clientPath, time.Time{}, time.Time{}))
	cc, err := (&http2.Transport{}).NewClientConn(tc)
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path string, body []byte, hdr map[string]string) (*http.Response, []byte) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, _ := http.NewRequest(method, "https://echo.default.svc.cluster.local"+path, rd)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: body: %v", method, path, err)
		}
		return resp, b
	}
	t.Run("GET reaches the app as HTTP/1.1", func(t *testing.T) {
		resp, body := do("GET", "/a?size=3", nil, nil)
		if resp.StatusCode != 200 || string(body) != "xxx" || resp.Header.Get("X-Echo-Proto") != "HTTP/1.1" || resp.Header.Get("X-Echo-Path") != "/a?size=3" {
			t.Errorf("GET = %d %q, app saw %s %s; want 200 \"xxx\" over HTTP/1.1 at /a?size=3", resp.StatusCode, body,
				resp.Header.Get("X-Echo-Proto"), resp.Header.Get("X-Echo-Path"))
		}
	})
	t.Run("forged XFCC replaced by the verified peer", func(t *testing.T) {
		resp, _ := do("GET", "/", nil, map[string]string{"X-Forwarded-Client-Cert": "URI=spiffe://cluster.local/ns/default/sa/admin"})
		if n, x := resp.Header.Get("X-Echo-Xfcc-Count"), resp.Header.Get("X-Echo-Xfcc"); n != "1" || !strings.HasSuffix(x, "URI=spiffe://cluster.local"+clientPath) {
			t.Errorf("app saw %s XFCC: %q; want 1 naming the client", n, x)
		}
	})
	t.Run("bodies larger than both receive windows", func(t *testing.T) {
		up := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16) // 3 MiB > 1 MiB connection window
		resp, body := do("POST", "/up", up, nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, up) {
			t.Errorf("POST 3 MiB = %d with %d bytes echoed, want 200 with all of it", resp.StatusCode, len(body))
		}
		// Without a length the server sidecar sends it to the app chunked, in chunks
		// of its connection buffer's size.
		req, _ := http.NewRequest("POST", "https://echo.default.svc.cluster.local/up", io.MultiReader(bytes.NewReader(up)))
		if r, err := cc.RoundTrip(req); err != nil {
			t.Errorf("POST 3 MiB without a length: %v", err)
		} else {
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode != 200 || !bytes.Equal(b, up) || r.Header.Get("X-Echo-Chunked") != "true" {
				t.Errorf("POST 3 MiB without a length = %d with %d bytes echoed, chunked to the app: %q; want 200 with all of it, chunked",
					r.StatusCode, len(b), r.Header.Get("X-Echo-Chunked"))
			}
		}
		resp, body = do("GET", fmt.Sprintf("/down?size=%d", 5<<20), nil, nil)
		if resp.StatusCode != 200 || len(body) != 5<<20 {
			t.Errorf("GET 5 MiB = %d with %d bytes, want 200 with all of it", resp.StatusCode, len(body))
		}
	})
	t.Run("concurrent streams on one connection", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := range 64 {
			wg.Go(func() {
				req, _ := http.NewRequest("GET", fmt.Sprintf("https://echo/c?size=%d&sleep=20ms", i), nil)
				resp, err := cc.RoundTrip(req)
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || len(b) != i {
					errs <- fmt.Errorf("stream %d: %d with %d bytes", i, resp.StatusCode, len(b))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// rawMux is a hand-driven HTTP/2 client connection, for what a well-behaved client
// never sends.
type rawMux struct {
	t   *testing.T
	c   *tls.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func newRawMux(t *testing.T, addr netip.AddrPort, svid *x509svid.SVID) *rawMux {
	tc := muxDial(t, addr, svid)
	r := &rawMux{t: t, c: tc, fr: http2.NewFramer(tc, tc)}
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.enc = hpack.NewEncoder(&r.buf)
	io.WriteString(tc, http2.ClientPreface) //nolint:errcheck // the reads below fail
	r.fr.WriteSettings()                    //nolint:errcheck
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	return r
}

func (r *rawMux) headers(id uint32, end bool, fields ...string) {
	r.buf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}) //nolint:errcheck
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.buf.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// outcome reads frames until stream id gets a response head or a reset, or the
// connection ends; it returns "status 200", "reset PROTOCOL_ERROR" or "goaway …".
func (r *rawMux) outcome(id uint32) string {
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return "read error: " + err.Error()
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return "status " + f.PseudoValue("status")
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "reset " + f.ErrCode.String()
			}
		case *http2.GoAwayFrame:
			return "goaway " + f.ErrCode.String()
		}
	}
}

// TestMuxServerRefusesMalformed: requests HTTP/2 calls malformed, and those that could
// not be written safely as an HTTP/1.1 request line, are reset before admission; the
// app never sees them, and the connection keeps serving good requests.
func TestMuxServerRefusesMalformed(t *testing.T) {
	checkNoLeaks(t)
	echo := meshtest.StartEcho(t)
	pr := startPair(t, pairOptions{app: echo.Addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}})
	r := newRawMux(t, pr.server.Inbound, pr.ca.svid(t, clientPath, time.Time{}, time.Time{}))
	base := []string{":method", "GET", ":scheme", "https", ":authority", "echo"}
	cases := []struct {
		name   string
		end    bool
		fields []string
		want   string
	}{
		{"good request", true, append(base, ":path", "/ok"), "status 200"},
		{"missing :path", true, base, "reset PROTOCOL_ERROR"},
		{"space in :path (request-line injection)", true, append(base, ":path", "/a HTTP/1.1"), "reset PROTOCOL_ERROR"},
		{"connection header", true, append(base, ":path", "/", "connection", "close"), "reset PROTOCOL_ERROR"},
		{"transfer-encoding (smuggling)", false, append(base, ":path", "/", "transfer-encoding", "chunked"), "reset PROTOCOL_ERROR"},
		{"te other than trailers", true, append(base, ":path", "/", "te", "gzip"), "reset PROTOCOL_ERROR"},
		{"content-length without a body", true, append(base, ":path", "/", "content-length", "5"), "reset PROTOCOL_ERROR"},
		{"CONNECT", true, []string{":method", "CONNECT", ":authority", "echo:80"}, "reset PROTOCOL_ERROR"},
		{"unknown pseudo-header", true, append(base, ":path", "/", ":protocol", "websocket"), "reset PROTOCOL_ERROR"},
		{"upper-case header name", true, append(base, ":path", "/", "X-Upper", "1"), "reset PROTOCOL_ERROR"},
		{"still serving after all that", true, append(base, ":path", "/ok"), "status 200"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := uint32(2*i + 1)
			r.headers(id, tc.end, tc.fields...)
			if got := r.outcome(id); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestMuxServerBoundsConcurrentStreams: a stream counts against the limit until its
// request is done, even when the client resets it at once, so rapid resets cannot
// make the sidecar work on more than 256 requests of one connection (CVE-2023-44487).
func TestMuxServerBoundsConcurrentStreams(t *testing.T) {
	checkNoLeaks(t)
	echo := meshtest.StartEcho(t)
	pr := startPair(t, pairOptions{app: echo.Addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}})
	r := newRawMux(t, pr.server.Inbound, pr.ca.svid(t, clientPath, time.Time{}, time.Time{}))
	const n = 300
	for i := range n {
		id := uint32(2*i + 1)
		r.headers(id, true, ":method", "GET", ":scheme", "https", ":authority", "echo", ":path", "/slow?sleep=300ms")
		r.fr.WriteRSTStream(id, http2.ErrCodeCancel) //nolint:errcheck
	}
	refused := 0
	deadline := time.Now().Add(5 * time.Second)
	r.c.SetReadDeadline(deadline)
	for refused < n-256 {
		f, err := r.fr.ReadFrame()
		if err != nil {
			break
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.ErrCode == http2.ErrCodeRefusedStream {
			refused++
		}
	}
	if refused < n-256 {
		t.Errorf("%d streams refused, want at least %d of %d (the limit is 256 in flight)", refused, n-256, n)
	}
}

// TestMuxFallsBackToHTTP1: a peer that does not offer the multiplexing protocol (an
// Envoy sidecar offers istio-http/1.1) is served over pooled HTTP/1.1 on the same
// handshake.
func TestMuxFallsBackToHTTP1(t *testing.T) {
	checkNoLeaks(t)
	ca := newTestCA(t, "cluster.local")
	l := peerListener(t, ca, "istio-http/1.1")
	// A hand-rolled HTTP/1.1 server: net/http's closes connections whose ALPN protocol
	// it has no handler for, and istio-http/1.1 is not one of its own.
	var mu sync.Mutex
	var alpns []string
	serveConns(l, func(c net.Conn) {
		tc := c.(*tls.Conn)
		br := bufio.NewReader(tc)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body) //nolint:errcheck
			mu.Lock()
			alpns = append(alpns, tc.ConnectionState().NegotiatedProtocol+" "+req.Proto)
			mu.Unlock()
			io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\nplain old HTTP/1.1") //nolint:errcheck
		}
	})
	client := clientSidecarTo(t, ca, l.Addr())
	c := httpClient()
	for range 3 {
		resp, body := get(t, c, "http://"+client.Outbound[0].String()+"/x", nil)
		if resp.StatusCode != 200 || body != "plain old HTTP/1.1" {
			t.Fatalf("GET = %d %q", resp.StatusCode, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(alpns) != 3 {
		t.Errorf("peer served %d requests, want 3", len(alpns))
	}
	for _, a := range alpns {
		if a != "istio-http/1.1 HTTP/1.1" {
			t.Errorf("peer saw %q, want istio-http/1.1 HTTP/1.1", a)
		}
	}
}

// TestMuxSharesConnections: many app connections and requests ride one multiplexed
// connection between the sidecars.
func TestMuxSharesConnections(t *testing.T) {
	checkNoLeaks(t)
	echo := meshtest.StartEcho(t)
	pr := startPair(t, pairOptions{app: echo.Addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			c := httpClient() // its own downstream connection
			defer c.CloseIdleConnections()
			for range 10 {
				resp, err := c.Get(pr.outbound + "/s?size=1024")
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || len(b) != 1024 {
					errs <- fmt.Errorf("GET = %d with %d bytes", resp.StatusCode, len(b))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var conns int
	var reqs int64
	for _, ci := range pr.server.Proxy.Connections() {
		if ci.Direction == "inbound" && ci.PeerSPIFFEID == "spiffe://cluster.local"+clientPath {
			conns++
			reqs += ci.Requests
			if ci.Protocol != "h2" {
				t.Errorf("inbound connection protocol %q, want h2", ci.Protocol)
			}
		}
	}
	if conns != 1 || reqs < 320 {
		t.Errorf("server sidecar has %d connections from the client carrying %d requests, want 1 carrying 320", conns, reqs)
	}
}

// TestMuxTrailersAndStreaming: a chunked response with trailers crosses HTTP/1.1 →
// HTTP/2 → HTTP/1.1 intact, and each chunk reaches the client before the next is sent.
func TestMuxTrailersAndStreaming(t *testing.T) {
	checkNoLeaks(t)
	step := make(chan struct{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "first;") //nolint:errcheck
		w.(http.Flusher).Flush()
		select {
		case <-step:
		case <-time.After(5 * time.Second):
		}
		io.WriteString(w, "second") //nolint:errcheck
		w.Header().Set("X-Checksum", "abc123")
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l) //nolint:errcheck
	t.Cleanup(func() { srv.Close() })
	pr := startPair(t, pairOptions{app: l.Addr().(*net.TCPAddr).AddrPort(), serverPolicy: proxy.Policy{PeerAuthn: strict()}})
	resp, err := httpClient().Get(pr.outbound + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("first;"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first;" {
		t.Fatalf("first chunk = %q, %v; want it before the app sends the second", first, err)
	}
	close(step)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Fatalf("rest = %q, %v", rest, err)
	}
	if got := resp.Trailer.Get("X-Checksum"); got != "abc123" {
		t.Errorf("trailer X-Checksum = %q, want abc123", got)
	}
}

// TestMuxPolicySwapKeepsStreams: a policy change that replaces the route retires its
// multiplexed connections without cutting the requests in flight on them.
func TestMuxPolicySwapKeepsStreams(t *testing.T) {
	checkNoLeaks(t)
	echo := meshtest.StartEcho(t)
	pr := startPair(t, pairOptions{app: echo.Addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}})
	c := httpClient()
	get(t, c, pr.outbound+"/warm", nil) // the multiplexed connection exists
	done := make(chan error, 1)
	go func() {
		// A POST with a body: not retried elsewhere if its stream were cut.
		resp, err := c.Post(pr.outbound+"/slow?sleep=400ms", "text/plain", strings.NewReader("payload"))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "payload" {
				err = fmt.Errorf("POST = %d %q", resp.StatusCode, b)
			}
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // the slow request is in flight
	ep := proxy.Endpoint{Address: "127.0.0.1", Ports: map[string]uint32{"http": uint32(pr.server.Inbound.Port())}, Identity: pr.ca.id(serverPath)}
	err := pr.client.Proxy.SetPolicy(&proxy.Policy{Services: []proxy.Service{{
		Host: echoHost, Ports: []proxy.ServicePort{{Number: 80, Name: "http"}},
		Endpoints: []proxy.Endpoint{ep, ep}, // another endpoint list: a new route
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("request in flight across the policy change: %v", err)
	}
	// The app's keep-alive connection still holds the old route: its next request
	// gets a connection of its own that closes after it, not one left open for good.
	resp, _ := get(t, c, pr.outbound+"/after", nil)
	if resp.StatusCode != 200 {
		t.Errorf("GET after the change = %d", resp.StatusCode)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var up int
		for _, ci := range pr.client.Proxy.Connections() {
			if ci.Upstream {
				up++
			}
		}
		if up == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d upstream connections of the replaced route still open", up)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMuxNoSmuggling: DATA beyond a stream's content-length never reaches an
// HTTP/1.1 connection, where it would be read as another message — neither toward
// the app (a request past authorization) nor back toward the calling app.
func TestMuxNoSmuggling(t *testing.T) {
	checkNoLeaks(t)
	t.Run("request body longer than content-length", func(t *testing.T) {
		var mu sync.Mutex
		var paths []string
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body) //nolint:errcheck
			mu.Lock()
			paths = append(paths, r.URL.Path)
			mu.Unlock()
		}), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l) //nolint:errcheck
		t.Cleanup(func() { srv.Close() })
		pr := startPair(t, pairOptions{app: l.Addr().(*net.TCPAddr).AddrPort(), serverPolicy: proxy.Policy{PeerAuthn: strict()}})
		r := newRawMux(t, pr.server.Inbound, pr.ca.svid(t, clientPath, time.Time{}, time.Time{}))
		r.headers(1, false, ":method", "POST", ":scheme", "https", ":authority", "echo", ":path", "/upload", "content-length", "5")
		r.fr.WriteData(1, true, []byte("helloGET /admin HTTP/1.1\r\nHost: echo\r\n\r\n")) //nolint:errcheck
		if got := r.outcome(1); got == "status 200" {
			t.Errorf("stream 1 = %s, want it refused", got)
		}
		// The app has had its chance to read the smuggled request by now.
		r.headers(3, true, ":method", "GET", ":scheme", "https", ":authority", "echo", ":path", "/after")
		if got := r.outcome(3); got != "status 200" {
			t.Fatalf("stream 3 = %s, want status 200", got)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, p := range paths {
			if p == "/admin" {
				t.Errorf("the app received the smuggled request; it saw %v", paths)
			}
		}
	})
	t.Run("response body longer than content-length", func(t *testing.T) {
		ca := newTestCA(t, "cluster.local")
		// A peer that negotiates the multiplexing protocol and lies about a length.
		l := peerListener(t, ca, alpnMux)
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			if _, err := br.Discard(len(http2.ClientPreface)); err != nil {
				return
			}
			fr := http2.NewFramer(c, br)
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			fr.WriteSettings() //nolint:errcheck
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					return
				}
				if h, ok := f.(*http2.MetaHeadersFrame); ok {
					var buf bytes.Buffer
					enc := hpack.NewEncoder(&buf)
					enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})                                             //nolint:errcheck
					enc.WriteField(hpack.HeaderField{Name: "content-length", Value: "2"})                                        //nolint:errcheck
					fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: buf.Bytes(), EndHeaders: true}) //nolint:errcheck
					fr.WriteData(h.StreamID, true, []byte("okHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"))               //nolint:errcheck
				}
			}
		}()
		client := clientSidecarTo(t, ca, l.Addr())
		c, br := rawConn(t, client.Outbound[0])
		io.WriteString(c, "GET /a HTTP/1.1\r\nHost: echo\r\n\r\nGET /b HTTP/1.1\r\nHost: echo\r\n\r\n") //nolint:errcheck
		all, _ := io.ReadAll(br)                                                                        // the sidecar closes the connection
		if bytes.Contains(all, []byte("forged")) {
			t.Errorf("the calling app received the bytes past content-length:\n%s", all)
		}
	})
}

// TestMuxHealthCheck: a multiplexed connection whose peer has gone silent is probed
// with a PING and closed when nothing answers, so its requests fail instead of hanging;
// a live peer answers the PING and keeps its connection.
func TestMuxHealthCheck(t *testing.T) {
	checkNoLeaks(t)
	short := func(o *meshtest.SidecarOptions) {
		o.H2ReadIdleTimeout, o.H2PingTimeout = 100*time.Millisecond, 100*time.Millisecond
	}
	t.Run("a silent peer fails the request", func(t *testing.T) {
		ca := newTestCA(t, "cluster.local")
		l := peerListener(t, ca, alpnMux)
		// Accepts, reads everything, answers nothing (not even PING).
		serveConns(l, func(c net.Conn) { io.Copy(io.Discard, c) }) //nolint:errcheck
		client := clientSidecarTo(t, ca, l.Addr(), short)
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
		start := time.Now()
		resp, err := c.Get("http://" + client.Outbound[0].String() + "/x")
		if err != nil {
			t.Fatalf("GET: %v (the request hung instead of failing)", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Errorf("GET = %d, want 503", resp.StatusCode)
		}
		t.Logf("failed after %v", time.Since(start))
	})
	t.Run("a live peer keeps its connection", func(t *testing.T) {
		echo := meshtest.StartEcho(t)
		pr := startPair(t, pairOptions{app: echo.Addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}})
		ca := pr.ca
		client := clientSidecarTo(t, ca, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(pr.server.Inbound.Port())}, short)
		c := httpClient()
		upstream := func() []uint64 {
			var ids []uint64
			for _, ci := range client.Proxy.Connections() {
				if ci.Upstream {
					ids = append(ids, ci.ID)
				}
			}
			return ids
		}
		get(t, c, "http://"+client.Outbound[0].String()+"/a", nil)
		before := upstream()
		time.Sleep(600 * time.Millisecond) // several idle periods: PINGs go out and come back
		resp, _ := get(t, c, "http://"+client.Outbound[0].String()+"/b", nil)
		after := upstream()
		if resp.StatusCode != 200 || len(before) != 1 || len(after) != 1 || before[0] != after[0] {
			t.Errorf("GET = %d; upstream connections before %v, after %v: want the same one", resp.StatusCode, before, after)
		}
	})
}

// TestMuxRequestAllocs bounds what the two sidecars allocate per multiplexed request.
// The client and the app are raw loopback connections that allocate nothing, so the
// count is the sidecars' own: the garbage they make sets how often the collector runs
// and, with the sidecar's GC target, how much memory it holds under load.
func TestMuxRequestAllocs(t *testing.T) {
	if meshtest.RaceEnabled {
		t.Skip("allocation counts do not hold under the race detector (sync.Pool drops items)")
	}
	const body = 1024
	resp := fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", body, strings.Repeat("x", body))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	serveConns(ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		for skipHead(br) == nil {
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
	pr := startPair(t, pairOptions{app: netip.MustParseAddrPort(ln.Addr().String()), serverPolicy: proxy.Policy{PeerAuthn: strict()}})
	c, err := net.Dial("tcp", pr.outboundAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /echo?size=1024 HTTP/1.1\r\nHost: " + echoHost + "\r\nUser-Agent: allocs-test\r\nAccept: */*\r\n\r\n")
	got := make([]byte, body)
	roundTrip := func() {
		c.SetDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		n, err := readHeadLength(br)
		if err != nil || n != body {
			t.Fatalf("response: content-length %d, %v; want %d", n, err, body)
		}
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 { // connections, pools and caches warm up
		roundTrip()
	}
	// 4: crypto/tls's record read (one per sidecar) and x/net's HEADERS frame (one per
	// direction). The response's status code written with strconv.Itoa was a fifth.
	// Before the sidecars decoded header blocks themselves and reused their records,
	// buffers and field strings, it was about 40.
	const max = 4
	if n := testing.AllocsPerRun(500, roundTrip); n > max {
		t.Errorf("%.1f allocations per request in the two sidecars; want at most %d", n, max)
	}
}

// skipHead reads one HTTP/1.1 request head without allocating.
func skipHead(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			return nil
		}
	}
}

// readHeadLength reads an HTTP/1.1 response head without allocating and returns its
// Content-Length.
func readHeadLength(br *bufio.Reader) (int, error) {
	n := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			return n, nil
		}
		const cl = "content-length:"
		if len(line) > len(cl) && bytes.EqualFold(line[:len(cl)], []byte(cl)) {
			n = 0
			for _, ch := range bytes.TrimSpace(line[len(cl):]) {
				n = n*10 + int(ch-'0')
			}
		}
	}
}
