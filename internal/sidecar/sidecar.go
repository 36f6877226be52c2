package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/proxy"
)

// Agent is what the sidecar needs from the workload agent: the certificate source the
// proxy serves from, and its own Run loop (CSR, rotation).
type Agent interface {
	proxy.CertSource
	Run(ctx context.Context) error
}

// Runner is a component with its own loop, e.g. a directory store watching files.
type Runner interface {
	Run(ctx context.Context) error
}

// Config wires one sidecar. Agent, Store and Proxy (minus Certs) are required.
type Config struct {
	Workload policy.Workload
	Agent    Agent
	// Store delivers configuration snapshots (the --config-dir store today, the
	// control plane's push later). If it is also a Runner, Run runs it.
	Store config.ConfigStore
	// Proxy is the data path's configuration; Certs is set from Agent.
	Proxy proxy.Config
	// AdminAddr serves /healthz/ready, /metrics and /debug/connections ("" for none).
	AdminAddr string
	// Metrics serves /metrics; nil answers 404.
	Metrics http.Handler
	// HTTPClient fetches JWKS for RequestAuthentication.
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Run runs the sidecar until ctx ends, then drains (see proxy.Run) and returns. The
// first component error stops the others.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Agent == nil || cfg.Store == nil {
		return errors.New("sidecar: Agent and Store are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pc := cfg.Proxy
	pc.Certs = cfg.Agent
	pc.Logger = log
	p, err := proxy.New(pc)
	if err != nil {
		return err
	}
	var configured atomic.Bool
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return cfg.Agent.Run(gctx) })
	if r, ok := cfg.Store.(Runner); ok {
		g.Go(func() error { return r.Run(gctx) })
	}
	g.Go(func() error {
		applyConfig(gctx, cfg, p, &configured, log)
		return nil
	})
	g.Go(func() error { return p.Run(gctx) })
	if cfg.AdminAddr != "" {
		g.Go(func() error { return runAdmin(gctx, cfg, p, &configured, log) })
	}
	return g.Wait()
}

// applyConfig turns every snapshot into a Policy and swaps it in; a snapshot that does
// not compile is logged and the last good policy stays.
func applyConfig(ctx context.Context, cfg Config, p *proxy.Proxy, configured *atomic.Bool, log *slog.Logger) {
	for snap := range cfg.Store.Watch(ctx) {
		td, err := waitForSVID(ctx, cfg.Agent)
		if err != nil {
			return
		}
		pol, err := BuildPolicy(snap, cfg.Workload, td, cfg.HTTPClient, log)
		if err == nil {
			err = p.SetPolicy(pol)
		}
		if err != nil {
			log.Error("configuration rejected; keeping the last good policy", "version", snap.Version, "err", err)
			continue
		}
		configured.Store(true)
		log.Info("configuration applied", "version", snap.Version, "services", len(pol.Services))
	}
}

func waitForSVID(ctx context.Context, a Agent) (td spiffeid.TrustDomain, err error) {
	for {
		if s, err := a.GetX509SVID(); err == nil {
			return s.ID.TrustDomain(), nil
		}
		select {
		case <-ctx.Done():
			return td, ctx.Err()
		case <-a.Updated():
		case <-time.After(time.Second):
		}
	}
}

func runAdmin(ctx context.Context, cfg Config, p *proxy.Proxy, configured *atomic.Bool, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-p.Ready():
		default:
			http.Error(w, "proxy not listening yet", http.StatusServiceUnavailable)
			return
		}
		if !configured.Load() {
			http.Error(w, "no configuration applied yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n")) //nolint:errcheck
	})
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	mux.HandleFunc("GET /debug/connections", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(struct { //nolint:errcheck // client may go away
			Connections []proxy.ConnInfo `json:"connections"`
		}{p.Connections()})
	})
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen for admin on %s: %w", cfg.AdminAddr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx) //nolint:errcheck // best effort
	}()
	log.Info("admin listening", "addr", l.Addr().String())
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin server: %w", err)
	}
	return nil
}
