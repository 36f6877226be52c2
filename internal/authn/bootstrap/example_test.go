package bootstrap_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/authn/bootstrap"
	"github.com/meshguard/meshguard/internal/identity"
)

func ExampleMint() {
	dataDir, _ := os.MkdirTemp("", "meshguard-example")
	defer os.RemoveAll(dataDir)
	key, err := bootstrap.LoadOrCreateKey(dataDir)
	if err != nil {
		fmt.Println(err)
		return
	}
	now := time.Now()
	token, _ := bootstrap.Mint(key, identity.Identity{Namespace: "shop", ServiceAccount: "cart"}, time.Hour, now)

	a, _ := bootstrap.NewAuthenticator(key.Public(), "cluster.local", func() time.Time { return now })
	caller, err := a.Authenticate(context.Background(), authn.Credentials{BearerToken: token})
	fmt.Println(caller.Identity, caller.Method, err)

	later, _ := bootstrap.NewAuthenticator(key.Public(), "cluster.local", func() time.Time { return now.Add(2 * time.Hour) })
	_, err = later.Authenticate(context.Background(), authn.Credentials{BearerToken: token})
	fmt.Println(err != nil)
	// Output:
	// spiffe://cluster.local/ns/shop/sa/cart bootstrap-token <nil>
	// true
}
