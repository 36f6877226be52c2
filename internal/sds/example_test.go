package sds

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// A Server serves whatever its Source holds; here a fixed SVID and bundle stand in for
// the agent. Any SDS client — Envoy, or this gRPC client — reads "default" and "ROOTCA".
func ExampleServer() {
	svid, _ := x509svid.Load("testdata/cert-chain.pem", "testdata/key.pem")
	bundle, _ := x509bundle.Load(spiffeid.RequireTrustDomainFromString("cluster.local"), "testdata/root-cert.pem")
	src := newMemSource()
	src.set(svid, bundle)

	dir, _ := os.MkdirTemp("", "sds-example")
	defer os.RemoveAll(dir)
	srv, err := New(Config{SocketPath: filepath.Join(dir, "socket"), Source: src, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-srv.Ready()

	cc, _ := grpc.NewClient("unix://"+filepath.Join(dir, "socket"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer cc.Close()
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	defer fcancel()
	resp, err := secretv3.NewSecretDiscoveryServiceClient(cc).FetchSecrets(fctx, &discovery.DiscoveryRequest{
		TypeUrl: SecretTypeURL, ResourceNames: []string{WorkloadResource, RootResource},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range resp.GetResources() {
		var s tlsv3.Secret
		_ = r.UnmarshalTo(&s)
		switch {
		case s.GetTlsCertificate() != nil:
			fmt.Println(s.GetName(), "tls_certificate")
		case s.GetValidationContext() != nil:
			fmt.Println(s.GetName(), "validation_context")
		}
	}
	// Output:
	// ROOTCA validation_context
	// default tls_certificate
}
