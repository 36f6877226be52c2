package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/meshguard/meshguard/internal/sds"
)

// AdminHandler serves the agent's admin endpoints:
//   - GET /healthz/ready: 200 "ready" while a certificate that may be served is held,
//     otherwise 503 with the reason (none yet, expired, the last error);
//   - GET /metrics: Prometheus exposition of g.
func (a *Agent) AdminHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, err := a.src.GetX509SVID()
		if err == nil {
			fmt.Fprintln(w, "ready")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %v\n", err)
		if last := a.LastError(); last != nil {
			fmt.Fprintf(w, "last attempt: %v\n", last)
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}

// StandaloneConfig is what `meshguard agent` runs: the agent, the SDS server and the
// admin endpoint.
type StandaloneConfig struct {
	Agent Config
	// SDSSocket is the SDS unix socket; empty serves no SDS.
	SDSSocket string
	// Admin is the admin listen address (HOST:PORT); empty serves none.
	Admin string
	// Registry receives the agent's metrics and is served on /metrics. Required when
	// Admin is set; nil otherwise means a private registry.
	Registry *prometheus.Registry
	// AdminListening, if set, is called with the admin address once it accepts
	// connections (tests listen on port 0).
	AdminListening func(net.Addr)
}

// RunStandalone runs the agent with its SDS server and admin endpoint until ctx is done
// or one of them fails.
func RunStandalone(ctx context.Context, cfg StandaloneConfig) error {
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Agent.Metrics == nil {
		m, err := NewMetrics(cfg.Registry, cfg.Agent.Now)
		if err != nil {
			return err
		}
		cfg.Agent.Metrics = m
	}
	a, err := New(cfg.Agent)
	if err != nil {
		return err
	}
	if err := cfg.Registry.Register(a.ReadyGauge()); err != nil {
		return fmt.Errorf("register agent metrics: %w", err)
	}
	var srv *sds.Server
	if cfg.SDSSocket != "" {
		srv, err = sds.New(sds.Config{SocketPath: cfg.SDSSocket, Source: a.Source(), Logger: cfg.Agent.Logger})
		if err != nil {
			return err
		}
	}
	var adminLis net.Listener
	if cfg.Admin != "" {
		adminLis, err = net.Listen("tcp", cfg.Admin)
		if err != nil {
			return fmt.Errorf("admin endpoint: %w", err)
		}
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(ctx) })
	if srv != nil {
		g.Go(func() error { return srv.Run(ctx) })
	}
	if adminLis != nil {
		hs := &http.Server{Handler: a.AdminHandler(cfg.Registry), ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := hs.Serve(adminLis); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("admin endpoint on %s: %w", adminLis.Addr(), err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			return hs.Shutdown(sctx)
		})
		cfg.Agent.Logger.Info("agent admin endpoint listening", "addr", adminLis.Addr().String())
		if cfg.AdminListening != nil {
			cfg.AdminListening(adminLis.Addr())
		}
	}
	return g.Wait()
}
