package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/meshguard/meshguard/internal/authn/peercert"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/config/dirstore"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/xds"
)

// OperatorServiceAccount is the service account, in the control plane's own namespace,
// whose certificate `meshguard ctl proxy-status` and `ctl config-dump` present. A
// certificate for it comes from a bootstrap token minted for that account, as for any
// workload; a certificate for any other identity is refused.
const OperatorServiceAccount = "meshguard-operator"

// DefaultOperator is the operator identity allowed when PushConfig.Operators is empty.
func DefaultOperator(trustDomain string) identity.Identity {
	return identity.Identity{TrustDomain: trustDomain, Namespace: ServingIdentity(trustDomain).Namespace, ServiceAccount: OperatorServiceAccount}
}

// PushConfig configures the config push: a config store and the xDS server on the
// control plane's gRPC port. ConfigDir or Store is required.
type PushConfig struct {
	// ConfigDir is watched with config/dirstore.
	ConfigDir string
	// Store replaces the directory store (e.g. the Kubernetes store); it is not run.
	Store config.ConfigStore
	// TrustDomain of sidecar certificates (DefaultTrustDomain when empty).
	TrustDomain string
	// Operators may read fleet status; [DefaultOperator] when empty.
	Operators []identity.Identity
	// Observer is told of sidecar streams, pushes and NACKs (the control plane's
	// metrics); nil: nobody.
	Observer xds.Observer
	Logger   *slog.Logger
	Now      func() time.Time
}

// Push serves config to sidecars. Register it on the control plane through
// Config.Register and run it beside the control plane with Serve.
type Push struct {
	dir    *dirstore.Store // nil with an external store
	server *xds.Server
}

// NewPush checks cfg and builds the store and the xDS server. It starts nothing.
func NewPush(cfg PushConfig) (*Push, error) {
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = DefaultTrustDomain
	}
	if len(cfg.Operators) == 0 {
		cfg.Operators = []identity.Identity{DefaultOperator(cfg.TrustDomain)}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Push{}
	store := cfg.Store
	if store == nil {
		if cfg.ConfigDir == "" {
			return nil, errors.New("controlplane: config push needs --config-dir")
		}
		d, err := dirstore.New(dirstore.Config{Dir: cfg.ConfigDir, Logger: cfg.Logger, Now: cfg.Now})
		if err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
		p.dir, store = d, d
	}
	srv, err := xds.NewServer(xds.ServerConfig{
		Store: store,
		// Sidecars authenticate with their mesh certificate only; the server never
		// sees bearer tokens.
		Authenticator: peercert.New(cfg.TrustDomain, cfg.Now),
		Operators:     cfg.Operators,
		Observer:      cfg.Observer,
		Logger:        cfg.Logger,
		Now:           cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	p.server = srv
	return p, nil
}

// Register adds the Aggregated Discovery Service to the control plane's gRPC server;
// pass it in Config.Register.
func (p *Push) Register(gs *grpc.Server) { p.server.Register(gs) }

// Status returns the directory store's status (what is in force, what was refused), or
// false with an external store.
func (p *Push) Status() (dirstore.Status, bool) {
	if p.dir == nil {
		return dirstore.Status{}, false
	}
	return p.dir.Status(), true
}

// Run runs the directory store (its first load fails Run when any file is invalid) and
// the xDS server until ctx ends.
func (p *Push) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if p.dir != nil {
		g.Go(func() error { return p.dir.Run(ctx) })
	}
	g.Go(func() error { return p.server.Run(ctx) })
	return g.Wait()
}

// Serve runs the control plane and, when push is not nil, the config push beside it,
// until ctx ends or either fails.
func Serve(ctx context.Context, cp *ControlPlane, push *Push) error {
	if push == nil {
		return cp.Run(ctx)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return cp.Run(ctx) })
	g.Go(func() error { return push.Run(ctx) })
	return g.Wait()
}
