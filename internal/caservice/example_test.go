package caservice_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshguard/meshguard/internal/authn/bootstrap"
	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/caservice"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/pki"
)

// The identity comes from the bootstrap token, whatever the CSR asks for; the answer is
// Istio's cert_chain, leaf first and the trust bundle last. A refused token is a gRPC
// Unauthenticated status that says what to do.
func ExampleServer_CreateCertificate() {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	root, signer, _ := ca.NewRoot("cluster.local", ca.RootTTL, now)
	authority, _ := ca.New(ca.Config{TrustDomain: "cluster.local", Signer: signer, Bundle: []*x509.Certificate{root}, Now: clock})
	tokenKey, _ := pki.GenerateKey(pki.KeyECP256)
	tokens, _ := bootstrap.NewAuthenticator(tokenKey.Public(), "cluster.local", clock)
	srv, _ := caservice.New(caservice.Config{CA: authority, Authenticator: tokens})

	key, _ := pki.GenerateKey(pki.KeyECP256)
	csr, _ := pki.CreateCSR(key, spiffeid.RequireFromString("spiffe://cluster.local/ns/kube-system/sa/admin"))
	create := func(token string) (*pb.IstioCertificateResponse, error) {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
		return srv.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(csr), ValidityDuration: 3600})
	}

	web := identity.Identity{Namespace: "shop", ServiceAccount: "web"}
	good, _ := bootstrap.Mint(tokenKey, web, time.Hour, now)
	resp, err := create(good)
	if err != nil {
		fmt.Println(err)
		return
	}
	leaf, _ := pki.ParseCertsPEM([]byte(resp.CertChain[0]))
	fmt.Println(len(resp.CertChain), leaf[0].URIs[0], leaf[0].NotAfter.Sub(now))

	expired, _ := bootstrap.Mint(tokenKey, web, time.Minute, now.Add(-time.Hour))
	_, err = create(expired)
	st, _ := status.FromError(err)
	fmt.Println(st.Code(), st.Message())
	// Output:
	// 2 spiffe://cluster.local/ns/shop/sa/web 1h0m0s
	// Unauthenticated authentication failed: bootstrap token refused: token expired at 2026-03-01T11:01:00Z: mint a new one
}
