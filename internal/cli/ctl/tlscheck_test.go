package ctl

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	security "istio.io/api/security/v1beta1"

	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/proxy"
	"github.com/meshguard/meshguard/internal/tlscheck"
)

type staticCerts struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (s staticCerts) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }
func (s staticCerts) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundle.GetX509BundleForTrustDomain(td)
}
func (s staticCerts) Updated() <-chan struct{} { return nil }

type permissive struct{}

func (permissive) MTLSMode(uint32) security.PeerAuthentication_MutualTLS_Mode {
	return security.PeerAuthentication_MutualTLS_PERMISSIVE
}

// allowAs admits every request in the name of one policy.
type allowAs string

func (p allowAs) Authorize(context.Context, *proxy.Request) proxy.Decision {
	return proxy.Decision{Allow: true, Policy: string(p)}
}

// serveConnections serves p's live connections as the sidecar admin does.
func serveConnections(t *testing.T, p *proxy.Proxy) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != tlscheck.ConnectionsPath {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string][]proxy.ConnInfo{"connections": p.Connections()}) //nolint:errcheck
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestTLSCheck runs tls-check against a real sidecar pair: sleep's sidecar calls
// httpbin's over mTLS, and a plaintext client reaches httpbin's PERMISSIVE inbound.
func TestTLSCheck(t *testing.T) {
	ca := meshtest.NewCA(t, "cluster.local")
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.Root})
	certs := func(sa string) staticCerts {
		c := ca.Issue(t, ca.ID("default", sa), time.Hour)
		return staticCerts{&x509svid.SVID{ID: spiffeid.RequireFromPath(td, "/ns/default/sa/"+sa), Certificates: c.Chain, PrivateKey: c.Key}, bundle}
	}
	echo := meshtest.StartEcho(t)
	server := meshtest.StartSidecar(t, meshtest.SidecarOptions{
		Certs: certs("httpbin"), Apps: []netip.AddrPort{echo.Addr},
		Policy: &proxy.Policy{PeerAuthn: permissive{}, Authorizer: allowAs("default/allow-sleep")},
	})
	const host = "httpbin.default.svc.cluster.local"
	client := meshtest.StartSidecar(t, meshtest.SidecarOptions{
		Certs: certs("sleep"), Apps: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")},
		Outbound: []proxy.ExplicitOutbound{{Host: host, Port: 80}},
		Policy: &proxy.Policy{Services: []proxy.Service{{
			Host: host, Ports: []proxy.ServicePort{{Number: 80, Name: "http"}},
			Endpoints: []proxy.Endpoint{{Address: "127.0.0.1", Ports: map[string]uint32{"http": uint32(server.Inbound.Port())}, Identity: spiffeid.RequireFromPath(td, "/ns/default/sa/httpbin")}},
		}}},
	})
	// Keep-alive clients hold both connections open while tls-check looks.
	for _, url := range []string{"http://" + client.Outbound[0].String() + "/via-mesh", "http://" + server.Inbound.String() + "/plaintext"} {
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
		t.Cleanup(hc.CloseIdleConnections)
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d", url, resp.StatusCode)
		}
	}
	serverAdmin, clientAdmin := serveConnections(t, server.Proxy), serveConnections(t, client.Proxy)

	t.Run("json: the mesh connection is mTLS 1.3 with X25519MLKEM768", func(t *testing.T) {
		out, errOut, code := runCtl(t, "tls-check", "--sidecar", serverAdmin, "-o", "json")
		var r tlscheck.Report
		if err := json.Unmarshal([]byte(out), &r); code != 0 || err != nil {
			t.Fatalf("exit %d, decode %v, stderr %s:\n%s", code, err, errOut, out)
		}
		var mtls, plain *tlscheck.Conn
		for i, c := range r.Connections {
			switch c.Mode {
			case tlscheck.ModeMTLS:
				mtls = &r.Connections[i]
			case tlscheck.ModePlaintext:
				plain = &r.Connections[i]
			}
		}
		if mtls == nil || plain == nil || len(r.Connections) != 2 || r.MTLS != 1 || r.Plaintext != 1 || r.PostQuantum != 1 {
			t.Fatalf("report %+v, want one mTLS and one plaintext inbound connection", r)
		}
		want := tlscheck.Conn{
			ID: mtls.ID, Direction: "inbound", Peer: mtls.Peer, PeerID: "spiffe://cluster.local/ns/default/sa/sleep",
			LocalID: "spiffe://cluster.local/ns/default/sa/httpbin", Protocol: mtls.Protocol, TLSVersion: "TLS 1.3",
			CipherSuite: mtls.CipherSuite, KeyExchange: "X25519MLKEM768", PostQuantum: true, Mode: tlscheck.ModeMTLS,
			Setting: "PERMISSIVE", AdmittedBy: "default/allow-sleep",
		}
		if *mtls != want || !strings.HasPrefix(mtls.CipherSuite, "TLS_") || !strings.HasPrefix(mtls.Peer, "127.0.0.1:") {
			t.Errorf("mTLS connection = %+v, want %+v", *mtls, want)
		}
		if plain.Setting != "PERMISSIVE" || plain.TLSVersion != "" || plain.PeerID != "" || plain.Direction != "inbound" {
			t.Errorf("plaintext connection = %+v, want inbound plaintext under PERMISSIVE", *plain)
		}
	})
	t.Run("table", func(t *testing.T) {
		out, errOut, code := runCtl(t, "tls-check", "--sidecar", serverAdmin)
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, errOut)
		}
		for _, want := range []string{"mTLS (PERMISSIVE)", "TLS 1.3", "X25519MLKEM768 (post-quantum)", "plaintext (PERMISSIVE)",
			"spiffe://cluster.local/ns/default/sa/sleep", "default/allow-sleep", "2 connections on " + serverAdmin + ": 1 mTLS (1 post-quantum), 1 plaintext"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("client sidecar: outbound under ISTIO_MUTUAL", func(t *testing.T) {
		out, errOut, code := runCtl(t, "tls-check", "--sidecar", clientAdmin, "-o", "json")
		var r tlscheck.Report
		if err := json.Unmarshal([]byte(out), &r); code != 0 || err != nil {
			t.Fatalf("exit %d, decode %v, stderr %s:\n%s", code, err, errOut, out)
		}
		if len(r.Connections) != 1 {
			t.Fatalf("connections = %+v, want the one outbound", r.Connections)
		}
		c := r.Connections[0]
		if c.Direction != "outbound" || c.Host != host || c.Mode != tlscheck.ModeMTLS || c.Setting != "ISTIO_MUTUAL" || c.LocalID != "spiffe://cluster.local/ns/default/sa/sleep" {
			t.Errorf("outbound connection = %+v, want mTLS under ISTIO_MUTUAL to %s", c, host)
		}
		// The session that crosses the network, as the client sidecar negotiated it.
		if c.PeerID != "spiffe://cluster.local/ns/default/sa/httpbin" || c.TLSVersion != "TLS 1.3" || c.KeyExchange != "X25519MLKEM768" || !c.PostQuantum ||
			!strings.HasPrefix(c.CipherSuite, "TLS_") || c.Peer != server.Inbound.String() {
			t.Errorf("outbound connection = %+v, want TLS 1.3 with X25519MLKEM768 to %s at %s", c, "spiffe://cluster.local/ns/default/sa/httpbin", server.Inbound)
		}
	})

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "proxy not listening yet", http.StatusServiceUnavailable)
	}))
	t.Cleanup(broken.Close)
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"bad output", []string{"-o", "yaml", "--sidecar", serverAdmin}, 2, `-o "yaml"`},
		{"not HOST:PORT", []string{"--sidecar", "localhost"}, 2, `--sidecar "localhost"`},
		{"nothing listening", []string{"--sidecar", closedAddr}, 1, closedAddr},
		{"admin error", []string{"--sidecar", broken.Listener.Addr().String()}, 1, "503 Service Unavailable: proxy not listening yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, err := ctlError(t, append([]string{"tls-check", "--timeout", "2s"}, tc.args...)...)
			if code != tc.code || err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("exit %d with %v, want %d and an error naming %q", code, err, tc.code, tc.msg)
			}
		})
	}
}
