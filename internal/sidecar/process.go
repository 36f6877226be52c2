package sidecar

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshguard/meshguard/internal/agent"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/config/dirstore"
	"github.com/meshguard/meshguard/internal/metrics"
	"github.com/meshguard/meshguard/internal/xds"
)

// ProcessConfig is `meshguard sidecar` as typed configuration: the agent's settings,
// where configuration comes from, and the sidecar's own.
type ProcessConfig struct {
	// Sidecar is everything but Agent, Store, Registry and Metrics, which RunProcess
	// builds.
	Sidecar Config
	// Agent configures the workload agent (control plane address, CA roots, token
	// file, key type, TTL). Its Metrics are the sidecar's.
	Agent agent.Config
	// ConfigDir, when set, is watched for Istio YAML (config/dirstore); otherwise the
	// configuration is pushed by the control plane at Agent.ControlPlane over mTLS with
	// the workload certificate.
	ConfigDir string
	// NodeIP goes into the xDS node ID ("sidecar~IP~NAME.NAMESPACE"); default 127.0.0.1.
	NodeIP string
}

// agentRunner adapts *agent.Agent to Agent: its Source plus its Run loop.
type agentRunner struct {
	*agent.Source
	a *agent.Agent
}

func (r agentRunner) Run(ctx context.Context) error { return r.a.Run(ctx) }

// FromAgent adapts the workload agent to what the sidecar needs.
func FromAgent(a *agent.Agent) Agent { return agentRunner{Source: a.Source(), a: a} }

var _ Agent = agentRunner{}

// RunProcess builds the agent, the metrics they share and the configuration store
// (directory or control-plane push), then runs the sidecar until ctx ends.
func RunProcess(ctx context.Context, pc ProcessConfig) error {
	cfg := pc.Sidecar
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.NewSidecar(reg, cfg.Now)
	if err != nil {
		return err
	}
	cfg.Registry, cfg.Metrics = reg, m
	ac := pc.Agent
	ac.Metrics = agent.SidecarMetrics(m)
	if ac.Logger == nil {
		ac.Logger = cfg.Logger
	}
	a, err := agent.New(ac)
	if err != nil {
		return err
	}
	if err := reg.Register(a.ReadyGauge()); err != nil {
		return fmt.Errorf("register agent metrics: %w", err)
	}
	cfg.Agent = FromAgent(a)
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if pc.ConfigDir != "" {
		st, err := dirstore.New(dirstore.Config{Dir: pc.ConfigDir, Logger: cfg.Logger, Now: cfg.Now})
		if err != nil {
			return fmt.Errorf("--config-dir: %w", err)
		}
		cfg.Store = st
		return Run(ctx, cfg)
	}
	conn, err := DialControlPlane(ac.ControlPlane, ac.CAServerName, ac.CARoots, a.Source())
	if err != nil {
		return err
	}
	defer conn.Close() //nolint:errcheck // shutting down
	store, err := NewPushStore(conn, pc)
	if err != nil {
		return err
	}
	cfg.Store = afterCertificate{ConfigStore: store, run: store, certs: a.Source()}
	return Run(ctx, cfg)
}

// certReadiness is what afterCertificate needs from the agent's Source.
type certReadiness interface {
	Ready() bool
	Updated() <-chan struct{}
}

var _ certReadiness = (*agent.Source)(nil)

// afterCertificate runs the push client only once the agent holds a certificate: the
// stream authenticates with it, so a stream opened earlier is refused and the client
// backs off, which delayed every sidecar start by up to its backoff. Until the first
// push is applied the sidecar reports not ready, as before.
type afterCertificate struct {
	config.ConfigStore
	run   Runner
	certs certReadiness
}

func (s afterCertificate) Run(ctx context.Context) error {
	for {
		changed := s.certs.Updated() // before Ready, so that no change is missed
		if s.certs.Ready() {
			return s.run.Run(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// NewPushStore is the configuration store fed by the control plane's push for the
// workload of pc.
func NewPushStore(conn grpc.ClientConnInterface, pc ProcessConfig) (*xds.Client, error) {
	w := pc.Sidecar.Workload
	ip := pc.NodeIP
	if ip == "" {
		ip = "127.0.0.1"
	}
	cc := xds.ClientConfig{
		Conn: conn, Now: pc.Sidecar.Now, Logger: pc.Sidecar.Logger,
		Node: xds.Node{ID: "sidecar~" + ip + "~" + w.Name + "." + w.Namespace, Namespace: w.Namespace,
			ServiceAccount: w.ServiceAccount, WorkloadName: w.Name, Labels: w.Labels},
	}
	c, err := xds.NewClient(cc)
	if err != nil {
		return nil, fmt.Errorf("config push client: %w", err)
	}
	return c, nil
}

// DialControlPlane opens the gRPC connection for the configuration push: TLS verified
// against roots under serverName (as the agent verifies the CA: the host of addr, or
// istiod.istio-system.svc for localhost), authenticated by the workload certificate
// of src, read at every handshake so rotations apply to reconnects.
func DialControlPlane(addr, serverName string, roots []*x509.Certificate, src x509svid.Source) (*grpc.ClientConn, error) {
	if len(roots) == 0 {
		return nil, errors.New("dial control plane: no CA roots to verify it with")
	}
	if serverName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("control plane address %q: want HOST:PORT: %w", addr, err)
		}
		serverName = host
		if host == "localhost" {
			serverName = "istiod.istio-system.svc"
		}
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			s, err := src.GetX509SVID()
			if err != nil {
				return nil, err
			}
			c := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
			for _, x := range s.Certificates {
				c.Certificate = append(c.Certificate, x.Raw)
			}
			return c, nil
		},
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, fmt.Errorf("dial control plane %s: %w", addr, err)
	}
	return conn, nil
}
