package legacy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/config/legacy"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/sidecar"
)

// articlePolicies are the article's two policies as Istio 1.0's documentation wrote
// them (mTLS for the namespace; mTLS plus a required JWT for the customer service),
// with the Service that maps "customer" to its workloads. The issuer is a real JWKS
// server on loopback instead of the article's Keycloak.
const articlePolicies = `apiVersion: "authentication.istio.io/v1alpha1"
kind: "Policy"
metadata:
  name: "default"
  namespace: "customer"
spec:
  peers:
  - mtls:
---
apiVersion: "authentication.istio.io/v1alpha1"
kind: "Policy"
metadata:
  name: "customer-jwt-policy"
  namespace: "customer"
spec:
  targets:
  - name: customer
  peers:
  - mtls:
  origins:
  - jwt:
      issuer: %s
      jwksUri: %s
  principalBinding: USE_ORIGIN
---
apiVersion: v1
kind: Service
metadata:
  name: customer
  namespace: customer
spec:
  selector:
    app: customer
  ports:
  - name: http
    port: 8080
`

// staticCerts is a proxy.CertSource that never rotates.
type staticCerts struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (s staticCerts) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }
func (s staticCerts) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundle.GetX509BundleForTrustDomain(td)
}
func (s staticCerts) Updated() <-chan struct{} { return nil }

// TestArticlePolicyEnforcedBySidecar converts the article's policies and enforces the
// result through a real sidecar: the request fails "if [the JWT] doesn't exist, is
// invalid, or is expired", passes with a valid one, and a plaintext caller never gets
// in. A workload of the namespace outside the service's policy needs mTLS only.
func TestArticlePolicyEnforcedBySidecar(t *testing.T) {
	idp := meshtest.NewJWKSServer(t)
	in := fmt.Sprintf(articlePolicies, idp.Issuer(), idp.JWKSURI())
	l := config.Loader{Translator: legacy.Translator{}}
	snap, _, err := l.LoadFiles(context.Background(), config.File{Name: "article.yaml", Data: []byte(in)})
	if err != nil {
		t.Fatalf("LoadFiles: %v", err)
	}

	ca := meshtest.NewCA(t, "cluster.local")
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.Root})
	svid := func(ns, sa string) *x509svid.SVID {
		c := ca.Issue(t, ca.ID(ns, sa), time.Hour)
		id := spiffeid.RequireFromPath(td, "/ns/"+ns+"/sa/"+sa)
		return &x509svid.SVID{ID: id, Certificates: c.Chain, PrivateKey: c.Key}
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "authorization=%q", r.Header.Get("Authorization"))
	}))
	t.Cleanup(app.Close)
	appAddr := app.Listener.Addr().(*net.TCPAddr).AddrPort()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(w policy.Workload) netip.AddrPort {
		pol, err := sidecar.BuildPolicy(snap, w, td, &http.Client{Timeout: 5 * time.Second}, logger)
		if err != nil {
			t.Fatalf("BuildPolicy(%s): %v", w.Name, err)
		}
		sc := meshtest.StartSidecar(t, meshtest.SidecarOptions{
			Certs: staticCerts{svid(w.Namespace, w.ServiceAccount), bundle}, Apps: []netip.AddrPort{appAddr}, Policy: pol,
		})
		return sc.Inbound
	}
	customer := start(policy.Workload{Namespace: "customer", Name: "customer-1", ServiceAccount: "customer", Labels: map[string]string{"app": "customer"}})
	other := start(policy.Workload{Namespace: "customer", Name: "preference-1", ServiceAccount: "preference", Labels: map[string]string{"app": "preference"}})

	caller := svid("frontend", "frontend")
	cert := tls.Certificate{PrivateKey: caller.PrivateKey, Leaf: caller.Certificates[0]}
	for _, c := range caller.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	mtls := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{cert},
		// The sidecar's certificate names a SPIFFE ID, not a host: verify the chain only.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: ca.Pool(), Intermediates: inter})
			return err
		},
	}}}
	plain := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}

	forged, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	valid := idp.Mint(meshtest.Claims{"sub": "alice"})
	cases := []struct {
		name       string
		client     *http.Client
		target     netip.AddrPort
		token      string
		wantStatus int // 0: the connection must fail
		wantBody   string
	}{
		{"no token is rejected", mtls, customer, "", http.StatusForbidden, ""},
		{"expired token is rejected", mtls, customer, idp.Mint(meshtest.Claims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()}), http.StatusUnauthorized, ""},
		{"wrongly signed token is rejected", mtls, customer, meshtest.MintToken(t, jose.ES256, forged, "ec-1", meshtest.Claims{"iss": idp.Issuer(), "sub": "mallory", "exp": time.Now().Add(time.Hour).Unix()}), http.StatusUnauthorized, ""},
		{"garbage token is rejected", mtls, customer, "not.a.jwt", http.StatusUnauthorized, ""},
		{"token of another issuer is rejected", mtls, customer, meshtest.MintToken(t, jose.ES256, forged, "", meshtest.Claims{"iss": "https://other.example.com", "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}), http.StatusUnauthorized, ""},
		{"valid token goes through and reaches the app", mtls, customer, valid, http.StatusOK, fmt.Sprintf("authorization=%q", "Bearer "+valid)},
		{"plaintext caller is rejected even with a valid token", plain, customer, valid, 0, ""},
		{"the namespace policy needs mTLS only", mtls, other, "", http.StatusOK, `authorization=""`},
		{"the namespace policy rejects plaintext", plain, other, "", 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			scheme := "https"
			if tc.client == plain {
				scheme = "http"
			}
			req, err := http.NewRequest(http.MethodGet, scheme+"://"+tc.target.String()+"/customer", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := tc.client.Do(req)
			if tc.wantStatus == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("GET = %s, want the connection refused", resp.Status)
				}
				return
			}
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("GET = %s (%s), want %d", resp.Status, strings.TrimSpace(string(body)), tc.wantStatus)
			}
			if tc.wantBody != "" && string(body) != tc.wantBody {
				t.Errorf("app saw %s, want %s", body, tc.wantBody)
			}
		})
	}
}
