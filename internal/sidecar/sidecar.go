package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/meshguard/meshguard/internal/accesslog"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/metrics"
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
	// Store delivers configuration snapshots (the --config-dir store, or the control
	// plane's push). If it is also a Runner, Run runs it.
	Store config.ConfigStore
	// Proxy is the data path's configuration; Certs, Logger and Observer are set here.
	Proxy proxy.Config
	// AdminAddr serves /healthz/ready, /metrics and /debug/connections ("" for none).
	AdminAddr string
	// Registry is served on /metrics; nil means a private registry with the Go and
	// process collectors.
	Registry *prometheus.Registry
	// Metrics are the sidecar's collectors (shared with the agent, which reports
	// certificate expiry into them); nil creates them on Registry.
	Metrics *metrics.Sidecar
	// AccessLogStdout receives the access log when meshConfig.accessLogFile is
	// /dev/stdout; nil means the process's standard output.
	AccessLogStdout io.Writer
	// Reopen receives when the access-log file must be reopened (SIGHUP after
	// logrotate moved it); nil for never.
	Reopen <-chan struct{}
	// AdminListening, if set, is called with the admin address once it listens (tests
	// use port 0).
	AdminListening func(net.Addr)
	// HTTPClient fetches JWKS for RequestAuthentication.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Now is the clock of metrics and the proxy; nil means time.Now.
	Now func() time.Time
	// StartupStage, if set, is called once as start-up passes each of its stages, in
	// the order they happen, from any goroutine: StageBuilt, StageSnapshot,
	// StageCertificate, StageApplied, StageListening (snapshot and certificate may
	// come in either order). `meshguard sidecar` releases the binary's resident pages
	// at the first three (memtrim): each stage runs code the next one does not (YAML
	// and Istio protobufs, the CSR over gRPC and TLS), and releasing between them keeps
	// start-up's resident peak near one stage's working set instead of their union.
	StartupStage func(Stage)
}

// Stage is a point in a sidecar's start-up; see Config.StartupStage.
type Stage string

// Start-up stages, in the order they usually happen.
const (
	// StageBuilt: metrics, agent, store and proxy are constructed; nothing runs yet.
	StageBuilt Stage = "built"
	// StageSnapshot: the first configuration snapshot arrived from the store.
	StageSnapshot Stage = "snapshot"
	// StageCertificate: the agent holds its first workload certificate.
	StageCertificate Stage = "certificate"
	// StageApplied: the first configuration is compiled and in force.
	StageApplied Stage = "applied"
	// StageListening: the proxy's listeners are bound; the sidecar is ready.
	StageListening Stage = "listening"
)

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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
		cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if cfg.Metrics == nil {
		m, err := metrics.NewSidecar(cfg.Registry, cfg.Now)
		if err != nil {
			return err
		}
		cfg.Metrics = m
	}
	obs := newObserver(cfg.Metrics, cfg.Workload)
	pc := cfg.Proxy
	pc.Certs = cfg.Agent
	pc.Logger = log
	pc.Observer = obs
	pc.Now = cfg.Now
	p, err := proxy.New(pc)
	if err != nil {
		return err
	}
	stage := cfg.StartupStage
	if stage == nil {
		stage = func(Stage) {}
	}
	stage(StageBuilt)
	var configured atomic.Bool
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if _, err := waitForSVID(gctx, cfg.Agent); err == nil {
			stage(StageCertificate)
		}
		return nil
	})
	g.Go(func() error {
		select {
		case <-p.Ready():
			stage(StageListening)
		case <-gctx.Done():
		}
		return nil
	})
	logs := &accessLogs{obs: obs, log: log, ctx: gctx,
		opts: accesslog.WriterOptions{Stdout: cfg.AccessLogStdout, Logger: log, Dropped: cfg.Metrics.AccessLogDropped}}
	g.Go(func() error { return cfg.Agent.Run(gctx) })
	if r, ok := cfg.Store.(Runner); ok {
		g.Go(func() error { return r.Run(gctx) })
	}
	g.Go(func() error { return logs.Run(gctx, cfg.Reopen) })
	applied := make(chan struct{}) // closed when the first configuration is in force
	g.Go(func() error {
		applyConfig(gctx, cfg, p, logs, &configured, applied, stage, log)
		return nil
	})
	g.Go(func() error {
		// Fail closed: the proxy listens only once a configuration is in force. Before
		// it, its policy is empty (PERMISSIVE, no authorization), which would serve
		// plaintext callers a STRICT namespace refuses.
		select {
		case <-applied:
		case <-gctx.Done():
			return nil
		}
		return p.Run(gctx)
	})
	if cfg.AdminAddr != "" {
		g.Go(func() error { return runAdmin(gctx, cfg, p, &configured, log) })
	}
	return g.Wait()
}

// applyConfig turns every snapshot into a Policy and swaps it in; a snapshot that does
// not compile is logged and the last good policy stays.
func applyConfig(ctx context.Context, cfg Config, p *proxy.Proxy, logs *accessLogs, configured *atomic.Bool, applied chan<- struct{}, stage func(Stage), log *slog.Logger) {
	first := true
	for snap := range cfg.Store.Watch(ctx) {
		if first {
			first = false
			stage(StageSnapshot)
		}
		td, err := waitForSVID(ctx, cfg.Agent)
		if err != nil {
			return
		}
		// Build and check everything first; swap only a snapshot that is good as a
		// whole, so that nothing is half-applied.
		pol, err := BuildPolicy(snap, cfg.Workload, td, cfg.HTTPClient, log)
		var al *prepared
		if err == nil {
			var ts proxy.TLSSettings
			if ts, err = proxy.TLSSettingsFromMesh(snap.Mesh.GetMeshMTLS()); err == nil {
				pol.TLS = &ts
				al, err = logs.prepare(snap.Mesh)
			}
		}
		if err == nil {
			err = p.SetPolicy(pol)
		}
		if err != nil {
			log.Error("configuration rejected; keeping the last good policy", "version", snap.Version, "err", err)
			continue
		}
		logs.swap(al)
		logs.obs.setServices(pol.Services)
		if !configured.Swap(true) {
			stage(StageApplied)
			close(applied)
		}
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
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	// Profiles for operators (the admin address is loopback by default), on this mux
	// only.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
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
	if cfg.AdminListening != nil {
		cfg.AdminListening(l.Addr())
	}
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin server: %w", err)
	}
	return nil
}
