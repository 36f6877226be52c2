package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/proxy"
)

func h2cClient() *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

func TestSidecarPairH2C(t *testing.T) {
	checkNoLeaks(t)
	echo := meshtest.StartEcho(t)
	pr := startPair(t, pairOptions{app: echo.Addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}})
	c := h2cClient()
	var wg sync.WaitGroup
	for i := range 8 { // concurrent streams multiplexed end to end
		wg.Go(func() {
			resp, body := get(t, c, pr.outbound+"/h2?size=2048", map[string]string{"X-Forwarded-Client-Cert": "forged"})
			if resp.StatusCode != 200 || len(body) != 2048 || resp.ProtoMajor != 2 {
				t.Errorf("stream %d: %s %d with %d bytes, want HTTP/2 200 with 2048", i, resp.Proto, resp.StatusCode, len(body))
			}
			if got := resp.Header.Get("X-Echo-Proto"); got != "HTTP/2.0" {
				t.Errorf("app saw %s, want HTTP/2.0", got)
			}
			if xfcc := resp.Header.Get("X-Echo-Xfcc"); !strings.HasSuffix(xfcc, "URI=spiffe://cluster.local"+clientPath) || resp.Header.Get("X-Echo-Xfcc-Count") != "1" {
				t.Errorf("XFCC = %q (count %s), want only the sidecar's", xfcc, resp.Header.Get("X-Echo-Xfcc-Count"))
			}
		})
	}
	wg.Wait()
}

func TestSidecarPairGRPC(t *testing.T) {
	checkNoLeaks(t)
	g := meshtest.StartGRPCEcho(t)
	g.Health.SetServingStatus("reviews", healthpb.HealthCheckResponse_SERVING)
	pr := startPair(t, pairOptions{app: g.Addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}})
	conn, err := grpc.NewClient(pr.outboundAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("unary with trailers", func(t *testing.T) {
		var trailer metadata.MD
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "reviews"}, grpc.Trailer(&trailer))
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check(reviews) = %v, %v; want SERVING", resp, err)
		}
		// A trailers-only error (one HEADERS frame with END_STREAM carrying
		// grpc-status) must arrive with its status code intact. Repeated because the
		// way it broke was a race between flushing the head and ending the stream.
		for i := range 50 {
			_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "missing"})
			if status.Code(err) != codes.NotFound {
				t.Fatalf("Check(missing) #%d = %v, want NotFound", i, err)
			}
		}
	})
	t.Run("server streaming", func(t *testing.T) {
		w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "reviews"})
		if err != nil {
			t.Fatal(err)
		}
		want := []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING}
		for i, ws := range want {
			m, err := w.Recv()
			if err != nil {
				t.Fatalf("Watch message %d: %v", i, err)
			}
			if m.GetStatus() != ws {
				t.Fatalf("Watch message %d = %v, want %v", i, m.GetStatus(), ws)
			}
			if i+1 < len(want) {
				g.Health.SetServingStatus("reviews", want[i+1])
			}
		}
	})
}

func TestSidecarPairTCP(t *testing.T) {
	checkNoLeaks(t)
	addr := meshtest.StartTCPEcho(t)
	pr := startPair(t, pairOptions{app: addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}})
	c, err := net.DialTimeout("tcp", pr.outboundAddr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := "\x00\x01opaque bytes that are not HTTP\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		t.Fatalf("TCP echo through the pair = %q, %v; want %q", got, err, msg)
	}
}

func TestSecureNaming(t *testing.T) {
	echo := meshtest.StartEcho(t)
	// The server presents a valid mesh certificate for another service account.
	pr := startPair(t, pairOptions{app: echo.Addr, serverIdentity: "/ns/default/sa/impostor"})
	resp, _ := get(t, httpClient(), pr.outbound+"/", nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET through a server with the wrong SPIFFE ID = %d, want 503", resp.StatusCode)
	}
}

func TestDestinationRuleDisable(t *testing.T) {
	echo := meshtest.StartEcho(t)
	cases := []struct {
		name   string
		server proxy.PeerAuthn
		want   int
	}{
		{"plaintext to PERMISSIVE", nil, 200},
		{"plaintext to STRICT", strict(), 503},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pr := startPair(t, pairOptions{app: echo.Addr, serverPolicy: proxy.Policy{PeerAuthn: tc.server},
				clientTLS: &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_DISABLE}})
			resp, _ := get(t, httpClient(), pr.outbound+"/", nil)
			if resp.StatusCode != tc.want {
				t.Errorf("GET = %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want == 200 && resp.Header.Get("X-Echo-Xfcc-Count") != "0" {
				t.Errorf("plaintext request reached the app with XFCC")
			}
		})
	}
}

type jwtFunc func(h proxy.HeaderGetter) (*proxy.Auth, error)

func (f jwtFunc) Authenticate(_ context.Context, h proxy.HeaderGetter, _ string) (*proxy.Auth, error) {
	return f(h)
}

func TestAuthorization(t *testing.T) {
	echo := meshtest.StartEcho(t)
	tcpEcho := meshtest.StartTCPEcho(t)
	var seen []proxy.Request
	var mu sync.Mutex
	authz := authorizerFunc(func(r *proxy.Request) proxy.Decision {
		mu.Lock()
		seen = append(seen, proxy.Request{SourcePrincipal: r.SourcePrincipal, HTTP: r.HTTP, Method: r.Method, Path: r.Path, Auth: r.Auth})
		mu.Unlock()
		if r.HTTP && strings.HasPrefix(r.Path, "/admin") {
			return proxy.Decision{Allow: false, Policy: "default/deny-admin"}
		}
		if !r.HTTP {
			return proxy.Decision{Allow: false, Policy: "default/http-only"}
		}
		return proxy.Decision{Allow: true, Policy: "default/allow-client"}
	})
	jwt := jwtFunc(func(h proxy.HeaderGetter) (*proxy.Auth, error) {
		switch h.Get("Authorization") {
		case "":
			return nil, nil
		case "Bearer good":
			return &proxy.Auth{Principal: "issuer/alice"}, nil
		}
		return nil, errors.New("bad token")
	})
	pol := proxy.Policy{PeerAuthn: strict(), Authorizer: authz, RequestAuthn: jwt}
	pr := startPair(t, pairOptions{app: echo.Addr, serverPolicy: pol})
	c := httpClient()
	cases := []struct {
		path, auth string
		want       int
		body       string
	}{
		{"/ok", "", 200, ""},
		{"/admin/x", "", 403, "RBAC: access denied"},
		{"/ok", "Bearer bad", 401, "Jwt verification fails"},
		{"/ok", "Bearer good", 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.path+tc.auth, func(t *testing.T) {
			resp, body := get(t, c, pr.outbound+tc.path, map[string]string{"Authorization": tc.auth})
			if resp.StatusCode != tc.want || (tc.body != "" && body != tc.body) {
				t.Errorf("GET %s = %d %q, want %d %q", tc.path, resp.StatusCode, body, tc.want, tc.body)
			}
		})
	}
	mu.Lock()
	if len(seen) == 0 || seen[0].SourcePrincipal != "cluster.local"+clientPath || seen[0].Method != "GET" {
		t.Errorf("authorizer saw %+v, want source.principal cluster.local%s and the method", seen, clientPath)
	}
	if last := seen[len(seen)-1]; last.Auth == nil || last.Auth.Principal != "issuer/alice" {
		t.Errorf("authorizer saw auth %+v, want request.auth.principal issuer/alice", last.Auth)
	}
	mu.Unlock()

	t.Run("denied TCP is closed", func(t *testing.T) {
		pr := startPair(t, pairOptions{app: tcpEcho, serverPolicy: pol})
		c, err := net.DialTimeout("tcp", pr.outboundAddr.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("\x00binary"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, _ := io.ReadAll(c)
		if len(got) != 0 {
			t.Errorf("denied TCP connection returned %q, want it closed with nothing", got)
		}
	})
}

func TestCertificateRotationKeepsOpenConnections(t *testing.T) {
	echo := meshtest.StartEcho(t)
	ca := newTestCA(t, "cluster.local")
	certs := newCertSource(ca.svid(t, serverPath, time.Time{}, time.Time{}), ca.bundle())
	sc := meshtest.StartSidecar(t, meshtest.SidecarOptions{Certs: certs, Apps: []netip.AddrPort{echo.Addr}, Policy: &proxy.Policy{PeerAuthn: strict()}})
	client := ca.svid(t, clientPath, time.Time{}, time.Time{})
	old, err := mtlsDial(t, sc.Inbound, client, "", "http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldSerial := old.ConnectionState().PeerCertificates[0].SerialNumber

	next := ca.svid(t, serverPath, time.Time{}, time.Time{})
	certs.set(next)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := mtlsDial(t, sc.Inbound, client, "", "http/1.1")
		if err != nil {
			t.Fatal(err)
		}
		got := c.ConnectionState().PeerCertificates[0].SerialNumber
		c.Close()
		if got.Cmp(next.Certificates[0].SerialNumber) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new handshakes still get serial %v after rotation, want %v", got, next.Certificates[0].SerialNumber)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The connection opened before the rotation still carries requests.
	if _, err := io.WriteString(old, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("write on the pre-rotation connection: %v", err)
	}
	buf := make([]byte, 12)
	old.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(old, buf); err != nil || string(buf) != "HTTP/1.1 200" {
		t.Fatalf("pre-rotation connection answered %q, %v; want HTTP/1.1 200", buf, err)
	}
	if oldSerial.Cmp(next.Certificates[0].SerialNumber) == 0 {
		t.Fatal("test setup: the first connection already used the new certificate")
	}
}

func TestDrainOnShutdown(t *testing.T) {
	checkNoLeaks(t)
	echo := meshtest.StartEcho(t)
	ca := newTestCA(t, "cluster.local")
	certs := newCertSource(ca.svid(t, serverPath, time.Time{}, time.Time{}), ca.bundle())
	sc := meshtest.StartSidecar(t, meshtest.SidecarOptions{Certs: certs, Apps: []netip.AddrPort{echo.Addr}, Drain: 5 * time.Second})
	c := httpClient()
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Get("http://" + sc.Inbound.String() + "/slow?sleep=300ms")
		if err != nil {
			done <- result{0, err}
			return
		}
		resp.Body.Close()
		done <- result{resp.StatusCode, nil}
	}()
	// Wait until the request is in flight, then stop.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if conns := sc.Proxy.Connections(); len(conns) > 0 && conns[0].Requests > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("request never reached the sidecar")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := sc.Stop(); err != nil {
		t.Fatalf("Run returned %v after drain, want nil", err)
	}
	if r := <-done; r.err != nil || r.code != 200 {
		t.Errorf("in-flight request during drain = %d, %v; want 200", r.code, r.err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("drain took %v with one short request in flight", d)
	}
	if _, err := net.DialTimeout("tcp", sc.Inbound.String(), time.Second); err == nil {
		t.Errorf("listener still accepts after shutdown")
	}
}

func TestTLSSettings(t *testing.T) {
	echo := meshtest.StartEcho(t)
	ca := newTestCA(t, "cluster.local")
	certs := newCertSource(ca.svid(t, serverPath, time.Time{}, time.Time{}), ca.bundle())
	sc := meshtest.StartSidecar(t, meshtest.SidecarOptions{Certs: certs, Apps: []netip.AddrPort{echo.Addr}, Policy: &proxy.Policy{PeerAuthn: strict()}})
	svid := ca.svid(t, clientPath, time.Time{}, time.Time{})
	cert := tls.Certificate{PrivateKey: svid.PrivateKey, Certificate: [][]byte{svid.Certificates[0].Raw}}
	cases := []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"TLS 1.2 ECDHE-ECDSA AES-GCM", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, true},
		{"TLS 1.2 CBC refused", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, false},
		{"TLS 1.1 refused", &tls.Config{MaxVersion: tls.VersionTLS11}, false},
		{"TLS 1.3 preferred", &tls.Config{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Certificates, tc.cfg.InsecureSkipVerify = []tls.Certificate{cert}, true
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", sc.Inbound.String(), tc.cfg)
			if err == nil {
				c.Close()
			}
			if (err == nil) != tc.ok {
				t.Errorf("handshake err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestUpgradeAndContinue: a 101 Switching Protocols answer turns the connection into a
// tunnel through both sidecars, and Expect: 100-continue is answered before the body
// is sent; in both modes between sidecars (an upgrade cannot ride an HTTP/2 stream and
// keeps its own HTTP/1.1 connection).
func TestUpgradeAndContinue(t *testing.T) {
	for _, h2up := range []bool{false, true} {
		t.Run("h2Upstream="+map[bool]string{false: "off", true: "on"}[h2up], func(t *testing.T) {
			checkNoLeaks(t)
			up := startPair(t, pairOptions{app: meshtest.StartUpgradeEcho(t), serverPolicy: proxy.Policy{PeerAuthn: strict()}, pooledH1: !h2up})
			t.Run("101 upgrade tunnels bytes both ways", func(t *testing.T) {
				c, br := rawConn(t, up.outboundAddr)
				io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n") //nolint:errcheck
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("upgrade response = %v, %v; want 101", resp, err)
				}
				for _, msg := range []string{"ping", strings.Repeat("x", 10000)} {
					io.WriteString(c, msg) //nolint:errcheck
					got := make([]byte, len(msg))
					if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
						t.Fatalf("tunnel echo of %d bytes = %d bytes, %v", len(msg), len(got), err)
					}
				}
			})
			echo := startPair(t, pairOptions{app: meshtest.StartEcho(t).Addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}, pooledH1: !h2up})
			t.Run("100-continue before the body", func(t *testing.T) {
				c, br := rawConn(t, echo.outboundAddr)
				io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n") //nolint:errcheck
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != http.StatusContinue {
					t.Fatalf("interim response = %v, %v; want 100 Continue before the body is sent", resp, err)
				}
				io.WriteString(c, "hello") //nolint:errcheck
				resp, err = http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(body) != "hello" {
					t.Errorf("final response = %d %q, want 200 \"hello\"", resp.StatusCode, body)
				}
			})
		})
	}
}

// rawConn dials addr for hand-written HTTP/1.1, closed when the test ends.
func rawConn(t *testing.T, addr netip.AddrPort) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
	return c, bufio.NewReader(c)
}

// TestIstioMutualIdentities follows Istio's choice of the names an ISTIO_MUTUAL server
// must present: the DestinationRule's subjectAltNames if any, else the registry's
// service accounts, else none — then only the chain to the mesh bundle is checked.
func TestIstioMutualIdentities(t *testing.T) {
	checkNoLeaks(t)
	echo := meshtest.StartEcho(t)
	for _, tc := range []struct {
		name       string
		o          pairOptions
		wantStatus int
	}{
		{"registry identity matches", pairOptions{}, 200},
		{"no identity in the registry: chain only, as Istio", pairOptions{noIdentity: true, serverIdentity: "/ns/default/sa/anyone"}, 200},
		{"DestinationRule subjectAltNames replace the registry's",
			pairOptions{clientTLS: &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_ISTIO_MUTUAL,
				SubjectAltNames: []string{"spiffe://cluster.local/ns/default/sa/other"}}}, 503},
		{"DestinationRule subjectAltNames admit the server they name",
			pairOptions{serverIdentity: "/ns/default/sa/other", clientTLS: &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_ISTIO_MUTUAL,
				SubjectAltNames: []string{"spiffe://cluster.local/ns/default/sa/other"}}}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.app = echo.Addr
			pr := startPair(t, tc.o)
			if resp, _ := get(t, httpClient(), pr.outbound+"/", nil); resp.StatusCode != tc.wantStatus {
				t.Errorf("GET = %d, want %d", resp.StatusCode, tc.wantStatus)
			}
		})
	}
}

// TestDisablePassesTLSThrough: Istio does not terminate TLS on a DISABLE port; a client
// doing TLS end to end with the app must reach it untouched.
func TestDisablePassesTLSThrough(t *testing.T) {
	checkNoLeaks(t)
	app := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "app over its own TLS") })) //nolint:errcheck
	t.Cleanup(app.Close)
	appAddr := netip.MustParseAddrPort(app.Listener.Addr().String())
	ca := newTestCA(t, "cluster.local")
	sc := meshtest.StartSidecar(t, meshtest.SidecarOptions{
		Certs: newCertSource(ca.svid(t, serverPath, time.Time{}, time.Time{}), ca.bundle()), Apps: []netip.AddrPort{appAddr},
		Policy: &proxy.Policy{PeerAuthn: modes{def: security.PeerAuthentication_MutualTLS_DISABLE}},
	})
	c := app.Client()                 // trusts the app's own certificate, not the mesh's
	t.Cleanup(c.CloseIdleConnections) // before the sidecar stops: an open tunnel would hold its drain
	resp, err := c.Get("https://" + sc.Inbound.String() + "/")
	if err != nil {
		t.Fatalf("TLS through the DISABLE port: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "app over its own TLS" || resp.TLS == nil || !resp.TLS.PeerCertificates[0].Equal(app.Certificate()) {
		t.Errorf("GET = %q; want the app's answer under the app's certificate", body)
	}
}

// TestHostPortPicksApp: in explicit mode with several apps, plaintext HTTP goes to the
// app whose port the Host header names; a STRICT port is not reachable that way.
func TestHostPortPicksApp(t *testing.T) {
	checkNoLeaks(t)
	named := func(name string) netip.AddrPort {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })) //nolint:errcheck
		t.Cleanup(s.Close)
		return netip.MustParseAddrPort(s.Listener.Addr().String())
	}
	a, b, c := named("a"), named("b"), named("c")
	ca := newTestCA(t, "cluster.local")
	sc := meshtest.StartSidecar(t, meshtest.SidecarOptions{
		Certs: newCertSource(ca.svid(t, serverPath, time.Time{}, time.Time{}), ca.bundle()), Apps: []netip.AddrPort{a, b, c},
		Policy: &proxy.Policy{PeerAuthn: modes{def: security.PeerAuthentication_MutualTLS_PERMISSIVE,
			ports: map[uint32]security.PeerAuthentication_MutualTLS_Mode{uint32(c.Port()): security.PeerAuthentication_MutualTLS_STRICT}}},
	})
	for _, tc := range []struct {
		host, want string
		ok         bool
	}{
		{"svc:" + strconv.Itoa(int(b.Port())), "b", true},
		{"svc:" + strconv.Itoa(int(a.Port())), "a", true},
		{"svc", "a", true},   // no port: the first app
		{"svc:1", "a", true}, // no such app: the first app
		{"svc:" + strconv.Itoa(int(c.Port())), "", false}, // STRICT: plaintext refused
	} {
		t.Run(tc.host, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+sc.Inbound.String()+"/", nil)
			req.Host = tc.host
			resp, err := httpClient().Do(req)
			if !tc.ok {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("GET Host %s = %d, want the connection refused (STRICT port)", tc.host, resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if body, _ := io.ReadAll(resp.Body); string(body) != tc.want {
				t.Errorf("GET Host %s reached app %q, want %q", tc.host, body, tc.want)
			}
		})
	}
}
