package xds_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshguard/meshguard/internal/authn/peercert"
	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/pki"
	"github.com/meshguard/meshguard/internal/xds"
)

const examplePolicies = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/default/sa/reviews"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: prod}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/prod/sa/productpage"]}}]}]
`

// exampleCerts makes what the control plane's CA and a sidecar's agent would provide:
// the mesh root, the control plane's serving certificate, and the certificate of the
// workload default/reviews.
func exampleCerts() (roots *x509.CertPool, serving, workload tls.Certificate, err error) {
	root, signer, err := ca.NewRoot("cluster.local", 24*time.Hour, time.Now().Add(-time.Minute))
	if err != nil {
		return nil, serving, workload, err
	}
	authority, err := ca.New(ca.Config{TrustDomain: "cluster.local", Signer: signer, Bundle: []*x509.Certificate{root}})
	if err != nil {
		return nil, serving, workload, err
	}
	issue := func(id identity.Identity, dns ...string) (tls.Certificate, error) {
		key, err := pki.GenerateKey(pki.KeyECP256)
		if err != nil {
			return tls.Certificate{}, err
		}
		chain, err := authority.Sign(context.Background(), ca.Request{PublicKey: key.Public(), Identity: id, TTL: time.Hour, DNSNames: dns})
		if err != nil {
			return tls.Certificate{}, err
		}
		c := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
		for _, x := range chain {
			c.Certificate = append(c.Certificate, x.Raw)
		}
		return c, nil
	}
	if serving, err = issue(identity.Identity{TrustDomain: "cluster.local", Namespace: "istio-system", ServiceAccount: "istiod"}, "localhost"); err != nil {
		return nil, serving, workload, err
	}
	if workload, err = issue(identity.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "reviews"}); err != nil {
		return nil, serving, workload, err
	}
	roots = x509.NewCertPool()
	roots.AddCert(root)
	return roots, serving, workload, nil
}

// A control plane serves a config store over mTLS; a sidecar's client receives what
// applies to its workload — its certificate says default/reviews, its labels app=reviews
// — and hands it out as a config.ConfigStore: the mesh-wide PeerAuthentication and the
// one policy selecting it, not ratings' policy nor prod's.
func Example() {
	roots, serving, workload, err := exampleCerts()
	if err != nil {
		fmt.Println(err)
		return
	}
	snap, _, err := (&config.Loader{}).LoadFiles(context.Background(), config.File{Name: "policies.yaml", Data: []byte(examplePolicies)})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The control plane.
	srv, err := xds.NewServer(xds.ServerConfig{
		Store:         config.NewStaticStore(snap),
		Authenticator: peercert.New("cluster.local", nil), // identity from the verified client certificate
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serving}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: roots, MinVersion: tls.VersionTLS12,
	})))
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go func() { _ = srv.Run(ctx) }()
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	// The sidecar.
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{workload}, RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cc.Close()
	client, err := xds.NewClient(xds.ClientConfig{Conn: cc, Node: xds.Node{
		ID: "sidecar~127.0.0.1~reviews-v1.default", WorkloadName: "reviews", Labels: map[string]string{"app": "reviews"},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	go func() { _ = client.Run(ctx) }()

	for s := range client.Watch(ctx) {
		for _, o := range s.Objects {
			fmt.Println(o.Kind, o.Key())
		}
		break
	}
	// Output:
	// AuthorizationPolicy default/reviews-viewer
	// PeerAuthentication istio-system/default
}
