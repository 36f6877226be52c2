package sds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Source is what the server needs from the agent: the current SVID, the trust bundle of
// its trust domain, and a change notification. Updated returns a channel that is closed
// at the next change of either after the call; callers call it again to wait for the
// following change. *agent.Source implements it.
type Source interface {
	x509svid.Source
	x509bundle.Source
	Updated() <-chan struct{}
}

// Config configures a Server.
type Config struct {
	// SocketPath is the unix socket to serve on. Its directory is created (0750) when
	// missing; a stale socket left by a previous run is replaced, but a live one (another
	// agent answering on it) or any other kind of file is an error.
	SocketPath string
	// Source provides the secrets. Required.
	Source Source
	// Logger receives stream and ACK/NACK events. Required.
	Logger *slog.Logger
	// ShutdownGrace bounds how long Run waits for open streams after ctx is done before
	// closing them; zero means one second.
	ShutdownGrace time.Duration
}

// Server is the SDS gRPC server. Create it with New and serve with Run.
type Server struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer

	cfg   Config
	log   *slog.Logger
	ready chan struct{}
	once  sync.Once
}

var _ secretv3.SecretDiscoveryServiceServer = (*Server)(nil)

// New validates cfg and returns a Server. It opens nothing and starts no goroutine.
func New(cfg Config) (*Server, error) {
	if cfg.SocketPath == "" {
		return nil, errors.New("sds: socket path is empty")
	}
	if cfg.Source == nil {
		return nil, errors.New("sds: no secret source")
	}
	if cfg.Logger == nil {
		return nil, errors.New("sds: no logger")
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = time.Second
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("component", "sds"), ready: make(chan struct{})}, nil
}

// Ready is closed once the socket accepts connections.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run listens on the socket and serves until ctx is done. On return the socket file is
// removed. A Server runs once.
func (s *Server) Run(ctx context.Context) error {
	ran := true
	s.once.Do(func() { ran = false })
	if ran {
		return errors.New("sds: server already ran")
	}
	lis, err := listenUnix0600(s.cfg.SocketPath)
	if err != nil {
		return err
	}
	defer os.Remove(s.cfg.SocketPath)

	gs := grpc.NewServer()
	secretv3.RegisterSecretDiscoveryServiceServer(gs, s)
	close(s.ready)
	s.log.Info("SDS server listening", "socket", s.cfg.SocketPath)

	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("sds: serve on %s: %w", s.cfg.SocketPath, err)
	case <-ctx.Done():
	}
	// Streams end when the server stops, so GracefulStop only waits for in-flight
	// unary calls; the timer bounds it anyway.
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	t := time.NewTimer(s.cfg.ShutdownGrace)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		gs.Stop()
		<-stopped
	}
	<-errc
	return nil
}

// listenUnix0600 creates the socket inside a fresh 0700 directory next to path, sets it
// to 0600 and renames it into place, so that no other user can connect in the window
// between bind and chmod.
func listenUnix0600(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("sds: create socket directory %s: %w", dir, err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(dir, ".sds-")
	if err != nil {
		return nil, fmt.Errorf("sds: create socket in %s: %w", dir, err)
	}
	defer os.RemoveAll(tmp)
	tmpSock := filepath.Join(tmp, "socket")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmpSock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("sds: listen on %s: %w", path, err)
	}
	// The listener would unlink tmpSock on Close; after the rename Run removes path.
	lis.SetUnlinkOnClose(false)
	if err := os.Chmod(tmpSock, 0o600); err != nil {
		lis.Close()
		return nil, fmt.Errorf("sds: chmod socket %s: %w", path, err)
	}
	if err := os.Rename(tmpSock, path); err != nil {
		lis.Close()
		return nil, fmt.Errorf("sds: move socket into place at %s: %w", path, err)
	}
	return lis, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sds: inspect %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("sds: %s exists and is not a socket; refusing to replace it", path)
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return fmt.Errorf("sds: %s is in use by another process", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("sds: remove stale socket %s: %w", path, err)
	}
	return nil
}

// errNotReady means the Source has no servable SVID (none yet, or expired).
var errNotReady = errors.New("no valid workload certificate")

// snapshot reads the Source once.
func (s *Server) snapshot() (*snapshot, error) {
	svid, err := s.cfg.Source.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotReady, err)
	}
	bundle, err := s.cfg.Source.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return nil, fmt.Errorf("%w: trust bundle: %w", errNotReady, err)
	}
	return newSnapshot(svid, bundle)
}

// FetchSecrets answers a one-shot request with the current secrets. Istio's agent leaves
// it unimplemented; meshguard serves it for tools that want a single read.
func (s *Server) FetchSecrets(_ context.Context, req *discovery.DiscoveryRequest) (*discovery.DiscoveryResponse, error) {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return nil, err
	}
	if len(req.GetResourceNames()) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "FetchSecrets needs resource names: %q or %q", WorkloadResource, RootResource)
	}
	if err := checkNames(req.GetResourceNames()); err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	snap, err := s.snapshot()
	if err != nil {
		s.log.Warn("SDS fetch without a valid certificate", "error", err)
		return nil, status.Error(codes.Unavailable, "no valid workload certificate yet; retry later")
	}
	resp, err := snap.response(req.GetResourceNames(), "")
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return resp, nil
}

// DeltaSecrets is not served, as in Istio's agent.
func (s *Server) DeltaSecrets(grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]) error {
	return status.Error(codes.Unimplemented, "DeltaSecrets is not served; use StreamSecrets")
}

func checkType(typeURL string) error {
	// An empty type URL is accepted on this single-type service.
	if typeURL != "" && typeURL != SecretTypeURL {
		return status.Errorf(codes.InvalidArgument, "type_url %q: the SDS server serves only %s", typeURL, SecretTypeURL)
	}
	return nil
}
