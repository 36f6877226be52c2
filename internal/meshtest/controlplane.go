package meshtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshguard/meshguard/internal/authn/bootstrap"
	"github.com/meshguard/meshguard/internal/controlplane"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/metrics"
)

// ControlPlane is a real control plane running in-process on 127.0.0.1:0.
type ControlPlane struct {
	// Addr is host:port of the gRPC server (CA service and whatever Register added).
	Addr string
	// DataDir is the control plane's data directory; RootCertPath is root-cert.pem in it.
	DataDir, RootCertPath string
	// RootPool holds the trust bundle, for verifying the server and issued certificates.
	RootPool    *x509.CertPool
	TrustDomain string
	// Stop shuts the control plane down and returns Run's error; cleanup calls it too.
	Stop func() error
}

// ControlPlaneOptions tune StartControlPlane; the zero value is a fresh self-signed CA for
// cluster.local with Istio's default TTLs.
type ControlPlaneOptions struct {
	DataDir            string // default: a new temporary directory; reuse one to restart
	CACertsDir         string // plug-in CA directory, e.g. from CA.WriteIntermediateDir
	TrustDomain        string
	WorkloadCertTTL    time.Duration
	MaxWorkloadCertTTL time.Duration
	Register           []func(*grpc.Server)
	// Push, Metrics and Admin are passed to controlplane.Config; with Push the config
	// push runs beside the control plane (register it with Register too).
	Push    *controlplane.Push
	Metrics *metrics.ControlPlane
	Admin   controlplane.AdminConfig
	Logger  *slog.Logger // default: discard
}

// StartControlPlane starts the control plane and stops it when the test ends.
func StartControlPlane(tb testing.TB, o ControlPlaneOptions) *ControlPlane {
	tb.Helper()
	if o.DataDir == "" {
		o.DataDir = tb.TempDir()
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cp, err := controlplane.New(controlplane.Config{
		DataDir:            o.DataDir,
		CACertsDir:         o.CACertsDir,
		Listener:           lis,
		TrustDomain:        o.TrustDomain,
		WorkloadCertTTL:    o.WorkloadCertTTL,
		MaxWorkloadCertTTL: o.MaxWorkloadCertTTL,
		Register:           o.Register,
		Push:               o.Push,
		Metrics:            o.Metrics,
		Admin:              o.Admin,
		Logger:             o.Logger,
	})
	if err != nil {
		lis.Close()
		tb.Fatalf("meshtest: start control plane: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- controlplane.Serve(ctx, cp, o.Push) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			tb.Errorf("meshtest: control plane did not stop within 15s")
			return nil
		}
	})
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Errorf("meshtest: control plane Run: %v", err)
		}
	})
	pool := x509.NewCertPool()
	for _, r := range cp.TrustBundle() {
		pool.AddCert(r)
	}
	td := o.TrustDomain
	if td == "" {
		td = controlplane.DefaultTrustDomain
	}
	return &ControlPlane{
		Addr: lis.Addr().String(), DataDir: o.DataDir, RootCertPath: cp.RootCertPath(),
		RootPool: pool, TrustDomain: td, Stop: stop,
	}
}

// ID returns the identity for ns/sa in the control plane's trust domain.
func (c *ControlPlane) ID(ns, sa string) identity.Identity {
	return identity.Identity{TrustDomain: c.TrustDomain, Namespace: ns, ServiceAccount: sa}
}

// Token mints a bootstrap token for ns/sa valid for ttl, as `meshguard ctl token create` does.
func (c *ControlPlane) Token(tb testing.TB, ns, sa string, ttl time.Duration) string {
	tb.Helper()
	key, err := bootstrap.LoadOrCreateKey(c.DataDir)
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := bootstrap.Mint(key, c.ID(ns, sa), ttl, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// TLSConfig returns a client TLS config that verifies the control plane against its root
// (by the 127.0.0.1 IP SAN) and presents clientCert when it is not nil.
func (c *ControlPlane) TLSConfig(clientCert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: c.RootPool, MinVersion: tls.VersionTLS12}
	if clientCert != nil {
		cfg.Certificates = []tls.Certificate{*clientCert}
	}
	return cfg
}

// Dial returns a gRPC connection to the control plane, closed when the test ends.
func (c *ControlPlane) Dial(tb testing.TB, clientCert *tls.Certificate) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(c.Addr, grpc.WithTransportCredentials(credentials.NewTLS(c.TLSConfig(clientCert))))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}
