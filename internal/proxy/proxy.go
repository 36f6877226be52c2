package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
)

// OriginalDstFunc recovers the pre-redirect destination of a captured connection
// (SO_ORIGINAL_DST); the redirect package provides it for transparent mode.
type OriginalDstFunc func(c *net.TCPConn) (netip.AddrPort, error)

// ExplicitOutbound is one `--outbound HOST:PORT=LOCAL_PORT`: the app calls Listen
// (127.0.0.1:LOCAL_PORT) to reach service Host on Port.
type ExplicitOutbound struct {
	Host   string
	Port   uint32
	Listen string
}

// Config is what a Proxy is built from. Certs and Apps are required.
type Config struct {
	// Certs is the workload certificate and trust bundle (the agent).
	Certs CertSource
	// Apps are the workload's ports on loopback (`--app`); inbound traffic for a port
	// goes to the app with that port, or to the only app when there is one.
	Apps []netip.AddrPort
	// InboundAddr is the inbound listener (`--inbound-port`), e.g. "0.0.0.0:15006".
	InboundAddr string
	// OutboundAddr is the transparent outbound listener (`--outbound-port`); empty for
	// none. It needs OriginalDst.
	OutboundAddr string
	Outbound     []ExplicitOutbound
	// OriginalDst, when set, recovers captured connections' destinations (transparent
	// mode) on both listeners.
	OriginalDst OriginalDstFunc
	TLS         TLSSettings
	// Observer gets access-log/metrics records; nil for none.
	Observer Observer
	Logger   *slog.Logger
	Now      func() time.Time
	// ProtocolDetectionTimeout bounds how long a plaintext connection may stay silent
	// before it is treated as opaque TCP (server-first protocols). Default 100ms.
	ProtocolDetectionTimeout time.Duration
	// DrainTimeout is how long Run lets open connections finish after its context
	// ends before closing them (default 5s, Istio's terminationDrainDuration).
	DrainTimeout time.Duration
	// IdleTimeout closes downstream keep-alive connections and upstream pooled ones
	// idle this long (default 1h downstream, 60s upstream pool).
	IdleTimeout time.Duration
	// ConnectTimeout bounds upstream dials and handshakes (default 10s).
	ConnectTimeout time.Duration
	// MaxIdlePerUpstream caps pooled idle connections per upstream (default 128).
	MaxIdlePerUpstream int
	// H2ReadIdleTimeout and H2PingTimeout keep multiplexed connections to peer
	// sidecars honest, as x/net/http2's ReadIdleTimeout and PingTimeout do: after
	// H2ReadIdleTimeout without a frame from the peer (default 30s) it gets a PING, and
	// without any frame within H2PingTimeout after that (default 15s) the connection
	// is closed and its streams fail, instead of waiting on a peer that is gone.
	H2ReadIdleTimeout, H2PingTimeout time.Duration
	// DisableH2Upstream sends outbound HTTP/1.1 to peer sidecars (ISTIO_MUTUAL) over
	// pooled HTTP/1.1 connections instead of multiplexing it as HTTP/2 streams on a
	// few connections per endpoint (the default; a peer that is not a meshguard
	// sidecar gets pooled HTTP/1.1 either way).
	DisableH2Upstream bool
}

// Policy is everything the proxy enforces that the configuration can change. It is
// compiled by SetPolicy and swapped whole; nil fields mean Istio's defaults: PERMISSIVE,
// no authorization policies (allow), no RequestAuthentication, no DestinationRules
// (ISTIO_MUTUAL to registry hosts), an empty registry.
type Policy struct {
	PeerAuthn    PeerAuthn
	Authorizer   Authorizer
	RequestAuthn RequestAuthenticator
	Destinations DestinationRules
	Services     []Service
	// TLS replaces Config.TLS (meshConfig.meshMTLS) for handshakes from now on; nil
	// keeps Config.TLS.
	TLS *TLSSettings
	// TrustDomainAliases (meshConfig.trustDomainAliases) are the trust domains, besides
	// the one of the workload's own certificate, whose peers mTLS accepts, chained to
	// the same trust bundle; ISTIO_MUTUAL secure naming accepts the registry's service
	// accounts under them too. A peer named in any other trust domain fails the
	// handshake, as Istio's sidecars refuse it (PILOT_SKIP_VALIDATE_TRUST_DOMAIN off).
	TrustDomainAliases []spiffeid.TrustDomain
}

// Proxy is one sidecar's data path. Build it with New, set a policy with SetPolicy,
// then Run it.
type Proxy struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	bufs bufPools

	ident    atomic.Pointer[identity]
	state    atomic.Pointer[compiled]
	sessions tls.ClientSessionCache

	apps   []*appTarget
	appH2  *http2.Transport
	h2srv  *http2.Server
	h2base *http.Server
	rpOnce sync.Once
	rp     *httputil.ReverseProxy
	rpBufs rpBufferPool
	// muxExchanges recycles the server side's per-stream HTTP/1.1 heads.
	muxExchanges sync.Pool

	routesMu sync.Mutex
	routes   map[string]*route
	warned   sync.Map // host → struct{}: ISTIO_MUTUAL without an identity to check

	conns    connTable
	wg       sync.WaitGroup
	draining atomic.Bool

	ready    chan struct{}
	mu       sync.Mutex
	inAddr   net.Addr
	outAddr  net.Addr
	explAddr []net.Addr
}

type appTarget struct {
	addr netip.AddrPort
	pool *connPool
}

// New validates cfg and builds a Proxy. It starts nothing and opens no socket.
func New(cfg Config) (*Proxy, error) {
	if cfg.Certs == nil {
		return nil, errors.New("proxy config: Certs is required")
	}
	if len(cfg.Apps) == 0 {
		return nil, errors.New("proxy config: at least one app address is required (--app)")
	}
	for _, a := range cfg.Apps {
		if !a.IsValid() || a.Port() == 0 {
			return nil, fmt.Errorf("proxy config: app address %v is not IP:PORT", a)
		}
	}
	if cfg.OutboundAddr != "" && cfg.OriginalDst == nil {
		return nil, errors.New("proxy config: the transparent outbound listener needs an original-destination function")
	}
	for i, o := range cfg.Outbound {
		if o.Host == "" || o.Port == 0 || o.Listen == "" {
			return nil, fmt.Errorf("proxy config: outbound[%d]: want HOST:PORT=LOCAL_PORT, got host %q port %d listen %q", i, o.Host, o.Port, o.Listen)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TLS.MinVersion == 0 && cfg.TLS.CipherSuites == nil && cfg.TLS.Curves == nil {
		cfg.TLS = DefaultTLSSettings()
	}
	if cfg.ProtocolDetectionTimeout == 0 {
		cfg.ProtocolDetectionTimeout = 100 * time.Millisecond
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = time.Hour
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.MaxIdlePerUpstream == 0 {
		cfg.MaxIdlePerUpstream = 128
	}
	if cfg.H2ReadIdleTimeout == 0 {
		cfg.H2ReadIdleTimeout = 30 * time.Second
	}
	if cfg.H2PingTimeout == 0 {
		cfg.H2PingTimeout = 15 * time.Second
	}
	p := &Proxy{
		cfg:      cfg,
		log:      cfg.Logger,
		now:      cfg.Now,
		sessions: tls.NewLRUClientSessionCache(1024),
		routes:   make(map[string]*route),
		ready:    make(chan struct{}),
	}
	for _, a := range cfg.Apps {
		addr := a.String()
		p.apps = append(p.apps, &appTarget{addr: a, pool: p.newPool(func(ctx context.Context) (net.Conn, string, error) {
			c, err := p.dialer().DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, "", err
			}
			return newSysConn(c), "", nil
		})})
	}
	p.appH2 = &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return p.dialer().DialContext(ctx, network, addr)
		},
		ReadIdleTimeout: 30 * time.Second,
	}
	p.h2base = &http.Server{ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug)}
	p.h2srv = &http2.Server{MaxConcurrentStreams: 1000, IdleTimeout: cfg.IdleTimeout}
	if err := http2.ConfigureServer(p.h2base, p.h2srv); err != nil {
		return nil, fmt.Errorf("configure HTTP/2 server: %w", err)
	}
	p.state.Store(&compiled{pol: &Policy{}, tls: cfg.TLS, serverTLS: p.newServerTLS(cfg.TLS, nil)})
	return p, nil
}

// asTCP returns the *net.TCPConn under c (itself, or under a sysConn).
func asTCP(c net.Conn) (*net.TCPConn, bool) {
	switch c := c.(type) {
	case *net.TCPConn:
		return c, true
	case interface{ tcpConn() *net.TCPConn }:
		return c.tcpConn(), true
	}
	return nil, false
}

func (p *Proxy) dialer() *net.Dialer {
	return &net.Dialer{Timeout: p.cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
}

func (p *Proxy) newPool(d dialFunc) *connPool {
	return &connPool{dial: d, bufs: &p.bufs, maxIdle: p.cfg.MaxIdlePerUpstream, idleTimeout: 60 * time.Second, now: p.now}
}

// Ready is closed once Run has bound every listener and has a certificate.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// InboundAddr is the bound inbound listener address (valid after Ready).
func (p *Proxy) InboundAddr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inAddr
}

// OutboundAddr is the bound transparent outbound listener address, nil if none.
func (p *Proxy) OutboundAddr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outAddr
}

// ExplicitAddrs are the bound explicit outbound listeners, in Config.Outbound order.
func (p *Proxy) ExplicitAddrs() []net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]net.Addr(nil), p.explAddr...)
}

// Connections lists the live connections (the admin endpoint's data).
func (p *Proxy) Connections() []ConnInfo {
	var out []ConnInfo
	for _, c := range p.conns.snapshot() {
		if c.ready.Load() { // still handshaking: fields not final yet
			out = append(out, c.info())
		}
	}
	return out
}

// Run waits for the first certificate, binds the listeners and serves until ctx ends;
// then it stops accepting, lets open connections finish for DrainTimeout and closes
// the rest. It returns nil after a clean drain.
func (p *Proxy) Run(ctx context.Context) error {
	if err := p.waitForCert(ctx); err != nil {
		return err
	}
	var lc net.ListenConfig
	type lis struct {
		l      net.Listener
		handle func(context.Context, net.Conn)
	}
	var all []lis
	closeAll := func() {
		for _, l := range all {
			l.l.Close() //nolint:errcheck // shutting down
		}
	}
	listen := func(addr, what string) (net.Listener, error) {
		l, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("listen for %s on %s: %w", what, addr, err)
		}
		return l, nil
	}
	in, err := listen(p.cfg.InboundAddr, "inbound traffic")
	if err != nil {
		return err
	}
	all = append(all, lis{in, p.handleInbound})
	p.mu.Lock()
	p.inAddr = in.Addr()
	p.mu.Unlock()
	if p.cfg.OutboundAddr != "" {
		l, err := listen(p.cfg.OutboundAddr, "transparent outbound traffic")
		if err != nil {
			return err
		}
		all = append(all, lis{l, func(ctx context.Context, c net.Conn) { p.handleOutbound(ctx, c, -1) }})
		p.mu.Lock()
		p.outAddr = l.Addr()
		p.mu.Unlock()
	}
	for i, o := range p.cfg.Outbound {
		l, err := listen(o.Listen, "outbound "+o.Host)
		if err != nil {
			return err
		}
		all = append(all, lis{l, func(ctx context.Context, c net.Conn) { p.handleOutbound(ctx, c, i) }})
		p.mu.Lock()
		p.explAddr = append(p.explAddr, l.Addr())
		p.mu.Unlock()
	}
	close(p.ready)
	p.log.Info("proxy listening", "inbound", in.Addr().String(), "outbound", p.cfg.OutboundAddr, "explicit", len(p.cfg.Outbound))

	// Connection handlers get a context that outlives ctx: draining is driven by
	// p.draining and the deadline below, not by cancelling in-flight requests.
	connCtx, cancelConns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelConns()
	var accepting sync.WaitGroup
	for _, l := range all {
		accepting.Go(func() { p.accept(connCtx, l.l, l.handle) })
	}
	accepting.Go(func() { p.watchCerts(ctx) })
	<-ctx.Done()
	p.draining.Store(true)
	closeAll()
	p.drainIdle()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.DrainTimeout)
	defer cancel()
	go p.h2base.Shutdown(shutdownCtx) //nolint:errcheck // sends GOAWAY to HTTP/2 connections
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-shutdownCtx.Done():
		p.log.Warn("drain deadline passed, closing remaining connections", "open", len(p.conns.snapshot()))
		for _, cs := range p.conns.snapshot() {
			cs.c.Close() //nolint:errcheck // forced close
		}
		cancelConns()
		<-done
	}
	accepting.Wait()
	p.closeRoutes(nil)
	for _, a := range p.apps {
		a.pool.close()
	}
	p.appH2.CloseIdleConnections()
	return nil
}

// drainIdle wakes keep-alive connections waiting for their next request so they close
// now; busy ones close after their current request.
func (p *Proxy) drainIdle() {
	for _, cs := range p.conns.snapshot() {
		if cs.idle.Load() {
			cs.c.SetReadDeadline(time.Unix(1, 0)) //nolint:errcheck // wakes the reader
		}
	}
}

func (p *Proxy) accept(ctx context.Context, l net.Listener, handle func(context.Context, net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			if p.draining.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("accept failed", "listener", l.Addr().String(), "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			handle(ctx, newSysConn(c))
		}()
	}
}

func (p *Proxy) waitForCert(ctx context.Context) error {
	for {
		id, err := newIdentity(p.cfg.Certs)
		if err == nil {
			p.ident.Store(id)
			return nil
		}
		p.log.Info("waiting for the workload certificate", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("no workload certificate before shutdown: %w", err)
		case <-p.cfg.Certs.Updated():
		case <-time.After(time.Second):
		}
	}
}

// watchCerts rebuilds the cached certificate on every rotation. Open connections keep
// their session; new handshakes get the new certificate.
func (p *Proxy) watchCerts(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.cfg.Certs.Updated():
			id, err := newIdentity(p.cfg.Certs)
			if err != nil {
				p.log.Error("certificate rotation: keeping the current certificate", "err", err)
				continue
			}
			p.ident.Store(id)
			p.log.Info("workload certificate rotated", "spiffe_id", id.id.String(), "not_after", id.cert.Leaf.NotAfter)
		}
	}
}

func (p *Proxy) newConnState(dir Direction, c net.Conn) *connState {
	cs := &connState{dir: dir, c: c, start: p.now()}
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		cs.src = a.AddrPort()
	}
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		cs.dst = a.AddrPort()
	}
	if id := p.ident.Load(); id != nil {
		cs.localPrincipal = id.principal
	}
	p.conns.add(cs)
	return cs
}

func (p *Proxy) endConn(cs *connState) {
	p.conns.remove(cs)
	cs.c.Close() //nolint:errcheck // done with it
}

func (p *Proxy) observe(r *Record) {
	if p.cfg.Observer != nil {
		p.cfg.Observer.Observe(r)
	}
}

func (p *Proxy) handshakeFailed(dir Direction, reason string, attrs ...any) {
	p.log.Debug("connection refused", append([]any{"direction", dir.String(), "reason", reason}, attrs...)...)
	if p.cfg.Observer != nil {
		p.cfg.Observer.HandshakeFailed(dir, reason)
	}
}

// warnNoIdentity logs once per host that ISTIO_MUTUAL to it checks the chain only.
func (p *Proxy) warnNoIdentity(host string) {
	if _, loaded := p.warned.LoadOrStore(host, struct{}{}); loaded {
		return
	}
	p.log.Warn("ISTIO_MUTUAL: the registry names no service account for this host and the DestinationRule no subjectAltNames; "+
		"the server is verified against the mesh trust bundle only (as Istio does), not by identity",
		"host", host)
}
