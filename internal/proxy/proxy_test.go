package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/proxy"
)

const (
	echoHost   = "echo.default.svc.cluster.local"
	serverPath = "/ns/default/sa/echo"
	clientPath = "/ns/default/sa/client"
)

// modes is a PeerAuthn with a default and port-level overrides.
type modes struct {
	def   security.PeerAuthentication_MutualTLS_Mode
	ports map[uint32]security.PeerAuthentication_MutualTLS_Mode
}

func (m modes) MTLSMode(port uint32) security.PeerAuthentication_MutualTLS_Mode {
	if v, ok := m.ports[port]; ok {
		return v
	}
	return m.def
}

func strict() modes { return modes{def: security.PeerAuthentication_MutualTLS_STRICT} }

// authorizerFunc adapts a function to proxy.Authorizer.
type authorizerFunc func(r *proxy.Request) proxy.Decision

func (f authorizerFunc) Authorize(_ context.Context, r *proxy.Request) proxy.Decision { return f(r) }

// drTLS is a DestinationRules answering one setting for every host.
type drTLS struct{ s *networking.ClientTLSSettings }

func (d drTLS) ClientTLS(string, uint32) *networking.ClientTLSSettings { return d.s }

// pair is a client sidecar whose outbound listener reaches echoHost:80, served by a
// server sidecar in front of the app.
type pair struct {
	ca           *testCA
	server       *meshtest.Sidecar
	client       *meshtest.Sidecar
	serverCerts  *certSource
	clientCerts  *certSource
	outbound     string // http://127.0.0.1:PORT
	outboundAddr netip.AddrPort
}

type pairOptions struct {
	app          netip.AddrPort
	serverPolicy proxy.Policy
	// serverIdentity is the path the server's certificate carries (default serverPath);
	// the registry always says serverPath serves echoHost.
	serverIdentity string
	clientTLS      *networking.ClientTLSSettings
	drain          time.Duration
	pooledH1       bool // the client sidecar sends pooled HTTP/1.1, not HTTP/2 streams
	noIdentity     bool // the registry names no service account for echoHost
	// serverTrustDomain is the trust domain of the server's certificate and bundle
	// (default the CA's, cluster.local); the registry names serverPath in cluster.local.
	serverTrustDomain string
	clientAliases     []spiffeid.TrustDomain // the client policy's TrustDomainAliases
}

func startPair(t *testing.T, o pairOptions) *pair { return startPairTB(t, o) }

func startPairTB(t testing.TB, o pairOptions) *pair {
	t.Helper()
	ca := newTestCA(t, "cluster.local")
	if o.serverIdentity == "" {
		o.serverIdentity = serverPath
	}
	pr := &pair{ca: ca}
	td := ca.td
	if o.serverTrustDomain != "" {
		td = spiffeid.RequireTrustDomainFromString(o.serverTrustDomain)
	}
	pr.serverCerts = newCertSource(ca.svidFor(t, spiffeid.RequireFromPath(td, o.serverIdentity), time.Time{}, time.Time{}), ca.bundleFor(td))
	pr.server = meshtest.StartSidecar(t, meshtest.SidecarOptions{
		Certs: pr.serverCerts, Apps: []netip.AddrPort{o.app}, Policy: &o.serverPolicy, Drain: o.drain,
	})
	svc := proxy.Service{
		Host:  echoHost,
		Ports: []proxy.ServicePort{{Number: 80, Name: "http"}},
		Endpoints: []proxy.Endpoint{{
			Address:  "127.0.0.1",
			Ports:    map[string]uint32{"http": uint32(pr.server.Inbound.Port())},
			Identity: ca.id(serverPath),
		}},
	}
	if o.noIdentity {
		svc.Endpoints[0].Identity = spiffeid.ID{}
	}
	cpol := &proxy.Policy{Services: []proxy.Service{svc}, TrustDomainAliases: o.clientAliases}
	if o.clientTLS != nil {
		cpol.Destinations = drTLS{o.clientTLS}
	}
	pr.clientCerts = newCertSource(ca.svid(t, clientPath, time.Time{}, time.Time{}), ca.bundle())
	pr.client = meshtest.StartSidecar(t, meshtest.SidecarOptions{
		Certs: pr.clientCerts, Apps: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")},
		Outbound: []proxy.ExplicitOutbound{{Host: echoHost, Port: 80}}, Policy: cpol, DisableH2Upstream: o.pooledH1,
	})
	pr.outboundAddr = pr.client.Outbound[0]
	pr.outbound = "http://" + pr.outboundAddr.String()
	return pr
}

func httpClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
}

func get(t *testing.T, c *http.Client, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp, string(b)
}

func TestSidecarPairHTTP1(t *testing.T) {
	for _, h2up := range []bool{false, true} {
		name := "pooled HTTP/1.1 between sidecars"
		if h2up {
			name = "HTTP/1.1 multiplexed over HTTP/2 between sidecars"
		}
		t.Run(name, func(t *testing.T) { testSidecarPairHTTP1(t, h2up) })
	}
}

func testSidecarPairHTTP1(t *testing.T, h2up bool) {
	checkNoLeaks(t)
	echo := meshtest.StartEcho(t)
	pr := startPair(t, pairOptions{app: echo.Addr, serverPolicy: proxy.Policy{PeerAuthn: strict()}, pooledH1: !h2up})
	c := httpClient()
	t.Run("the app gets HTTP/1.1", func(t *testing.T) {
		resp, _ := get(t, c, pr.outbound+"/proto", nil)
		if resp.StatusCode != 200 || resp.Header.Get("X-Echo-Proto") != "HTTP/1.1" || resp.Header.Get("X-Meshguard-Origin-Protocol") != "" {
			t.Errorf("GET = %d, app saw %q (marker %q), want 200 over HTTP/1.1 with no marker", resp.StatusCode,
				resp.Header.Get("X-Echo-Proto"), resp.Header.Get("X-Meshguard-Origin-Protocol"))
		}
	})
	t.Run("HEAD has no body", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodHead, pr.outbound+"/head?size=100", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ContentLength != 100 {
			t.Errorf("HEAD = %d, Content-Length %d; want 200, 100", resp.StatusCode, resp.ContentLength)
		}
	})

	t.Run("GET with XFCC from the verified peer", func(t *testing.T) {
		resp, body := get(t, c, pr.outbound+"/hello?size=1024", map[string]string{
			"X-Forwarded-Client-Cert": "By=spiffe://evil;URI=spiffe://cluster.local/ns/default/sa/admin",
		})
		if resp.StatusCode != 200 || len(body) != 1024 {
			t.Fatalf("GET = %d with %d bytes, want 200 with 1024", resp.StatusCode, len(body))
		}
		if got := resp.Header.Get("X-Echo-Xfcc-Count"); got != "1" {
			t.Errorf("app saw %s XFCC headers, want 1 (the forged one removed)", got)
		}
		xfcc := resp.Header.Get("X-Echo-Xfcc")
		want := fmt.Sprintf(`By=spiffe://cluster.local%s;Hash=`, serverPath)
		if !strings.HasPrefix(xfcc, want) || !strings.HasSuffix(xfcc, `;Subject="";URI=spiffe://cluster.local`+clientPath) {
			t.Errorf("XFCC = %q, want By=<server>;Hash=…;Subject=\"\";URI=<client>", xfcc)
		}
	})
	t.Run("POST body, chunked and content-length", func(t *testing.T) {
		for _, chunked := range []bool{false, true} {
			payload := strings.Repeat("abcdefgh", 5000)
			var body io.Reader = strings.NewReader(payload)
			if chunked {
				body = io.MultiReader(strings.NewReader(payload)) // unknown length: chunked
			}
			req, _ := http.NewRequest(http.MethodPost, pr.outbound+"/post", body)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("POST (chunked=%v): %v", chunked, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(got) != payload {
				t.Errorf("POST (chunked=%v) = %d, %d bytes; want 200 echoing %d bytes", chunked, resp.StatusCode, len(got), len(payload))
			}
		}
	})
	t.Run("keep-alive reuses one downstream connection", func(t *testing.T) {
		before := len(pr.server.Proxy.Connections())
		for i := range 20 {
			resp, _ := get(t, c, pr.outbound+fmt.Sprintf("/n/%d", i), nil)
			if resp.StatusCode != 200 {
				t.Fatalf("request %d = %d", i, resp.StatusCode)
			}
		}
		if after := len(pr.server.Proxy.Connections()); after > before+1 {
			t.Errorf("server sidecar has %d connections after 20 sequential requests, was %d: upstream not pooled", after, before)
		}
	})
	t.Run("Connection: close downstream keeps the upstream connection pooled", func(t *testing.T) {
		// Requests carried by the server's live inbound connections: a connection
		// closed after its request would vanish from the listing with its count.
		carried := func() (n int64, conns int) {
			for _, ci := range pr.server.Proxy.Connections() {
				if ci.Direction == "inbound" {
					n, conns = n+ci.Requests, conns+1
				}
			}
			return n, conns
		}
		before, beforeConns := carried()
		for i := range 5 {
			c, br := rawConn(t, pr.outboundAddr)
			fmt.Fprintf(c, "GET /close/%d HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n", i)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body) //nolint:errcheck
			if resp.StatusCode != 200 || !resp.Close {
				t.Errorf("request %d = %d, close %v; want 200 and the downstream connection closed", i, resp.StatusCode, resp.Close)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("request %d: downstream connection still open after Connection: close (%v)", i, err)
			}
		}
		if after, conns := carried(); after-before != 5 || conns > beforeConns+1 {
			t.Errorf("live upstream connections carried %d of 5 Connection: close requests (%d connections, %d before); want all 5 on pooled connections",
				after-before, conns, beforeConns)
		}
	})
	if h2up {
		t.Run("concurrent downstream connections share one HTTP/2 connection", func(t *testing.T) {
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					cc := httpClient() // a downstream connection of its own
					defer cc.CloseIdleConnections()
					for j := range 5 {
						if resp, _ := get(t, cc, pr.outbound+fmt.Sprintf("/c/%d/%d?size=4096", i, j), nil); resp.StatusCode != 200 {
							t.Errorf("request %d/%d = %d", i, j, resp.StatusCode)
						}
					}
				})
			}
			wg.Wait()
			inbound := 0
			for _, ci := range pr.server.Proxy.Connections() {
				if ci.Direction == "inbound" {
					inbound++
					if ci.Protocol != "h2" {
						t.Errorf("inbound connection %+v, want h2", ci)
					}
				}
			}
			if inbound != 1 {
				t.Errorf("server sidecar has %d inbound connections, want 1 multiplexed HTTP/2 connection", inbound)
			}
		})
	}
	t.Run("admin connection listing", func(t *testing.T) {
		var found bool
		for _, ci := range pr.server.Proxy.Connections() {
			if ci.Direction == "inbound" && ci.PeerSPIFFEID == "spiffe://cluster.local"+clientPath {
				found = true
				if ci.TLSVersion != "TLS 1.3" || ci.KeyExchange != "X25519MLKEM768" || ci.Mode != "STRICT" {
					t.Errorf("inbound conn = %+v, want TLS 1.3, X25519MLKEM768, STRICT", ci)
				}
			}
		}
		if !found {
			t.Errorf("no inbound connection from the client identity in %+v", pr.server.Proxy.Connections())
		}
	})
}

// mtlsDial connects straight to an inbound listener as a mesh client would.
func mtlsDial(t *testing.T, addr netip.AddrPort, svid *x509svid.SVID, sni string, alpn ...string) (*tls.Conn, error) {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{
		Certificates: []tls.Certificate{tlsCert(svid)}, InsecureSkipVerify: true, ServerName: sni, NextProtos: alpn,
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	// TLS 1.3 reports a refused client certificate on the first read.
	fmt.Fprintf(tc, "GET /probe HTTP/1.1\r\nHost: x\r\n\r\n")
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		tc.Close()
		return nil, err
	}
	resp.Body.Close()
	tc.SetReadDeadline(time.Time{})
	return tc, nil
}

func plainGet(addr netip.AddrPort) (int, error) {
	c := httpClient()
	resp, err := c.Get("http://" + addr.String() + "/plain")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestInboundPeerAuthentication(t *testing.T) {
	echo := meshtest.StartEcho(t)
	ca := newTestCA(t, "cluster.local")
	foreign := newTestCA(t, "cluster.local")
	port := uint32(echo.Addr.Port())
	// With several apps and no capture, only the SNI says which port mTLS is for.
	twoApps := []netip.AddrPort{echo.Addr, netip.MustParseAddrPort("127.0.0.1:9080")}
	cases := []struct {
		name      string
		mode      proxy.PeerAuthn
		client    *x509svid.SVID // nil: plaintext
		sni       string
		wantAdmit bool
		apps      []netip.AddrPort // nil: the echo app only
	}{
		{"STRICT admits mTLS", strict(), ca.svid(t, clientPath, time.Time{}, time.Time{}), "", true, nil},
		{"STRICT refuses plaintext", strict(), nil, "", false, nil},
		{"STRICT refuses a foreign CA", strict(), foreign.svid(t, clientPath, time.Time{}, time.Time{}), "", false, nil},
		{"STRICT refuses an expired certificate", strict(), ca.svid(t, clientPath, time.Now().Add(-3*time.Hour), time.Now().Add(-time.Hour)), "", false, nil},
		{"PERMISSIVE admits mTLS", nil, ca.svid(t, clientPath, time.Time{}, time.Time{}), "", true, nil},
		{"PERMISSIVE admits plaintext", nil, nil, "", true, nil},
		{"PERMISSIVE still refuses a foreign CA", nil, foreign.svid(t, clientPath, time.Time{}, time.Time{}), "", false, nil},
		{"DISABLE admits plaintext", modes{def: security.PeerAuthentication_MutualTLS_DISABLE}, nil, "", true, nil},
		// TLS to a DISABLE port is passed to the app untouched (TestDisablePassesTLSThrough);
		// the echo app speaks no TLS, so the mesh handshake cannot complete.
		{"DISABLE does not terminate mTLS", modes{def: security.PeerAuthentication_MutualTLS_DISABLE}, ca.svid(t, clientPath, time.Time{}, time.Time{}), "", false, nil},
		{"port-level STRICT over namespace PERMISSIVE refuses plaintext",
			modes{def: security.PeerAuthentication_MutualTLS_PERMISSIVE, ports: map[uint32]security.PeerAuthentication_MutualTLS_Mode{port: security.PeerAuthentication_MutualTLS_STRICT}}, nil, "", false, nil},
		{"port-level DISABLE over namespace STRICT admits plaintext",
			modes{def: security.PeerAuthentication_MutualTLS_STRICT, ports: map[uint32]security.PeerAuthentication_MutualTLS_Mode{port: security.PeerAuthentication_MutualTLS_DISABLE}}, nil, "", true, nil},
		{"port from SNI: STRICT port admits mTLS",
			modes{def: security.PeerAuthentication_MutualTLS_DISABLE, ports: map[uint32]security.PeerAuthentication_MutualTLS_Mode{9080: security.PeerAuthentication_MutualTLS_STRICT}},
			ca.svid(t, clientPath, time.Time{}, time.Time{}), "outbound_.9080_._." + echoHost, true, twoApps},
		{"port from SNI: DISABLE port refuses mTLS",
			modes{def: security.PeerAuthentication_MutualTLS_STRICT, ports: map[uint32]security.PeerAuthentication_MutualTLS_Mode{9080: security.PeerAuthentication_MutualTLS_DISABLE}},
			ca.svid(t, clientPath, time.Time{}, time.Time{}), "outbound_.9080_._." + echoHost, false, twoApps},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			certs := newCertSource(ca.svid(t, serverPath, time.Time{}, time.Time{}), ca.bundle())
			apps := tc.apps
			if apps == nil {
				apps = []netip.AddrPort{echo.Addr}
			}
			sc := meshtest.StartSidecar(t, meshtest.SidecarOptions{Certs: certs, Apps: apps, Policy: &proxy.Policy{PeerAuthn: tc.mode}})
			var err error
			if tc.client != nil {
				var c *tls.Conn
				if c, err = mtlsDial(t, sc.Inbound, tc.client, tc.sni, "http/1.1"); err == nil {
					c.Close()
				}
			} else {
				var code int
				if code, err = plainGet(sc.Inbound); err == nil && code != 200 {
					err = fmt.Errorf("status %d", code)
				}
			}
			if admitted := err == nil; admitted != tc.wantAdmit {
				t.Errorf("admitted = %v (err %v), want %v", admitted, err, tc.wantAdmit)
			}
		})
	}
}

// checkNoLeaks fails the test if proxy goroutines (connection handlers, listeners,
// pooled HTTP/2 client and server connections) outlive the sidecars' shutdown.
func checkNoLeaks(t *testing.T) {
	meshtest.CheckNoLeaks(t, "internal/proxy.", "http2.(*ClientConn)", "http2.(*serverConn)")
}

// TestAppClosesIdleConnections: apps time out idle keep-alive connections (Go's
// http.Server IdleTimeout here). The server sidecar must not answer 503 for a request
// that meets such a connection in its pool: it probes a connection idle for longer than
// idleProbeAfter (250 ms) before reusing it, and retries a request without a body on a
// fresh connection when a reused one turns out closed.
func TestAppClosesIdleConnections(t *testing.T) {
	for _, h2up := range []bool{false, true} {
		name := "pooled HTTP/1.1 between sidecars"
		if h2up {
			name = "HTTP/1.1 multiplexed over HTTP/2 between sidecars"
		}
		t.Run(name, func(t *testing.T) {
			checkNoLeaks(t)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var conns atomic.Int32
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					b, _ := io.ReadAll(r.Body)
					fmt.Fprintf(w, "%s %d", r.Method, len(b))
				}),
				IdleTimeout: 50 * time.Millisecond,
				ConnState: func(_ net.Conn, s http.ConnState) {
					if s == http.StateNew {
						conns.Add(1)
					}
				},
			}
			go srv.Serve(l) //nolint:errcheck // ends with Close
			t.Cleanup(func() { srv.Close() })
			pr := startPair(t, pairOptions{app: l.Addr().(*net.TCPAddr).AddrPort(), serverPolicy: proxy.Policy{PeerAuthn: strict()}, pooledH1: !h2up})
			c := httpClient()
			for i, tc := range []struct {
				pause              time.Duration // before the request: the app times out after 50 ms
				method, body, want string
			}{
				{0, http.MethodGet, "", "GET 0"},
				{150 * time.Millisecond, http.MethodGet, "", "GET 0"},                             // not probed: the retry
				{400 * time.Millisecond, http.MethodGet, "", "GET 0"},                             // probed
				{400 * time.Millisecond, http.MethodPost, strings.Repeat("x", 3000), "POST 3000"}, // probed; a retry could not replay the body
			} {
				time.Sleep(tc.pause)
				req, err := http.NewRequest(tc.method, pr.outbound+"/", strings.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", i+1, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != tc.want {
					t.Errorf("request %d (%s, %v after the last) = %d %q, want 200 %q", i+1, tc.method, tc.pause, resp.StatusCode, b, tc.want)
				}
			}
			if n := conns.Load(); n != 4 {
				t.Errorf("the app accepted %d connections, want 4 (one per request, each earlier one timed out idle)", n)
			}
		})
	}
}
