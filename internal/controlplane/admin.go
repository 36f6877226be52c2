package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAdmin is the admin address the command uses: Istio's monitoring port.
const DefaultAdmin = "127.0.0.1:15014"

// configErrorPoll is how often the store's refusals are read between scrapes, so that a
// refusal fixed before the next scrape is still counted.
const configErrorPoll = 2 * time.Second

// AdminConfig configures the admin HTTP endpoint: /metrics and /healthz/ready.
type AdminConfig struct {
	// Listen is the address (e.g. DefaultAdmin); empty means no admin endpoint.
	// Listener, when set, is used instead (tests pass one on 127.0.0.1:0).
	Listen   string
	Listener net.Listener
	// Gatherer is what /metrics serves: the registry Config.Metrics is registered on.
	// Nil serves no /metrics.
	Gatherer prometheus.Gatherer
}

// listenAdmin opens the admin listener in New, so that a busy port fails the start.
func (cp *ControlPlane) listenAdmin() error {
	a := cp.cfg.Admin
	if a.Listener != nil || a.Listen == "" {
		cp.adminLis = a.Listener
		return nil
	}
	l, err := net.Listen("tcp", a.Listen)
	if err != nil {
		return fmt.Errorf("controlplane: admin: listen on %s: %w", a.Listen, err)
	}
	cp.adminLis = l
	return nil
}

// AdminAddr returns the admin endpoint's address, or nil without one.
func (cp *ControlPlane) AdminAddr() net.Addr {
	if cp.adminLis == nil {
		return nil
	}
	return cp.adminLis.Addr()
}

// adminHandler serves /healthz/ready (the gRPC server is serving and, with a config
// push, the first config is loaded) and /metrics.
func (cp *ControlPlane) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !cp.started.Load() {
			http.Error(w, "gRPC server not serving yet", http.StatusServiceUnavailable)
			return
		}
		if p := cp.cfg.Push; p != nil {
			select {
			case <-p.server.Ready():
			default:
				http.Error(w, "no configuration loaded yet", http.StatusServiceUnavailable)
				return
			}
		}
		w.Write([]byte("ok\n")) //nolint:errcheck // the prober may go away
	})
	if g := cp.cfg.Admin.Gatherer; g != nil {
		metrics := promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
		mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			cp.syncConfigErrors()
			metrics.ServeHTTP(w, r)
		}))
	}
	return mux
}

func (cp *ControlPlane) syncConfigErrors() {
	if cp.cfg.Metrics == nil || cp.cfg.Push == nil {
		return
	}
	if st, ok := cp.cfg.Push.Status(); ok {
		cp.configErrs.sync(st, cp.cfg.Metrics)
	}
}

// pollConfigErrors reads the config store's refusals every few seconds until ctx ends.
func (cp *ControlPlane) pollConfigErrors(ctx context.Context) error {
	if cp.cfg.Metrics == nil || cp.cfg.Push == nil {
		return nil
	}
	t := time.NewTicker(configErrorPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			cp.syncConfigErrors()
		}
	}
}

// runAdmin serves the admin endpoint until ctx ends.
func (cp *ControlPlane) runAdmin(ctx context.Context) error {
	if cp.adminLis == nil {
		return nil
	}
	srv := &http.Server{Handler: cp.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(cp.adminLis) }()
	cp.log.Info("admin listening", "addr", cp.adminLis.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("controlplane: admin server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close() //nolint:errcheck // forcing after the grace period
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("controlplane: admin server: %w", err)
	}
	return nil
}
