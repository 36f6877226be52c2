package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/authn/bootstrap"
	"github.com/meshguard/meshguard/internal/authn/peercert"
	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/caservice"
	"github.com/meshguard/meshguard/internal/certreport"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/metrics"
	"github.com/meshguard/meshguard/internal/pki"
)

// Defaults for the command's flags.
const (
	DefaultListen      = "127.0.0.1:15012"
	DefaultTrustDomain = "cluster.local"
	// RootCertFile is the trust bundle users distribute, always kept in the data directory.
	RootCertFile = pki.RootCertFile
	// ServingTTL is the lifetime of the control plane's own serving certificate.
	ServingTTL = 24 * time.Hour
	// shutdownGrace bounds how long in-flight calls may finish after ctx ends.
	shutdownGrace = 5 * time.Second
)

// ServingIdentity is the identity in the control plane's own certificate.
func ServingIdentity(trustDomain string) identity.Identity {
	return identity.Identity{TrustDomain: trustDomain, Namespace: "meshguard-system", ServiceAccount: "meshguard"}
}

// servingDNSNames are the names clients verify: Istio's agent checks
// istiod.istio-system.svc when its CA address host is localhost.
var servingDNSNames = []string{
	"localhost",
	"istiod.istio-system.svc",
	"istiod.istio-system.svc.cluster.local",
	"meshguard.meshguard-system.svc",
	"meshguard.meshguard-system.svc.cluster.local",
}

// Config configures a control plane.
type Config struct {
	// DataDir holds the self-signed root (ca/), the token signing key and root-cert.pem.
	DataDir string
	// CACertsDir, when set, is an Istio plug-in CA directory to sign with instead of the
	// self-signed root.
	CACertsDir string
	// Listen is the gRPC address (DefaultListen when empty). Listener, when set, is used
	// instead (tests pass one on 127.0.0.1:0).
	Listen   string
	Listener net.Listener
	// TrustDomain of issued identities (DefaultTrustDomain when empty).
	TrustDomain string
	// WorkloadCertTTL is the default lifetime; MaxWorkloadCertTTL caps requests.
	WorkloadCertTTL, MaxWorkloadCertTTL time.Duration
	// Authenticators are tried after the built-in peer-certificate and bootstrap-token
	// authenticators (e.g. Kubernetes TokenReview).
	Authenticators []authn.Authenticator
	// Register adds more services (xDS, admin) to the gRPC server before it serves.
	Register []func(*grpc.Server)
	// Push, when set, is the config push served beside the control plane (Serve runs
	// both): its connected sidecars join the certificate inventory and its store's
	// refusals the config-error metric.
	Push *Push
	// Operators may list the mesh's certificates (`ctl certs`); DefaultOperator when empty.
	Operators []identity.Identity
	// Metrics, when set, counts issued and refused certificates and exposes the CA's
	// certificate expiry (metrics.go).
	Metrics *metrics.ControlPlane
	// Admin is the /metrics and /healthz/ready endpoint (admin.go); zero: none.
	Admin  AdminConfig
	Logger *slog.Logger
	Now    func() time.Time
}

// ControlPlane is a configured, not yet running control plane.
type ControlPlane struct {
	cfg       Config
	authority *ca.Authority
	service   *caservice.Server
	listener  net.Listener
	tls       *tls.Config
	serving   atomic.Pointer[tls.Certificate]
	log       *slog.Logger

	signer     ca.Signer
	inventory  *certreport.Server
	adminLis   net.Listener
	started    atomic.Bool // the gRPC server is serving
	configErrs configErrors
}

// New validates cfg and prepares everything Run needs: the data directory, the CA (the
// self-signed root is created on first start and reused after; a plug-in directory is
// validated and refused with a clear error when broken), root-cert.pem, the token key and
// the serving certificate. It listens only when cfg.Listener is nil and Listen is set;
// nothing runs until Run.
func New(cfg Config) (*ControlPlane, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("controlplane: --data-dir is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = DefaultTrustDomain
	}
	if cfg.WorkloadCertTTL == 0 {
		cfg.WorkloadCertTTL = ca.DefaultWorkloadTTL
	}
	if cfg.MaxWorkloadCertTTL == 0 {
		cfg.MaxWorkloadCertTTL = ca.DefaultMaxTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Operators) == 0 {
		cfg.Operators = []identity.Identity{DefaultOperator(cfg.TrustDomain)}
	}
	// Check the flags before touching the data directory: a refused start must not leave
	// a root (for a wrong trust domain, say) that the next start would silently reuse.
	if err := checkFlags(cfg); err != nil {
		return nil, err
	}
	cp := &ControlPlane{cfg: cfg, log: cfg.Logger}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("controlplane: data directory: %w", err)
	}
	if err := cp.loadCA(); err != nil {
		return nil, err
	}
	tokenKey, err := bootstrap.LoadOrCreateKey(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	tokens, err := bootstrap.NewAuthenticator(tokenKey.Public(), cfg.TrustDomain, cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	chain := authn.Chain{peercert.New(cfg.TrustDomain, cfg.Now), tokens}
	chain = append(chain, cfg.Authenticators...)
	cp.service, err = caservice.New(caservice.Config{CA: cp.authority, Authenticator: chain, Metrics: cp.caMetrics(), Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}

	cp.listener = cfg.Listener
	if cp.listener == nil {
		cp.listener, err = net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("controlplane: listen on %s: %w", cfg.Listen, err)
		}
	}
	if err := cp.renewServing(); err != nil {
		cp.listener.Close()
		return nil, err
	}
	cp.inventory, err = certreport.NewServer(certreport.ServerConfig{
		Source: certreport.SourceFunc(cp.Certificates), Authenticator: peercert.New(cfg.TrustDomain, cfg.Now),
		Operators: cfg.Operators, Logger: cfg.Logger,
	})
	if err == nil {
		err = cp.listenAdmin()
	}
	if err != nil {
		cp.listener.Close()
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	pool := x509.NewCertPool()
	for _, r := range cp.authority.TrustBundle() {
		pool.AddCert(r)
	}
	cp.tls = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cp.serving.Load(), nil },
		// Requested, not required: bootstrap callers have only a token. A presented
		// certificate must verify against the bundle.
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  pool,
		// No resumption: every connection's client certificate is verified afresh.
		SessionTicketsDisabled: true,
	}
	return cp, nil
}

// checkFlags validates what New would otherwise find wrong only after creating files.
func checkFlags(cfg Config) error {
	if err := (identity.Identity{TrustDomain: cfg.TrustDomain, Namespace: "x", ServiceAccount: "x"}).Validate(); err != nil {
		return fmt.Errorf("controlplane: --trust-domain %q: %w", cfg.TrustDomain, err)
	}
	switch {
	case cfg.WorkloadCertTTL < 0:
		return fmt.Errorf("controlplane: --workload-cert-ttl %v: must be positive", cfg.WorkloadCertTTL)
	case cfg.MaxWorkloadCertTTL < 0:
		return fmt.Errorf("controlplane: --max-workload-cert-ttl %v: must be positive", cfg.MaxWorkloadCertTTL)
	case cfg.WorkloadCertTTL > cfg.MaxWorkloadCertTTL:
		return fmt.Errorf("controlplane: --workload-cert-ttl %v exceeds --max-workload-cert-ttl %v", cfg.WorkloadCertTTL, cfg.MaxWorkloadCertTTL)
	}
	return nil
}

func (cp *ControlPlane) loadCA() error {
	cfg := cp.cfg
	now := cfg.Now()
	var (
		signer ca.Signer
		bundle []*x509.Certificate
	)
	if cfg.CACertsDir != "" {
		d, err := pki.LoadCADir(cfg.CACertsDir, now)
		if err != nil {
			return fmt.Errorf("controlplane: refusing to start with --cacerts: %w", err)
		}
		signer, bundle = ca.SignerFromCADir(d)
		cp.log.Info("using plug-in CA", "dir", cfg.CACertsDir, "subject", d.Cert.Subject.String(), "not_after", d.Cert.NotAfter, "roots", len(bundle))
	} else {
		s, created, err := ca.LoadOrCreateRoot(cfg.DataDir, cfg.TrustDomain, now)
		if err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
		signer, bundle = s, []*x509.Certificate{s.Cert}
		msg := "reusing self-signed root"
		if created {
			msg = "created self-signed root"
		}
		cp.log.Info(msg, "dir", filepath.Join(cfg.DataDir, ca.SelfSignedDir), "serial", s.Cert.SerialNumber.Text(16), "not_after", s.Cert.NotAfter)
	}
	a, err := ca.New(ca.Config{
		TrustDomain: cfg.TrustDomain,
		Signer:      signer,
		Bundle:      bundle,
		DefaultTTL:  cfg.WorkloadCertTTL,
		MaxTTL:      cfg.MaxWorkloadCertTTL,
		Now:         cfg.Now,
	})
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	cp.authority, cp.signer = a, signer
	if err := pki.WriteFileAtomic(cp.RootCertPath(), pki.EncodeCertsPEM(a.TrustBundle()...), 0o644); err != nil {
		return fmt.Errorf("controlplane: publish trust bundle: %w", err)
	}
	return nil
}

// renewServing issues a new serving certificate from the CA for the listen address.
func (cp *ControlPlane) renewServing() error {
	key, err := pki.GenerateKey(pki.KeyECP256)
	if err != nil {
		return err
	}
	req := ca.Request{
		PublicKey: key.Public(),
		Identity:  ServingIdentity(cp.cfg.TrustDomain),
		TTL:       ServingTTL,
		DNSNames:  append([]string(nil), servingDNSNames...),
	}
	host, _, err := net.SplitHostPort(cp.listener.Addr().String())
	if err != nil {
		return fmt.Errorf("controlplane: listen address %s: %w", cp.listener.Addr(), err)
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		req.IPAddresses = []net.IP{ip}
	} else {
		// Listening on every address: local clients dial loopback, remote agents one of
		// the host's addresses, and each verifies the address it dialled.
		req.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			cp.log.Warn("serving certificate names loopback only: cannot list the host's addresses", "error", err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
				req.IPAddresses = append(req.IPAddresses, n.IP)
			}
		}
	}
	chain, err := cp.authority.Sign(context.Background(), req)
	if err != nil {
		return fmt.Errorf("controlplane: issue serving certificate: %w", err)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	cp.serving.Store(c)
	cp.recordCerts()
	return nil
}

// Addr returns the address the control plane listens on.
func (cp *ControlPlane) Addr() net.Addr { return cp.listener.Addr() }

// RootCertPath returns the path of root-cert.pem in the data directory.
func (cp *ControlPlane) RootCertPath() string { return filepath.Join(cp.cfg.DataDir, RootCertFile) }

// TrustBundle returns the roots the CA publishes.
func (cp *ControlPlane) TrustBundle() []*x509.Certificate { return cp.authority.TrustBundle() }

// Run serves until ctx ends, then stops accepting, lets in-flight calls finish for a few
// seconds and closes the listener. It returns nil after a clean shutdown. Run must be
// called exactly once after New: it owns the listener.
func (cp *ControlPlane) Run(ctx context.Context) error {
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cp.tls)))
	cp.service.Register(gs)
	cp.inventory.Register(gs)
	for _, r := range cp.cfg.Register {
		r(gs)
	}
	cp.log.Info("control plane serving", "addr", cp.listener.Addr().String(), "trust_domain", cp.cfg.TrustDomain, "root_cert", cp.RootCertPath())

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		cp.started.Store(true)
		if err := gs.Serve(cp.listener); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("controlplane: serve: %w", err)
		}
		return nil
	})
	g.Go(func() error { return cp.rotateServing(ctx) })
	g.Go(func() error { return cp.runAdmin(ctx) })
	g.Go(func() error { return cp.pollConfigErrors(ctx) })
	g.Go(func() error { return cp.watchCAExpiry(ctx) })
	g.Go(func() error {
		<-ctx.Done()
		done := make(chan struct{})
		go func() { gs.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(shutdownGrace):
			gs.Stop()
			<-done
		}
		return nil
	})
	err := g.Wait()
	cp.log.Info("control plane stopped")
	return err
}

// rotateServing renews the serving certificate at two thirds of its lifetime, retrying
// every minute on failure (the current certificate stays in use meanwhile).
func (cp *ControlPlane) rotateServing(ctx context.Context) error {
	for {
		leaf := cp.serving.Load().Leaf
		renewAt := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
		wait := max(renewAt.Sub(cp.cfg.Now()), time.Minute)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if err := cp.renewServing(); err != nil {
			cp.log.Error("serving certificate renewal failed", "error", err)
			continue
		}
		cp.log.Info("serving certificate renewed", "not_after", cp.serving.Load().Leaf.NotAfter)
	}
}
