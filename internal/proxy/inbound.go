package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	security "istio.io/api/security/v1beta1"
)

const (
	bodyDenied     = "RBAC: access denied"
	bodyJWTInvalid = "Jwt verification fails"
)

// peekedConn reads first what sniffing left buffered in r, then the connection itself,
// and hands r back to the pool as soon as it is empty.
type peekedConn struct {
	net.Conn
	r    *bufio.Reader
	bufs *bufPools
}

func (pc *peekedConn) Read(b []byte) (int, error) {
	if pc.r != nil {
		if pc.r.Buffered() > 0 {
			return pc.r.Read(b)
		}
		pc.bufs.putReader(pc.r)
		pc.r = nil
	}
	return pc.Conn.Read(b)
}

func (pc *peekedConn) release() {
	if pc.r != nil {
		pc.bufs.putReader(pc.r)
		pc.r = nil
	}
}

// CloseWrite half-closes when the underlying connection can.
func (pc *peekedConn) CloseWrite() error {
	if cw, ok := pc.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// originalDst returns the captured connection's original destination, or an invalid
// AddrPort when the connection was not redirected (explicit mode).
func (p *Proxy) originalDst(c net.Conn) netip.AddrPort {
	if p.cfg.OriginalDst == nil {
		return netip.AddrPort{}
	}
	tc, ok := asTCP(c)
	if !ok {
		return netip.AddrPort{}
	}
	dst, err := p.cfg.OriginalDst(tc)
	if err != nil {
		return netip.AddrPort{}
	}
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok && la.AddrPort() == dst {
		return netip.AddrPort{} // not redirected: the socket's own address
	}
	return dst
}

func (p *Proxy) appFor(port uint32) *appTarget {
	for _, a := range p.apps {
		if uint32(a.addr.Port()) == port {
			return a
		}
	}
	return p.apps[0]
}

func (c *compiled) mtlsMode(port uint32) security.PeerAuthentication_MutualTLS_Mode {
	if c.pol.PeerAuthn == nil {
		return security.PeerAuthentication_MutualTLS_PERMISSIVE
	}
	m := c.pol.PeerAuthn.MTLSMode(port)
	if m == security.PeerAuthentication_MutualTLS_UNSET {
		return security.PeerAuthentication_MutualTLS_PERMISSIVE
	}
	return m
}

// handleInbound runs one inbound connection: decide mTLS or plaintext per the
// PeerAuthentication mode of its port, authenticate the peer, detect the protocol and
// hand over to the HTTP/1.1, HTTP/2 or TCP path, which authorize and forward to the app.
func (p *Proxy) handleInbound(ctx context.Context, c net.Conn) {
	cs := p.newConnState(Inbound, c)
	defer p.endConn(cs)
	st := p.state.Load()

	// Which workload port is this for? The original destination when captured; the
	// only app's port when there is one; otherwise (explicit mode, several apps) the
	// SNI after the handshake, or for plaintext HTTP the Host header of each request.
	var port uint32
	if od := p.originalDst(c); od.IsValid() {
		port = uint32(od.Port())
		cs.dst = od
	} else if len(p.apps) == 1 {
		port = uint32(p.apps[0].addr.Port())
	}
	br := p.bufs.reader(c)
	pc := &peekedConn{Conn: c, r: br, bufs: &p.bufs}
	defer pc.release()

	mode := security.PeerAuthentication_MutualTLS_UNSET
	if port != 0 {
		mode = st.mtlsMode(port)
	}
	first := protoTLS
	mux := false // a peer sidecar multiplexing HTTP/1.1 over HTTP/2 (alpnMux)
	if mode != security.PeerAuthentication_MutualTLS_STRICT {
		var err error
		if first, err = sniff(c, br, p.cfg.ProtocolDetectionTimeout, classifyFirst); err != nil {
			return
		}
	}
	// Istio does not terminate TLS on a DISABLE port: whatever TLS the client speaks
	// (its own, end to end with the app) passes through as opaque bytes.
	opaque := first == protoTLS && mode == security.PeerAuthentication_MutualTLS_DISABLE
	var conn net.Conn = pc
	var rd *bufio.Reader
	if first == protoTLS && !opaque {
		tc := tls.Server(pc, st.serverTLS)
		hctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			reason := handshakeReason(err)
			if reason == "not_tls" && mode == security.PeerAuthentication_MutualTLS_STRICT {
				reason = "plaintext_to_strict" // STRICT skips sniffing: plaintext fails here
			}
			p.handshakeFailed(Inbound, reason, "peer", cs.src.String(), "err", err)
			return
		}
		state := tc.ConnectionState()
		cs.setTLS(state)
		if port == 0 {
			if _, sp, ok := parseIstioSNI(state.ServerName); ok {
				port = sp
			}
		}
		if port == 0 {
			port = uint32(p.apps[0].addr.Port())
		}
		if mode == security.PeerAuthentication_MutualTLS_UNSET {
			mode = st.mtlsMode(port)
		}
		if mode == security.PeerAuthentication_MutualTLS_DISABLE {
			// Known only after the handshake (several apps, port from the SNI): too late
			// to pass the client's TLS through, so refuse rather than serve a DISABLE
			// port over mTLS it did not ask for.
			p.handshakeFailed(Inbound, "mtls_to_disable_port", "peer", cs.src.String(), "port", port)
			return
		}
		leaf := state.PeerCertificates[0]
		peerID, err := x509svid.IDFromCert(leaf)
		if err != nil { // VerifyConnection already checked it; fail closed anyway
			p.handshakeFailed(Inbound, "no_spiffe_id", "err", err)
			return
		}
		cs.peerPrincipal = principalOf(peerID)
		if id := p.ident.Load(); id != nil {
			cs.xfcc = xfccValue(id.id, leaf, peerID)
			cs.xfccHeader = "x-forwarded-client-cert: " + cs.xfcc + "\r\n"
		}
		cs.mode = mode.String()
		conn = tc
		rd = p.bufs.reader(tc)
		switch state.NegotiatedProtocol {
		case alpnMux:
			cs.proto, mux = protoH2, true
		case alpnIstioH2, alpnH2:
			cs.proto = protoH2
		case alpnIstioHTTP1, alpnHTTP1:
			cs.proto = protoHTTP1
		case alpnIstioTCP:
			cs.proto = protoTCP
		default:
			if cs.proto, err = sniff(tc, rd, p.cfg.ProtocolDetectionTimeout, classifyPlain); err != nil {
				return
			}
		}
	} else {
		if port == 0 {
			// Explicit mode with several apps: plaintext HTTP picks the app by each
			// request's Host port (hostRouted); anything else goes to the first app.
			port = uint32(p.apps[0].addr.Port())
			mode = st.mtlsMode(port)
			cs.hostRouted = first == protoHTTP1 || first == protoH2
		}
		if mode == security.PeerAuthentication_MutualTLS_STRICT {
			p.handshakeFailed(Inbound, "plaintext_to_strict", "peer", cs.src.String(), "port", port)
			return
		}
		cs.mode = mode.String()
		cs.proto = first
		if opaque {
			cs.proto = protoTCP
		}
		rd = br
		pc.r = nil // rd owns the buffered bytes now
	}
	defer func() {
		if rd != nil {
			p.bufs.putReader(rd)
		}
	}()
	cs.port = port
	cs.app = p.appFor(port)
	cs.ready.Store(true)

	switch {
	case mux:
		p.serveMux(ctx, cs, conn, rd)
	case cs.proto == protoHTTP1:
		p.serveHTTP1(ctx, cs, conn, rd)
	case cs.proto == protoH2:
		h2c := &peekedConn{Conn: conn, r: rd, bufs: &p.bufs}
		rd = nil
		p.serveH2(ctx, cs, h2c)
		h2c.release()
	default:
		p.serveInboundTCP(ctx, cs, conn, rd)
	}
}

// appForHost picks the app for one plaintext request on a host-routed connection (see
// handleInbound): the app whose port the Host header names. ok is false when that port
// is STRICT, which plaintext must not reach; an unknown or missing port keeps the
// connection's app.
func (p *Proxy) appForHost(cs *connState, st *compiled, host string) (app *appTarget, port uint32, ok bool) {
	_, ps, err := net.SplitHostPort(host)
	if err != nil {
		return cs.app, cs.port, true
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return cs.app, cs.port, true
	}
	for _, a := range p.apps {
		if uint64(a.addr.Port()) == n {
			if st.mtlsMode(uint32(n)) == security.PeerAuthentication_MutualTLS_STRICT {
				return nil, 0, false
			}
			return a, uint32(n), true
		}
	}
	return cs.app, cs.port, true
}

// admit runs JWT authentication (HTTP only; target is the raw request target, since
// fromParams reads the query) and then authorization for one inbound request, and
// records the deciding policy in rec. It returns 0 to forward, or the status to
// answer with.
func (p *Proxy) admit(ctx context.Context, cs *connState, st *compiled, r *Request, target string, rec *Record) int {
	if r.HTTP && st.pol.RequestAuthn != nil {
		auth, err := st.pol.RequestAuthn.Authenticate(ctx, r.Headers, target)
		if err != nil {
			p.log.Debug("request authentication failed", "peer", cs.peerPrincipal, "path", r.Path, "err", err)
			return 401
		}
		r.Auth = auth
	}
	if st.pol.Authorizer == nil {
		return 0
	}
	d := st.pol.Authorizer.Authorize(ctx, r)
	rec.decided(&d)
	if d.Policy != "" {
		if old := cs.policy.Load(); old == nil || *old != d.Policy {
			pol := d.Policy
			cs.policy.Store(&pol)
		}
	}
	if !d.Allow {
		p.log.Debug("request denied", "peer", cs.peerPrincipal, "policy", d.Policy, "reason", d.Reason)
		if d.Status != 0 {
			return d.Status
		}
		return 403
	}
	return 0
}

func (cs *connState) request() Request {
	return Request{
		SourcePrincipal: cs.peerPrincipal,
		Source:          cs.src,
		Destination:     cs.dst,
		SNI:             cs.sni,
	}
}

// internMethod avoids allocating for the common methods.
func internMethod(b []byte) string {
	for _, m := range httpMethods {
		if len(b) == len(m)-1 && string(b) == m[:len(m)-1] {
			return m[:len(m)-1]
		}
	}
	return string(b)
}

func isXFCC(name []byte) bool { return equalFoldASCII(name, "x-forwarded-client-cert") }

// denyBody is the fixed text a peer gets for a refusal; the cause goes to the log.
func denyBody(status int) string {
	switch status {
	case 401:
		return bodyJWTInvalid
	case 403:
		return bodyDenied
	}
	return statusText(status)
}
