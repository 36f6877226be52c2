package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"
	networking "istio.io/api/networking/v1alpha3"
)

// compiled is one Policy turned into lookup tables. Immutable once stored.
type compiled struct {
	pol       *Policy
	tls       TLSSettings
	serverTLS *tls.Config
	explicit  []*route // Config.Outbound order; nil entry: host unknown
	byAddr    map[netip.AddrPort]*route
}

// route is one destination service port with its TLS settings and endpoints. Routes
// with equal settings survive policy swaps so their pooled connections do.
type route struct {
	key      string
	host     string
	port     uint32
	mode     networking.ClientTLSSettings_TLSmode
	eps      []*endpoint
	next     atomic.Uint32
	tlsHTTP1 *tls.Config // nil: plaintext
	tlsH2    *tls.Config
	tlsTCP   *tls.Config
	tlsMux   *tls.Config // ISTIO_MUTUAL: offers alpnMux, then istio-http/1.1
	// err makes every connection through this route fail closed (e.g. secure naming
	// impossible because the registry names no identity).
	err error
	h2  *http2.Transport
}

type endpoint struct {
	addr  string // host:port
	http1 *connPool
	mux   *muxPool // ISTIO_MUTUAL routes
}

// SetPolicy compiles pol and swaps it in. On error the previous policy stays in force.
// Safe to call at any time, before or during Run.
func (p *Proxy) SetPolicy(pol *Policy) error {
	if pol == nil {
		pol = &Policy{}
	}
	c := &compiled{pol: pol, tls: p.cfg.TLS, byAddr: make(map[netip.AddrPort]*route)}
	if pol.TLS != nil {
		c.tls = *pol.TLS
	}
	c.serverTLS = p.newServerTLS(c.tls, pol.TrustDomainAliases)
	hosts := make(map[string]*Service, len(pol.Services))
	for i := range pol.Services {
		hosts[pol.Services[i].Host] = &pol.Services[i]
	}
	p.routesMu.Lock()
	defer p.routesMu.Unlock()
	keep := make(map[string]*route)
	get := func(svc *Service, port uint32) (*route, error) {
		rt, err := p.buildRoute(svc, port, pol.Destinations, c.tls, pol.TrustDomainAliases)
		if err != nil {
			return nil, err
		}
		if old, ok := keep[rt.key]; ok {
			return old, nil
		}
		if old, ok := p.routes[rt.key]; ok {
			rt = old
		} else {
			p.initRoute(rt)
		}
		keep[rt.key] = rt
		return rt, nil
	}
	for _, o := range p.cfg.Outbound {
		svc, ok := hosts[o.Host]
		if !ok {
			c.explicit = append(c.explicit, nil)
			p.log.Warn("outbound host is not in the service registry; connections to it will be refused", "host", o.Host)
			continue
		}
		rt, err := get(svc, o.Port)
		if err != nil {
			return err
		}
		c.explicit = append(c.explicit, rt)
	}
	if p.cfg.OutboundAddr != "" {
		for i := range pol.Services {
			svc := &pol.Services[i]
			for _, sp := range svc.Ports {
				rt, err := get(svc, sp.Number)
				if err != nil {
					return err
				}
				for _, a := range svc.Addresses {
					c.byAddr[netip.AddrPortFrom(a, uint16(sp.Number))] = rt
				}
				for _, e := range svc.Endpoints {
					if ip, err := netip.ParseAddr(e.Address); err == nil {
						c.byAddr[netip.AddrPortFrom(ip, uint16(e.PortFor(sp)))] = rt
					}
				}
			}
		}
	}
	old := p.routes
	p.routes = keep
	p.state.Store(c)
	for k, rt := range old {
		if _, ok := keep[k]; !ok {
			rt.close()
		}
	}
	return nil
}

// closeRoutes closes every route's idle connections (at shutdown).
func (p *Proxy) closeRoutes(_ map[string]*route) {
	p.routesMu.Lock()
	defer p.routesMu.Unlock()
	for _, rt := range p.routes {
		rt.close()
	}
}

func (rt *route) close() {
	for _, e := range rt.eps {
		e.http1.close()
		if e.mux != nil {
			e.mux.close()
		}
	}
	if rt.h2 != nil {
		rt.h2.CloseIdleConnections()
	}
}

// buildRoute resolves svc:port to endpoints and TLS settings. File-based TLS material
// (MUTUAL/SIMPLE) is loaded here, so a bad file rejects the whole policy.
func (p *Proxy) buildRoute(svc *Service, port uint32, drs DestinationRules, ts TLSSettings, aliases []spiffeid.TrustDomain) (*route, error) {
	sp, ok := svc.port(port)
	if !ok {
		sp = ServicePort{Number: port}
	}
	rt := &route{host: svc.Host, port: port, mode: networking.ClientTLSSettings_ISTIO_MUTUAL}
	var tlsSet *networking.ClientTLSSettings
	if drs != nil {
		tlsSet = drs.ClientTLS(svc.Host, port)
	}
	if tlsSet != nil {
		rt.mode = tlsSet.GetMode()
	}
	var keyParts []string
	for _, e := range svc.Endpoints {
		addr := net.JoinHostPort(e.Address, strconv.FormatUint(uint64(e.PortFor(sp)), 10))
		rt.eps = append(rt.eps, &endpoint{addr: addr})
		keyParts = append(keyParts, addr)
	}
	where := fmt.Sprintf("DestinationRule TLS for %s:%d", svc.Host, port)
	switch rt.mode {
	case networking.ClientTLSSettings_DISABLE:
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		// As Istio: the registry's service accounts count in every trust domain alias
		// (a server may still hold a certificate of the old name); the
		// DestinationRule's subjectAltNames replace them, and its sni replaces the
		// generated one.
		ids := withAliases(svc.identities(), aliases)
		if sans := tlsSet.GetSubjectAltNames(); len(sans) > 0 {
			ids = ids[:0:0]
			for _, san := range sans {
				id, err := spiffeid.FromString(san)
				if err != nil {
					return nil, fmt.Errorf("%s: subjectAltNames %q: ISTIO_MUTUAL needs SPIFFE IDs: %w", where, san, err)
				}
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			// Istio then configures no SAN match: the chain to the mesh bundle is the
			// only check. Follow it, and say so once per host.
			p.warnNoIdentity(svc.Host)
		}
		for _, id := range ids {
			keyParts = append(keyParts, id.String())
		}
		sni := tlsSet.GetSni()
		if sni == "" {
			sni = istioSNI(svc.Host, port)
		}
		for _, a := range aliases {
			keyParts = append(keyParts, a.Name())
		}
		keyParts = append(keyParts, sni, ts.key())
		base := p.newMeshClientTLS(sni, ids, svc.Host, ts, aliases)
		rt.tlsHTTP1 = withALPN(base, alpnIstioHTTP1)
		rt.tlsH2 = withALPN(base, alpnH2)
		rt.tlsTCP = withALPN(base, alpnIstioTCP)
		rt.tlsMux = base.Clone()
		rt.tlsMux.NextProtos = []string{alpnMux, alpnIstioHTTP1}
	case networking.ClientTLSSettings_SIMPLE, networking.ClientTLSSettings_MUTUAL:
		base, err := fileClientTLS(tlsSet, svc.Host, rt.mode == networking.ClientTLSSettings_MUTUAL)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		keyParts = append(keyParts, tlsSet.String())
		rt.tlsHTTP1 = withALPN(base, alpnHTTP1)
		rt.tlsH2 = withALPN(base, alpnH2)
		rt.tlsTCP = base
	default:
		return nil, fmt.Errorf("%s: mode %v is not supported", where, rt.mode)
	}
	rt.key = hostPortKey(svc.Host, port) + "|" + rt.mode.String() + "|" + strings.Join(keyParts, ",")
	return rt, nil
}

func withALPN(c *tls.Config, proto string) *tls.Config {
	c = c.Clone()
	c.NextProtos = []string{proto}
	return c
}

// fileClientTLS builds SIMPLE or MUTUAL TLS from the DestinationRule's files: the
// server chain is checked against caCertificates (system roots when empty) and its
// name against subjectAltNames, or else the SNI (sni, else the host).
func fileClientTLS(s *networking.ClientTLSSettings, host string, mutual bool) (*tls.Config, error) {
	sni := s.GetSni()
	if sni == "" {
		sni = host
	}
	c := &tls.Config{ServerName: sni, MinVersion: tls.VersionTLS12}
	if mutual {
		if s.GetClientCertificate() == "" || s.GetPrivateKey() == "" {
			return nil, errors.New("mode MUTUAL needs clientCertificate and privateKey")
		}
		kp, err := tls.LoadX509KeyPair(s.GetClientCertificate(), s.GetPrivateKey())
		if err != nil {
			return nil, fmt.Errorf("clientCertificate %s / privateKey %s: %w", s.GetClientCertificate(), s.GetPrivateKey(), err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	if s.GetInsecureSkipVerify().GetValue() {
		c.InsecureSkipVerify = true
		return c, nil
	}
	var roots *x509.CertPool
	if f := s.GetCaCertificates(); f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("caCertificates: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("caCertificates %s: no PEM certificate found", f)
		}
	}
	sans := s.GetSubjectAltNames()
	c.InsecureSkipVerify = true // verified below, with SAN matching Istio's way
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errNoPeerCertificate
		}
		inter := x509.NewCertPool()
		for _, x := range cs.PeerCertificates[1:] {
			inter.AddCert(x)
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
			return fmt.Errorf("verify %s server certificate: %w", host, err)
		}
		if len(sans) == 0 {
			return leaf.VerifyHostname(sni)
		}
		for _, want := range sans {
			if leaf.VerifyHostname(want) == nil || slices.ContainsFunc(leaf.URIs, func(u *url.URL) bool { return u.String() == want }) {
				return nil
			}
		}
		return fmt.Errorf("server certificate for %s matches none of subjectAltNames %v", host, sans)
	}
	return c, nil
}

func (p *Proxy) initRoute(rt *route) {
	for _, e := range rt.eps {
		addr := e.addr
		e.http1 = p.newPool(func(ctx context.Context) (net.Conn, string, error) {
			return p.dialRoute(ctx, rt, addr, rt.tlsHTTP1, protoHTTP1)
		})
		if rt.tlsMux != nil {
			e.mux = &muxPool{p: p, rt: rt, ep: e}
		}
	}
	rt.h2 = &http2.Transport{
		AllowHTTP: rt.tlsH2 == nil,
		DialTLSContext: func(ctx context.Context, _, addr string, _ *tls.Config) (net.Conn, error) {
			c, _, err := p.dialRoute(ctx, rt, addr, rt.tlsH2, protoH2)
			return c, err
		},
		ReadIdleTimeout: 30 * time.Second,
	}
}

// pick returns the next endpoint, round robin.
func (rt *route) pick() (*endpoint, error) {
	if rt.err != nil {
		return nil, rt.err
	}
	if len(rt.eps) == 0 {
		return nil, fmt.Errorf("%s: %w: no endpoints", rt.host, ErrNoRoute)
	}
	n := rt.next.Add(1)
	return rt.eps[int(n)%len(rt.eps)], nil
}

func (rt *route) getHTTP1(ctx context.Context) (*upConn, error) {
	ep, err := rt.pick()
	if err != nil {
		return nil, err
	}
	return ep.http1.get(ctx)
}

// dialRoute connects to one endpoint and runs the route's TLS handshake; it returns
// the verified server principal for ISTIO_MUTUAL. A TLS connection is listed among the
// live connections (proto is what it will carry) until it is closed.
func (p *Proxy) dialRoute(ctx context.Context, rt *route, addr string, tc *tls.Config, proto protocol) (net.Conn, string, error) {
	if rt.err != nil {
		return nil, "", rt.err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	c, err := p.dialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("connect to %s endpoint %s: %w", rt.host, addr, err)
	}
	c = newSysConn(c)
	if tc == nil {
		return c, "", nil
	}
	tconn := tls.Client(c, tc)
	if err := tconn.HandshakeContext(ctx); err != nil {
		c.Close() //nolint:errcheck
		if p.cfg.Observer != nil {
			p.cfg.Observer.HandshakeFailed(Outbound, handshakeReason(err))
		}
		return nil, "", fmt.Errorf("TLS to %s endpoint %s: %w", rt.host, addr, err)
	}
	peer := ""
	if rt.mode == networking.ClientTLSSettings_ISTIO_MUTUAL {
		if id, err := x509svid.IDFromCert(tconn.ConnectionState().PeerCertificates[0]); err == nil {
			peer = principalOf(id)
		}
	}
	return p.trackUpstream(rt, tconn, proto), peer, nil
}

// trackUpstream lists tc, a TLS connection the sidecar opened toward a destination, in
// the live-connection table (what `ctl tls-check` shows for outbound traffic: the
// session that actually crosses the network, not the app's plaintext leg) until it is
// closed.
func (p *Proxy) trackUpstream(rt *route, tc *tls.Conn, proto protocol) net.Conn {
	st := tc.ConnectionState()
	cs := &connState{dir: Outbound, upstream: true, c: tc, start: p.now(), route: rt, mode: rt.mode.String(), proto: proto}
	if a, ok := tc.LocalAddr().(*net.TCPAddr); ok {
		cs.src = a.AddrPort()
	}
	if a, ok := tc.RemoteAddr().(*net.TCPAddr); ok {
		cs.dst = a.AddrPort()
	}
	if len(st.PeerCertificates) > 0 {
		if id, err := x509svid.IDFromCert(st.PeerCertificates[0]); err == nil {
			cs.peerPrincipal = principalOf(id)
		}
	}
	if rt.mode == networking.ClientTLSSettings_ISTIO_MUTUAL {
		if id := p.ident.Load(); id != nil {
			cs.localPrincipal = id.principal
		}
	}
	cs.setTLS(st)
	cs.ready.Store(true)
	p.conns.add(cs)
	return &upstreamConn{Conn: tc, tc: tc, done: func() { p.conns.remove(cs) }}
}

// upstreamConn is a tracked upstream TLS connection: closing it leaves the table.
type upstreamConn struct {
	net.Conn
	tc   *tls.Conn
	once sync.Once
	done func()
}

func (u *upstreamConn) Close() error {
	u.once.Do(u.done)
	return u.Conn.Close()
}

// CloseWrite passes a half-close on (opaque TCP relies on it).
func (u *upstreamConn) CloseWrite() error { return u.tc.CloseWrite() }

// ConnectionState keeps the TLS state visible to HTTP/2's transport.
func (u *upstreamConn) ConnectionState() tls.ConnectionState { return u.tc.ConnectionState() }

// handleOutbound runs one connection from the app: explicit listener idx, or the
// transparent listener (idx < 0) where the original destination picks the route and
// unknown destinations pass through as plain TCP (Istio's ALLOW_ANY).
func (p *Proxy) handleOutbound(ctx context.Context, c net.Conn, idx int) {
	cs := p.newConnState(Outbound, c)
	defer p.endConn(cs)
	st := p.state.Load()
	var passthrough netip.AddrPort
	if idx >= 0 {
		cs.route = st.explicit[idx]
		if cs.route == nil {
			p.log.Warn("outbound connection refused: host not in the service registry", "host", p.cfg.Outbound[idx].Host)
			return
		}
	} else {
		dst := p.originalDst(c)
		if !dst.IsValid() {
			p.log.Warn("outbound connection without an original destination refused", "peer", cs.src.String())
			return
		}
		cs.dst = dst
		if cs.route = st.byAddr[dst]; cs.route == nil {
			passthrough = dst
		}
	}
	br := p.bufs.reader(c)
	defer func() {
		if br != nil {
			p.bufs.putReader(br)
		}
	}()
	if passthrough.IsValid() {
		cs.mode, cs.proto = "PASSTHROUGH", protoTCP
		cs.ready.Store(true)
		p.serveOutboundTCP(ctx, cs, c, br, passthrough.String())
		return
	}
	cs.mode = cs.route.mode.String()
	proto, err := sniff(c, br, p.cfg.ProtocolDetectionTimeout, classifyPlain)
	if err != nil {
		return
	}
	cs.proto = proto
	cs.ready.Store(true)
	switch proto {
	case protoHTTP1:
		p.serveHTTP1(ctx, cs, c, br)
	case protoH2:
		pc := &peekedConn{Conn: c, r: br, bufs: &p.bufs}
		br = nil
		p.serveH2(ctx, cs, pc)
		pc.release()
	default:
		p.serveOutboundTCP(ctx, cs, c, br, "")
	}
}

func (p *Proxy) serveOutboundTCP(ctx context.Context, cs *connState, c net.Conn, br *bufio.Reader, passthrough string) {
	rec := cs.record("tcp", cs.start)
	defer p.observeTimed(&rec)
	var up net.Conn
	var err error
	if passthrough != "" {
		dctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
		up, err = p.dialer().DialContext(dctx, "tcp", passthrough)
		cancel()
	} else {
		var ep *endpoint
		if ep, err = cs.route.pick(); err == nil {
			up, rec.PeerPrincipal, err = p.dialRoute(ctx, cs.route, ep.addr, cs.route.tlsTCP, protoTCP)
		}
	}
	if up != nil {
		if a, ok := up.RemoteAddr().(*net.TCPAddr); ok {
			rec.Upstream = a.AddrPort()
		}
	}
	if err != nil {
		rec.Flags = "UF"
		p.log.Warn("outbound TCP connect failed", "err", err)
		return
	}
	defer up.Close()
	rec.BytesSent, rec.BytesReceived = splice(c, br, up, nil)
}

// withAliases adds to ids each identity's path in every trust domain of aliases.
func withAliases(ids []spiffeid.ID, aliases []spiffeid.TrustDomain) []spiffeid.ID {
	if len(aliases) == 0 {
		return ids
	}
	out := slices.Clone(ids)
	for _, id := range ids {
		for _, td := range aliases {
			if a, err := spiffeid.FromPath(td, id.Path()); err == nil && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}
