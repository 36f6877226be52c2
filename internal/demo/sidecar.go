package demo

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshguard/meshguard/internal/agent"
	"github.com/meshguard/meshguard/internal/pki"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/proxy"
	"github.com/meshguard/meshguard/internal/sidecar"
	"github.com/meshguard/meshguard/internal/xds"
)

// sidecarSpec is what the demo asks of one workload's sidecar: the same settings as
// `meshguard sidecar`'s flags.
type sidecarSpec struct {
	Workload, Namespace, ServiceAccount string
	Labels                              map[string]string
	ControlPlane                        string // HOST:PORT of the CA and config push
	CARootFile, TokenFile               string
	App                                 string // the app on loopback
	Inbound                             string // inbound listener address
	Admin                               string // admin listener (readiness)
	Outbound                            []outbound
	// CertDir receives cert-chain.pem, key.pem and root-cert.pem on every rotation (the
	// agent's output directory); step 1 reads the certificate from there.
	CertDir string
	Logger  *slog.Logger
}

type outbound struct {
	Host   string // e.g. reviews.default.svc.cluster.local
	Port   uint32 // the service port
	Listen string // 127.0.0.1:PORT the app calls
}

// meshSidecar is a configured sidecar: Run serves until ctx ends.
type meshSidecar interface {
	Run(ctx context.Context) error
	WaitUntilReady(ctx context.Context) error
}

// agentRunner adapts *agent.Agent to sidecar.Agent: its Source plus its Run loop.
type agentRunner struct {
	*agent.Source
	a *agent.Agent
}

func (r agentRunner) Run(ctx context.Context) error { return r.a.Run(ctx) }

// demoSidecar is one sidecar.Run in-process: the agent gets the certificate with the
// bootstrap token, the xDS client receives the workload's config from the control
// plane over mTLS with that certificate, the proxy enforces it.
type demoSidecar struct {
	cfg   sidecar.Config
	conn  *grpc.ClientConn
	admin string
}

// newSidecar builds one sidecar from spec.
func newSidecar(spec sidecarSpec) (meshSidecar, error) {
	rootPEM, err := os.ReadFile(spec.CARootFile)
	if err != nil {
		return nil, fmt.Errorf("read CA root: %w", err)
	}
	roots, err := pki.ParseCertsPEM(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("CA root %s: %w", spec.CARootFile, err)
	}
	a, err := agent.New(agent.Config{
		ControlPlane: spec.ControlPlane, CARoots: roots, TokenFile: spec.TokenFile,
		OutputDir: spec.CertDir, Logger: spec.Logger,
	})
	if err != nil {
		return nil, err
	}
	src := a.Source()
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: pool,
		// The control plane's serving certificate names istiod.istio-system.svc, which
		// Istio's agents check for a localhost CA address too.
		ServerName: "istiod.istio-system.svc",
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
	conn, err := grpc.NewClient(spec.ControlPlane, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, fmt.Errorf("dial control plane %s: %w", spec.ControlPlane, err)
	}
	client, err := xds.NewClient(xds.ClientConfig{
		Conn: conn, Logger: spec.Logger, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
		Node: xds.Node{ID: "sidecar~127.0.0.1~" + spec.Workload + "." + spec.Namespace, Namespace: spec.Namespace,
			ServiceAccount: spec.ServiceAccount, WorkloadName: spec.Workload, Labels: spec.Labels},
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	app, err := netip.ParseAddrPort(spec.App)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("app address %q: %w", spec.App, err)
	}
	pc := proxy.Config{Apps: []netip.AddrPort{app}, InboundAddr: spec.Inbound, Logger: spec.Logger}
	for _, o := range spec.Outbound {
		pc.Outbound = append(pc.Outbound, proxy.ExplicitOutbound{Host: o.Host, Port: o.Port, Listen: o.Listen})
	}
	return &demoSidecar{
		conn: conn, admin: spec.Admin,
		cfg: sidecar.Config{
			Workload: policy.Workload{Namespace: spec.Namespace, Name: spec.Workload, ServiceAccount: spec.ServiceAccount, Labels: spec.Labels},
			Agent:    agentRunner{Source: src, a: a},
			Store:    client,
			Proxy:    pc, AdminAddr: spec.Admin,
			HTTPClient: &http.Client{Timeout: 5 * time.Second},
			Logger:     spec.Logger,
		},
	}, nil
}

func (d *demoSidecar) Run(ctx context.Context) error {
	defer d.conn.Close()
	return sidecar.Run(ctx, d.cfg)
}

// WaitUntilReady polls the sidecar's /healthz/ready: listening, with a certificate and
// its first configuration applied.
func (d *demoSidecar) WaitUntilReady(ctx context.Context) error {
	url := "http://" + d.admin + "/healthz/ready"
	var last string
	for {
		r := get(ctx, url)
		if r.err == nil && r.status == http.StatusOK {
			return nil
		}
		last = r.String()
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last readiness answer: %s)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
