package meshtest

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshguard/meshguard/internal/agent"
	"github.com/meshguard/meshguard/internal/pki"
	"github.com/meshguard/meshguard/internal/sds"
)

// Agent is a real workload agent, with its SDS server, obtaining certificates from a
// ControlPlane.
type Agent struct {
	*agent.Agent
	// SDSSocket is the SDS unix socket, or "" with AgentOptions.NoSDS.
	SDSSocket string
	// TokenFile holds the bootstrap token; rewrite it to change the token.
	TokenFile string
	// OutputDir is where certificate files go, or "" unless AgentOptions.OutputDir.
	OutputDir string
	// Stop stops the agent and its SDS server and returns the first Run error; cleanup
	// calls it too.
	Stop func() error
}

// AgentOptions tune StartAgent. The zero value is an agent for default/default with a
// one-hour token, Istio's defaults otherwise, an SDS socket and no output directory.
type AgentOptions struct {
	Namespace, ServiceAccount string        // default "default", "default"
	Token                     string        // default: minted by the control plane for 1h
	CertTTL                   time.Duration // default 24h (the control plane may cap it)
	GraceRatio                float64       // default 0.5
	KeyType                   pki.KeyType   // default ECDSA P-256
	// RetryInitial and RetryMax bound the backoff; default 100ms and 1s, so tests that
	// stop the control plane recover quickly.
	RetryInitial, RetryMax time.Duration
	OutputDir              bool // write cert-chain.pem, key.pem and root-cert.pem
	NoSDS                  bool // serve no SDS socket
	NoWait                 bool // return without waiting for the first certificate
	Metrics                agent.Metrics
	Logger                 *slog.Logger // default: discard
}

// StartAgent starts an agent against cp and, unless o.NoWait, waits up to 15s for its
// first certificate. Everything stops when the test ends.
func StartAgent(tb testing.TB, cp *ControlPlane, o AgentOptions) *Agent {
	tb.Helper()
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.ServiceAccount == "" {
		o.ServiceAccount = "default"
	}
	if o.Token == "" {
		o.Token = cp.Token(tb, o.Namespace, o.ServiceAccount, time.Hour)
	}
	if o.RetryInitial == 0 {
		o.RetryInitial = 100 * time.Millisecond
	}
	if o.RetryMax == 0 {
		o.RetryMax = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	b, err := os.ReadFile(cp.RootCertPath)
	if err != nil {
		tb.Fatal(err)
	}
	roots, err := pki.ParseCertsPEM(b)
	if err != nil {
		tb.Fatal(err)
	}
	// Unix socket paths are limited to 108 bytes, which t.TempDir can exceed.
	dir, err := os.MkdirTemp("", "mgagent")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	ma := &Agent{TokenFile: filepath.Join(dir, "token")}
	if err := os.WriteFile(ma.TokenFile, []byte(o.Token), 0o600); err != nil {
		tb.Fatal(err)
	}
	if o.OutputDir {
		ma.OutputDir = filepath.Join(dir, "certs")
	}
	a, err := agent.New(agent.Config{
		ControlPlane: cp.Addr,
		CARoots:      roots,
		TokenFile:    ma.TokenFile,
		KeyType:      o.KeyType,
		CertTTL:      o.CertTTL,
		GraceRatio:   o.GraceRatio,
		RetryInitial: o.RetryInitial,
		RetryMax:     o.RetryMax,
		OutputDir:    ma.OutputDir,
		Logger:       o.Logger,
		Metrics:      o.Metrics,
	})
	if err != nil {
		tb.Fatalf("meshtest: agent: %v", err)
	}
	ma.Agent = a

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	running := 1
	go func() { errc <- a.Run(ctx) }()
	if !o.NoSDS {
		ma.SDSSocket = filepath.Join(dir, "sds.sock")
		srv, err := sds.New(sds.Config{SocketPath: ma.SDSSocket, Source: a.Source(), Logger: o.Logger})
		if err != nil {
			cancel()
			tb.Fatalf("meshtest: SDS server: %v", err)
		}
		running++
		go func() { errc <- srv.Run(ctx) }()
		select {
		case <-srv.Ready():
		case <-time.After(15 * time.Second):
			cancel()
			tb.Fatal("meshtest: SDS server not listening within 15s")
		}
	}
	var stopped bool
	var firstErr error
	ma.Stop = func() error {
		if stopped {
			return firstErr
		}
		stopped = true
		cancel()
		for range running {
			select {
			case err := <-errc:
				if err != nil && firstErr == nil {
					firstErr = err
				}
			case <-time.After(15 * time.Second):
				tb.Errorf("meshtest: agent did not stop within 15s")
				return firstErr
			}
		}
		return firstErr
	}
	tb.Cleanup(func() {
		if err := ma.Stop(); err != nil {
			tb.Errorf("meshtest: agent Run: %v", err)
		}
	})
	if !o.NoWait {
		wctx, wcancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer wcancel()
		if err := a.WaitUntilReady(wctx); err != nil {
			tb.Fatalf("meshtest: agent for %s/%s: %v", o.Namespace, o.ServiceAccount, err)
		}
	}
	return ma
}

// SDSUpdate is one SDS response, decoded.
type SDSUpdate struct {
	Version string
	// Chain is the "default" certificate chain (leaf first) and Key its private key;
	// both nil when the response did not carry "default".
	Chain []*x509.Certificate
	Key   crypto.Signer
	// Roots is the "ROOTCA" trust bundle; nil when the response did not carry it.
	Roots []*x509.Certificate
	Raw   *discovery.DiscoveryResponse
}

// SDSWatch is a real gRPC SDS client stream on a unix socket that ACKs every response.
type SDSWatch struct {
	tb      testing.TB
	stream  grpc.BidiStreamingClient[discovery.DiscoveryRequest, discovery.DiscoveryResponse]
	names   []string
	updates chan *SDSUpdate
	errc    chan error
}

// WatchSDS connects to the SDS socket, subscribes to names ("default", "ROOTCA") as
// Envoy does, and decodes and ACKs every response. It is closed when the test ends.
func WatchSDS(tb testing.TB, socket string, names ...string) *SDSWatch {
	tb.Helper()
	cc, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(func() { cancel(); cc.Close() })
	stream, err := secretv3.NewSecretDiscoveryServiceClient(cc).StreamSecrets(ctx)
	if err != nil {
		tb.Fatalf("meshtest: SDS stream on %s: %v", socket, err)
	}
	w := &SDSWatch{tb: tb, stream: stream, names: names, updates: make(chan *SDSUpdate, 64), errc: make(chan error, 1)}
	node := &corev3.Node{Id: "sidecar~127.0.0.1~meshtest.default~default.svc.cluster.local"}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: sds.SecretTypeURL, ResourceNames: names}); err != nil {
		tb.Fatalf("meshtest: SDS request: %v", err)
	}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				w.errc <- err
				return
			}
			u, err := decodeSDS(r)
			if err != nil {
				w.errc <- err
				return
			}
			// ACK, as Envoy does once the secret is applied.
			if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: sds.SecretTypeURL, ResourceNames: names,
				VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}); err != nil {
				w.errc <- err
				return
			}
			w.updates <- u
		}
	}()
	return w
}

// Next returns the next response, failing the test after timeout.
func (w *SDSWatch) Next(timeout time.Duration) *SDSUpdate {
	w.tb.Helper()
	select {
	case u := <-w.updates:
		return u
	case err := <-w.errc:
		w.tb.Fatalf("meshtest: SDS stream for %v ended: %v", w.names, err)
	case <-time.After(timeout):
		w.tb.Fatalf("meshtest: no SDS response for %v within %s", w.names, timeout)
	}
	return nil
}

func decodeSDS(r *discovery.DiscoveryResponse) (*SDSUpdate, error) {
	u := &SDSUpdate{Version: r.GetVersionInfo(), Raw: r}
	for _, a := range r.GetResources() {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			return nil, fmt.Errorf("SDS resource of type %s: %w", a.GetTypeUrl(), err)
		}
		switch s.GetName() {
		case sds.WorkloadResource:
			tc := s.GetTlsCertificate()
			chain, err := pki.ParseCertsPEM(tc.GetCertificateChain().GetInlineBytes())
			if err != nil {
				return nil, fmt.Errorf("SDS %q chain: %w", s.GetName(), err)
			}
			key, err := pki.ParseKeyPEM(tc.GetPrivateKey().GetInlineBytes())
			if err != nil {
				return nil, fmt.Errorf("SDS %q key: %w", s.GetName(), err)
			}
			u.Chain, u.Key = chain, key
		case sds.RootResource:
			roots, err := pki.ParseCertsPEM(s.GetValidationContext().GetTrustedCa().GetInlineBytes())
			if err != nil {
				return nil, fmt.Errorf("SDS %q: %w", s.GetName(), err)
			}
			u.Roots = roots
		default:
			return nil, fmt.Errorf("SDS response carries unexpected resource %q", s.GetName())
		}
	}
	return u, nil
}
