package xds

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/policy"
)

// ServerConfig configures a Server. Store and Authenticator are required.
type ServerConfig struct {
	// Store is where configuration comes from; Run watches it.
	Store config.ConfigStore
	// Authenticator verifies the caller's mesh client certificate (authn/peercert). It
	// is given only the TLS chains: a bearer token never authenticates a stream here.
	Authenticator authn.Authenticator
	// Operators are the identities allowed to read fleet status and config dumps. Empty
	// means nobody: status is closed unless configured.
	Operators []identity.Identity
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock for status and certificate expiry; time.Now when nil.
	Now func() time.Time
	// Observer is told of sidecar streams, pushes and NACKs (metrics); nil: nobody.
	Observer Observer
}

// Server is the control plane's end of the push protocol: the Aggregated Discovery
// Service, serving each sidecar the view of the config that applies to its workload.
type Server struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer

	cfg   ServerConfig
	log   *slog.Logger
	cur   atomic.Pointer[state]
	ready chan struct{}
	once  sync.Once
	nonce atomic.Uint64
	seq   atomic.Uint64
	// stopped ends every stream when Run returns: a stream that outlived Run would hold
	// up the gRPC server's graceful stop and would never see another push.
	stopped context.Context
	stop    context.CancelFunc

	mu    sync.Mutex
	conns map[*conn]struct{}
}

var _ discovery.AggregatedDiscoveryServiceServer = (*Server)(nil)

// NewServer checks cfg and returns a Server. It starts nothing: call Register, then Run.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("xds: server needs a config store")
	}
	if cfg.Authenticator == nil {
		return nil, errors.New("xds: server needs an authenticator for sidecar certificates")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stopped, stop := context.WithCancel(context.Background())
	return &Server{cfg: cfg, log: log, ready: make(chan struct{}), conns: map[*conn]struct{}{}, stopped: stopped, stop: stop}, nil
}

// Register adds the Aggregated Discovery Service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	discovery.RegisterAggregatedDiscoveryServiceServer(r, s)
}

// Ready is closed once the server has a snapshot to serve.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run follows the store: for each new snapshot it builds the per-workload views and
// wakes every stream, each of which pushes only when its own view changed. It returns
// nil when ctx ends, and then ends every stream with codes.Unavailable so that
// sidecars reconnect (to this control plane restarted, or another).
func (s *Server) Run(ctx context.Context) error {
	defer s.stop()
	for snap := range s.cfg.Store.Watch(ctx) {
		start := time.Now()
		s.mu.Lock()
		live := make(map[string]bool, len(s.conns))
		for c := range s.conns {
			live[c.viewKey] = true
		}
		s.mu.Unlock()
		st, err := newState(snap, s.cur.Load(), live)
		if err != nil {
			// Encoding a validated snapshot cannot fail short of a bug; keep serving the
			// previous one rather than push something partial.
			s.log.Error("cannot encode config snapshot; sidecars keep the previous one", "version", snap.Version, "err", err)
			continue
		}
		s.cur.Store(st)
		s.once.Do(func() { close(s.ready) })
		s.mu.Lock()
		n := len(s.conns)
		for c := range s.conns {
			c.wake()
		}
		s.mu.Unlock()
		s.log.Info("config snapshot ready to push", "version", snap.Version, "objects", len(snap.Objects), "streams", n, "prepare", time.Since(start))
	}
	return nil
}

// typeState is the protocol state of one type URL on one stream.
type typeState struct {
	subscribed  bool
	nonce       string // of the last response sent
	sentVersion string
	sentAt      time.Time
	acked       string
	ackedAt     time.Time
	nack        *NACK
}

// NACK is a sidecar's rejection of a push.
type NACK struct {
	Version string    `json:"version"`
	Detail  string    `json:"detail"`
	At      time.Time `json:"at"`
}

// conn is one sidecar stream.
type conn struct {
	id         string
	seq        uint64 // order of connection, from 1
	nodeID     string
	caller     identity.Identity
	workload   policy.Workload
	viewKey    string            // viewKey(workload), which never changes on a stream
	cert       *x509.Certificate // verified leaf, nil without one
	certExpiry time.Time
	connected  time.Time
	notify     chan struct{}

	mu    sync.Mutex
	types map[string]*typeState
	sent  *view // last view pushed
	prev  *view // the view pushed before sent, which the sidecar may still ACK
	acked *view // last view every subscribed type ACKed: the config in force
}

func (c *conn) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// StreamAggregatedResources implements the ADS stream. The caller is authenticated by
// its certificate; its first request decides whether it is a sidecar subscribing to
// config or an operator asking for status.
func (s *Server) StreamAggregatedResources(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(s.stopped, cancel)()
	cred := authn.CredentialsFromGRPC(ctx)
	cred.BearerToken = ""
	caller, err := s.cfg.Authenticator.Authenticate(ctx, cred)
	if err != nil {
		s.log.Warn("xds stream refused", "remote", cred.RemoteAddr, "err", err)
		return status.Errorf(codes.Unauthenticated, "xds: a mesh client certificate is required: %v", err)
	}
	var leaf *x509.Certificate
	if len(cred.VerifiedChains) > 0 && len(cred.VerifiedChains[0]) > 0 {
		leaf = cred.VerifiedChains[0][0]
	}
	reqs := make(chan *discovery.DiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	var first *discovery.DiscoveryRequest
	select {
	case first = <-reqs:
	case err := <-recvErr:
		return recvDone(err)
	case <-ctx.Done():
		return s.streamEnd(ctx, time.Time{})
	}
	if isDebug(first.GetTypeUrl()) {
		return s.serveOperator(ctx, stream, caller.Identity, first, reqs, recvErr)
	}
	return s.serveSidecar(ctx, stream, caller.Identity, leaf, first, reqs, recvErr)
}

func isDebug(t string) bool { return t == TypeDebugSyncz || t == TypeDebugConfigDump }

func recvDone(err error) error {
	if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		return nil
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func (s *Server) serveSidecar(ctx context.Context, stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer,
	id identity.Identity, leaf *x509.Certificate, first *discovery.DiscoveryRequest,
	reqs <-chan *discovery.DiscoveryRequest, recvErr <-chan error) error {
	var expiry time.Time
	if leaf != nil {
		expiry = leaf.NotAfter
	}
	node, err := nodeInfo(first.GetNode())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "xds: node: %v", err)
	}
	// The certificate decides the namespace and service account; a claim that differs is
	// refused outright rather than silently corrected, as istiod does.
	if node.Namespace != "" && node.Namespace != id.Namespace {
		s.log.Warn("xds stream refused: node claims another namespace", "identity", id.String(), "claimed", node.Namespace)
		return status.Errorf(codes.PermissionDenied, "xds: node metadata NAMESPACE %q does not match the certificate's namespace %q", node.Namespace, id.Namespace)
	}
	if node.ServiceAccount != "" && node.ServiceAccount != id.ServiceAccount {
		s.log.Warn("xds stream refused: node claims another service account", "identity", id.String(), "claimed", node.ServiceAccount)
		return status.Errorf(codes.PermissionDenied, "xds: node metadata SERVICE_ACCOUNT %q does not match the certificate's service account %q", node.ServiceAccount, id.ServiceAccount)
	}
	now := s.cfg.Now()
	if !expiry.IsZero() {
		if !expiry.After(now) {
			return status.Errorf(codes.Unauthenticated, "xds: client certificate expired at %s", expiry.UTC().Format(time.RFC3339))
		}
		// A stream outlives no certificate: when it expires the sidecar reconnects
		// with its renewed one and is authenticated again.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, expiry)
		defer cancel()
	}
	seq := s.seq.Add(1)
	c := &conn{
		id: node.ID + "-" + strconv.FormatUint(seq, 10), seq: seq,
		nodeID: node.ID, caller: id, cert: leaf, certExpiry: expiry, connected: now,
		workload: policy.Workload{Namespace: id.Namespace, ServiceAccount: id.ServiceAccount, Name: node.WorkloadName, Labels: node.Labels},
		notify:   make(chan struct{}, 1),
		types:    map[string]*typeState{},
	}
	if c.workload.Name == "" {
		c.workload.Name = id.ServiceAccount
	}
	c.viewKey = viewKey(c.workload)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.cfg.Observer.SidecarConnected()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.cfg.Observer.SidecarDisconnected()
	}()
	log := s.log.With("conn", c.id, "identity", id.String(), "workload", c.workload.Namespace+"/"+c.workload.Name)
	log.Info("sidecar connected")
	defer log.Info("sidecar disconnected")

	select {
	case <-s.ready:
	case <-ctx.Done():
		return s.streamEnd(ctx, expiry)
	}
	req := first
	for {
		if req != nil {
			if err := s.handle(stream, c, req, log); err != nil {
				return err
			}
			req = nil
		}
		select {
		case req = <-reqs:
		case <-c.notify:
			if err := s.push(stream, c); err != nil {
				return err
			}
		case err := <-recvErr:
			return recvDone(err)
		case <-ctx.Done():
			return s.streamEnd(ctx, expiry)
		}
	}
}

// streamEnd is the status of a stream whose context ended: the certificate expired,
// the server is shutting down, or the client went away.
func (s *Server) streamEnd(ctx context.Context, expiry time.Time) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && !expiry.IsZero():
		return status.Errorf(codes.Unauthenticated, "xds: client certificate expired at %s; reconnect with the renewed certificate", expiry.UTC().Format(time.RFC3339))
	case s.stopped.Err() != nil:
		return status.Error(codes.Unavailable, "xds: control plane shutting down; reconnect")
	}
	return nil
}

// handle processes one request from a sidecar: a subscription, an ACK or a NACK.
func (s *Server) handle(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer, c *conn, req *discovery.DiscoveryRequest, log *slog.Logger) error {
	t := req.GetTypeUrl()
	switch {
	case isDebug(t):
		return status.Errorf(codes.PermissionDenied, "xds: %s is for operators; a sidecar stream cannot request it", t)
	case !slices.Contains(Types, t):
		return status.Errorf(codes.InvalidArgument, "xds: unknown type URL %q; meshguard serves %v", t, Types)
	}
	if n := req.GetResourceNames(); len(n) > 0 && !(len(n) == 1 && n[0] == "*") {
		return status.Errorf(codes.InvalidArgument, "xds: %s: subscribing to named resources is not supported; send an empty resource_names (wildcard)", t)
	}
	c.mu.Lock()
	ts := c.types[t]
	if ts == nil {
		ts = &typeState{}
		c.types[t] = ts
	}
	// Every request carries in version_info the version the sidecar has applied (an
	// ACK, a NACK, a request whose nonce a newer push made stale, a resubscription after
	// a reconnect): status reports it whatever the nonce.
	if v := req.GetVersionInfo(); v != "" {
		if v != ts.acked {
			ts.acked, ts.ackedAt = v, s.cfg.Now()
		}
		c.noteAcked(v)
	}
	switch {
	case req.GetResponseNonce() == "":
		// A (re)subscription: answer with the current view at once.
		ts.subscribed = true
		c.mu.Unlock()
		return s.send(stream, c, t)
	case req.GetResponseNonce() != ts.nonce:
		c.mu.Unlock()
		log.Debug("stale xds request ignored", "type", t, "nonce", req.GetResponseNonce())
		return nil
	case req.GetErrorDetail() != nil:
		ts.nack = &NACK{Version: ts.sentVersion, Detail: req.GetErrorDetail().GetMessage(), At: s.cfg.Now()}
		c.mu.Unlock()
		s.cfg.Observer.NACKed(t)
		log.Warn("sidecar rejected config (NACK); it keeps its last accepted config", "type", t, "version", ts.sentVersion, "detail", req.GetErrorDetail().GetMessage())
		return nil
	default:
		ts.ackedAt = s.cfg.Now()
		c.mu.Unlock()
		return nil
	}
}

// noteAcked records the view of version v as the config in force once every
// subscribed type has ACKed it. c.mu is held.
func (c *conn) noteAcked(v string) {
	for _, cand := range []*view{c.sent, c.prev} {
		if cand != nil && cand.version == v && c.acked != cand && c.allAcked(v) {
			c.acked = cand
			return
		}
	}
}

// allAcked reports whether every subscribed type has ACKed version. c.mu is held.
func (c *conn) allAcked(version string) bool {
	for _, ts := range c.types {
		if ts.subscribed && ts.acked != version {
			return false
		}
	}
	return true
}

// push sends every subscribed type when the workload's view changed. Sending all types
// with one version lets the sidecar apply a change across types at once.
func (s *Server) push(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer, c *conn) error {
	st := s.cur.Load()
	v := st.viewOf(c.viewKey, c.workload)
	c.mu.Lock()
	if c.sent != nil && c.sent.version == v.version {
		c.mu.Unlock()
		return nil
	}
	c.prev, c.sent = c.sent, v
	var types []string
	for _, t := range Types {
		if ts := c.types[t]; ts != nil && ts.subscribed {
			types = append(types, t)
		}
	}
	c.mu.Unlock()
	for _, t := range types {
		if err := s.send(stream, c, t); err != nil {
			return err
		}
	}
	return nil
}

// send sends type t of the connection's current view, computing it first if this is
// the stream's first response.
func (s *Server) send(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer, c *conn, t string) error {
	c.mu.Lock()
	if c.sent == nil {
		c.sent = s.cur.Load().viewOf(c.viewKey, c.workload)
	}
	v := c.sent
	nonce := strconv.FormatUint(s.nonce.Add(1), 36)
	ts := c.types[t]
	ts.nonce, ts.sentVersion, ts.sentAt = nonce, v.version, s.cfg.Now()
	c.mu.Unlock()
	err := stream.Send(&discovery.DiscoveryResponse{VersionInfo: v.version, Resources: v.res[t], TypeUrl: t, Nonce: nonce})
	if err != nil {
		return fmt.Errorf("xds: send %s to %s: %w", t, c.id, err)
	}
	s.cfg.Observer.Pushed(t)
	return nil
}
