package legacy_test

import (
	"context"
	"fmt"
	"os"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/config/legacy"
)

func ExampleConvert() {
	old := `apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata:
  name: default
  namespace: shop
spec:
  peers:
  - mtls:
  origins:
  - jwt:
      issuer: https://idp.example.com
      jwksUri: https://idp.example.com/jwks.json
      triggerRules:
      - excludedPaths:
        - exact: /healthz
`
	convs, _, err := legacy.Convert(context.Background(), config.Loader{}, config.File{Name: "old.yaml", Data: []byte(old)})
	if err != nil {
		fmt.Println(err)
		return
	}
	y, err := legacy.Encode(convs)
	if err != nil {
		fmt.Println(err)
		return
	}
	os.Stdout.Write(y)
	// Output:
	// ---
	// # converted from authentication.istio.io/v1alpha1 Policy shop/default (old.yaml:0)
	// apiVersion: security.istio.io/v1
	// kind: PeerAuthentication
	// metadata:
	//   name: default
	//   namespace: shop
	// spec:
	//   mtls:
	//     mode: STRICT
	// ---
	// # converted from authentication.istio.io/v1alpha1 Policy shop/default (old.yaml:0)
	// apiVersion: security.istio.io/v1
	// kind: RequestAuthentication
	// metadata:
	//   name: default
	//   namespace: shop
	// spec:
	//   jwtRules:
	//   - forwardOriginalToken: true
	//     issuer: https://idp.example.com
	//     jwksUri: https://idp.example.com/jwks.json
	// ---
	// # converted from authentication.istio.io/v1alpha1 Policy shop/default (old.yaml:0)
	// apiVersion: security.istio.io/v1
	// kind: AuthorizationPolicy
	// metadata:
	//   name: default-require-jwt
	//   namespace: shop
	// spec:
	//   action: DENY
	//   rules:
	//   - from:
	//     - source:
	//         notRequestPrincipals:
	//         - '*'
	//     to:
	//     - operation:
	//         notPaths:
	//         - /healthz
}

func ExampleTranslator() {
	old := `apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata:
  name: default
  namespace: shop
spec:
  peers:
  - mtls:
      allowTls: true
`
	l := config.Loader{Translator: legacy.Translator{}}
	_, _, err := l.LoadFiles(context.Background(), config.File{Name: "old.yaml", Data: []byte(old)})
	fmt.Println(err)
	// Output:
	// invalid configuration: old.yaml:0: Policy shop/default: spec.peers[0].mtls.allowTls: refused: TLS without a client certificate has no modern equivalent (PERMISSIVE also accepts plaintext, STRICT requires a client certificate); remove it and choose a mode
}
