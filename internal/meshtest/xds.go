package meshtest

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshguard/meshguard/internal/authn/peercert"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/xds"
)

// XDSOptions configure StartXDS. CA and Store are required.
type XDSOptions struct {
	CA    *CA
	Store config.ConfigStore
	// Operators default to CA.OperatorID.
	Operators []identity.Identity
	// Addr to listen on; 127.0.0.1:0 when empty (set it to restart on the same port).
	Addr   string
	Logger *slog.Logger
	// Now is the server's clock (status times); time.Now when nil.
	Now func() time.Time
}

// XDS is a running xds.Server behind a real mTLS gRPC listener.
type XDS struct {
	Addr   string
	Server *xds.Server
	CA     *CA
	// Stop ends the server (streams are cut, as in a crash) and waits for it.
	Stop func()
}

// OperatorID is the operator identity StartXDS allows by default, the control plane's
// default operator (controlplane.DefaultOperator).
func (c *CA) OperatorID() identity.Identity { return c.ID("meshguard-system", "meshguard-operator") }

// StartXDS serves an xds.Server over mTLS on loopback until the test ends.
func StartXDS(tb testing.TB, o XDSOptions) *XDS {
	tb.Helper()
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Operators == nil {
		o.Operators = []identity.Identity{o.CA.OperatorID()}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	srv, err := xds.NewServer(xds.ServerConfig{Store: o.Store, Authenticator: peercert.New(o.CA.TrustDomain, nil), Operators: o.Operators, Logger: o.Logger, Now: o.Now})
	if err != nil {
		tb.Fatalf("xds.NewServer: %v", err)
	}
	var lis net.Listener
	for i := 0; ; i++ {
		// A restart may race the old socket's close: retry briefly.
		if lis, err = net.Listen("tcp", o.Addr); err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		tb.Fatalf("listen %s: %v", o.Addr, err)
	}
	serving := o.CA.IssueWith(tb, o.CA.ID("istio-system", "istiod"), IssueOptions{DNSNames: []string{"localhost"}})
	tc := &tls.Config{
		Certificates: []tls.Certificate{serving.TLSCertificate()},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    o.CA.Pool(),
		MinVersion:   tls.VersionTLS12,
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)))
	srv.Register(gs)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- gs.Serve(lis) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		gs.Stop()
		<-serveDone
		if err := <-runDone; err != nil {
			tb.Errorf("xds.Server.Run: %v", err)
		}
	}
	tb.Cleanup(stop)
	select {
	case <-srv.Ready():
	case <-time.After(10 * time.Second):
		tb.Fatalf("xds server not ready within 10s (does the store have a snapshot?)")
	}
	return &XDS{Addr: lis.Addr().String(), Server: srv, CA: o.CA, Stop: stop}
}

// Dial connects to the server at addr presenting cert (nil for none) and trusting ca.
func DialXDS(tb testing.TB, ca *CA, addr string, cert *Cert) *grpc.ClientConn {
	tb.Helper()
	tc := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{cert.TLSCertificate()}
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// XDSClient is a running xds.Client.
type XDSClient struct {
	*xds.Client
	// Stop ends Run and waits for it.
	Stop func()
}

// StartXDSClient runs an xds.Client for node over cc until the test ends.
func StartXDSClient(tb testing.TB, cc grpc.ClientConnInterface, node xds.Node) *XDSClient {
	tb.Helper()
	c, err := xds.NewClient(xds.ClientConfig{
		Conn: cc, Node: node, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		tb.Fatalf("xds.NewClient: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("xds.Client.Run: %v", err)
		}
	}
	tb.Cleanup(stop)
	return &XDSClient{Client: c, Stop: stop}
}

// WaitFor waits up to 10s for the client's snapshot to satisfy ok and returns it.
func (c *XDSClient) WaitFor(tb testing.TB, what string, ok func(*config.Snapshot) bool) *config.Snapshot {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for s := range c.Watch(ctx) {
		if ok(s) {
			return s
		}
	}
	tb.Fatalf("%s: not reached within 10s; client status %+v", what, c.Status())
	return nil
}

// String names the client in messages.
func (c *XDSClient) String() string { return fmt.Sprintf("xds client %+v", c.Status()) }
