package ca_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/pki"
)

// The identity in the certificate is the one the Authority is told (from the
// authenticated caller), not the one the CSR asks for.
func ExampleAuthority_SignCSR() {
	now := time.Now()
	root, signer, _ := ca.NewRoot("cluster.local", ca.RootTTL, now)
	a, err := ca.New(ca.Config{TrustDomain: "cluster.local", Signer: signer, Bundle: []*x509.Certificate{root}, MaxTTL: 48 * time.Hour})
	if err != nil {
		fmt.Println(err)
		return
	}
	key, _ := pki.GenerateKey(pki.KeyECP256)
	csr, _ := pki.CreateCSR(key, spiffeid.RequireFromString("spiffe://cluster.local/ns/kube-system/sa/admin"))
	caller := identity.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}

	chain, err := a.SignCSR(context.Background(), csr, caller, 1000*time.Hour)
	if err != nil {
		fmt.Println(err)
		return
	}
	leaf := chain[0]
	fmt.Println(leaf.URIs[0])
	fmt.Println(leaf.NotAfter.Sub(now).Round(time.Hour)) // capped at MaxTTL
	// Output:
	// spiffe://cluster.local/ns/default/sa/web
	// 48h0m0s
}
