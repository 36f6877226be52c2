package agent_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/meshguard/meshguard/internal/agent"
	"github.com/meshguard/meshguard/internal/authn/bootstrap"
	"github.com/meshguard/meshguard/internal/controlplane"
	"github.com/meshguard/meshguard/internal/identity"
)

// The agent as a library, as the sidecar uses it: New, Run in the background,
// WaitUntilReady, then read certificates from Source (or hand Source to the SDS server
// and the proxy). The control plane here is the real one, on a loopback port.
func ExampleAgent() {
	dir, _ := os.MkdirTemp("", "agent-example")
	defer os.RemoveAll(dir)
	cp, err := controlplane.New(controlplane.Config{DataDir: filepath.Join(dir, "cp"), Listen: "127.0.0.1:0"})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cpDone := make(chan error)
	go func() { cpDone <- cp.Run(ctx) }()
	defer func() { cancel(); <-cpDone }()

	// What `meshguard ctl token create --namespace shop --service-account cart` writes.
	key, _ := bootstrap.LoadOrCreateKey(filepath.Join(dir, "cp"))
	tok, _ := bootstrap.Mint(key, identity.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}, time.Hour, time.Now())
	tokenFile := filepath.Join(dir, "token")
	_ = os.WriteFile(tokenFile, []byte(tok), 0o600)

	a, err := agent.New(agent.Config{
		ControlPlane: cp.Addr().String(),
		CARoots:      []*x509.Certificate{cp.TrustBundle()[0]},
		TokenFile:    tokenFile,
		CertTTL:      time.Hour,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	agentDone := make(chan error)
	go func() { agentDone <- a.Run(ctx) }()
	defer func() { cancel(); <-agentDone }()

	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := a.WaitUntilReady(wctx); err != nil {
		fmt.Println(err)
		return
	}
	svid, _ := a.Source().GetX509SVID()
	bundle, _ := a.Source().GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	fmt.Println(svid.ID)
	fmt.Println(len(bundle.X509Authorities()), "root")
	// Output:
	// spiffe://cluster.local/ns/shop/sa/cart
	// 1 root
}
