package controlplane_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshguard/meshguard/internal/authn/bootstrap"
	"github.com/meshguard/meshguard/internal/controlplane"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/pki"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type csrKey struct {
	key crypto.Signer
	pem string
}

func newCSR(t testing.TB, key crypto.Signer, asks string) csrKey {
	t.Helper()
	if key == nil {
		var err error
		if key, err = pki.GenerateKey(pki.KeyECP256); err != nil {
			t.Fatal(err)
		}
	}
	var id spiffeid.ID
	if asks != "" {
		id = spiffeid.RequireFromString(asks)
	}
	b, err := pki.CreateCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return csrKey{key, string(b)}
}

// call sends CreateCertificate as Istio's agent does: CSR PEM, validity in seconds,
// "Bearer" authorization and ClusterID metadata.
func call(t testing.TB, conn *grpc.ClientConn, token, csr string, ttl time.Duration, md *structpb.Struct) (*pb.IstioCertificateResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pairs := []string{"ClusterID", "Kubernetes"}
	if token != "" {
		pairs = append(pairs, "Authorization", "Bearer "+token)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, pairs...)
	return pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr: csr, ValidityDuration: int64(ttl / time.Second), Metadata: md,
	})
}

// parseChain checks the response shape pilot-agent relies on and returns leaf,
// intermediates and roots.
func parseChain(t testing.TB, resp *pb.IstioCertificateResponse) (*x509.Certificate, []*x509.Certificate, []*x509.Certificate) {
	t.Helper()
	if len(resp.CertChain) < 2 {
		t.Fatalf("cert_chain has %d entries, want >= 2 (pilot-agent refuses fewer)", len(resp.CertChain))
	}
	var certs [][]*x509.Certificate
	for i, p := range resp.CertChain {
		c, err := pki.ParseCertsPEM([]byte(p))
		if err != nil {
			t.Fatalf("cert_chain[%d]: %v", i, err)
		}
		certs = append(certs, c)
	}
	var inter []*x509.Certificate
	for _, c := range certs[1 : len(certs)-1] {
		inter = append(inter, c...)
	}
	roots := certs[len(certs)-1]
	for _, r := range roots {
		if r.CheckSignatureFrom(r) != nil {
			t.Errorf("last cert_chain entry holds %q, which is not a self-signed root", r.Subject)
		}
	}
	return certs[0][0], inter, roots
}

func identityOf(t testing.TB, c *x509.Certificate) identity.Identity {
	t.Helper()
	sid, err := pki.SPIFFEIDFromCert(c)
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.FromSPIFFEID(sid)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func verifyAgainst(t testing.TB, leaf *x509.Certificate, inter []*x509.Certificate, pool *x509.CertPool) {
	t.Helper()
	ip := x509.NewCertPool()
	for _, c := range inter {
		ip.AddCert(c)
	}
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: ip, KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
			t.Fatalf("issued certificate does not verify for %v: %v", eku, err)
		}
	}
}

func TestCreateCertificateWithToken(t *testing.T) {
	logs := &syncBuffer{}
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{
		MaxWorkloadCertTTL: 48 * time.Hour,
		Logger:             slog.New(slog.NewTextHandler(logs, nil)),
	})
	conn := cp.Dial(t, nil)
	web := cp.ID("default", "web")
	token := cp.Token(t, "default", "web", time.Hour)

	for _, tc := range []struct {
		name     string
		asks     string
		ttl      time.Duration
		lifetime time.Duration
	}{
		{"round trip", "spiffe://cluster.local/ns/default/sa/web", time.Hour, time.Hour},
		{"csr asks for another identity", "spiffe://cluster.local/ns/kube-system/sa/admin", time.Hour, time.Hour},
		{"csr asks for a foreign trust domain", "spiffe://evil.example/ns/default/sa/web", 2 * time.Hour, 2 * time.Hour},
		{"no ttl gets the default", "", 0, 24 * time.Hour},
		{"ttl capped at the maximum", "", 1000 * time.Hour, 48 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, err := call(t, conn, token, newCSR(t, nil, tc.asks).pem, tc.ttl, nil)
			if err != nil {
				t.Fatalf("CreateCertificate = %v", err)
			}
			leaf, inter, roots := parseChain(t, resp)
			if len(resp.CertChain) != 2 {
				t.Errorf("cert_chain has %d entries, want 2 (leaf, root) for a self-signed CA", len(resp.CertChain))
			}
			if got := identityOf(t, leaf); got != web || len(leaf.URIs) != 1 || len(leaf.DNSNames) != 0 {
				t.Errorf("identity = %v (URIs %v, DNS %v), want only %v", got, leaf.URIs, leaf.DNSNames, web)
			}
			verifyAgainst(t, leaf, inter, cp.RootPool)
			if !roots[0].Equal(rootFile(t, cp.RootCertPath)[0]) {
				t.Error("last cert_chain entry is not the root in root-cert.pem")
			}
			if got := leaf.NotAfter.Sub(start); got < tc.lifetime-time.Minute || got > tc.lifetime+time.Minute {
				t.Errorf("lifetime %v, want about %v", got, tc.lifetime)
			}
			if skew := start.Sub(leaf.NotBefore); skew < time.Minute {
				t.Errorf("NotBefore back-dated by %v, want minutes for clock skew", skew)
			}
		})
	}
	for _, want := range []string{`msg="certificate issued"`, "identity=spiffe://cluster.local/ns/default/sa/web", "serial=", "not_after=", "caller=127.0.0.1:", "auth=bootstrap-token", "cluster_id=Kubernetes"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("issuance log lacks %q:\n%s", want, logs.String())
		}
	}
}

func rootFile(t testing.TB, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.ParseCertsPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCreateCertificateRefusals(t *testing.T) {
	logs := &syncBuffer{}
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	other := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	conn := cp.Dial(t, nil)
	good := cp.Token(t, "default", "web", time.Hour)
	parts := strings.Split(good, ".")
	otherPayload := strings.Split(cp.Token(t, "kube-system", "admin", time.Hour), ".")[1]

	wrongAud := mintRaw(t, cp.DataDir, `{"iss":"meshguard-bootstrap","sub":"system:serviceaccount:default:web","aud":["kubernetes"],"exp":`+expIn(time.Hour)+`}`)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	badSig := newCSR(t, nil, "")
	blk, _ := pem.Decode([]byte(badSig.pem))
	blk.Bytes[len(blk.Bytes)-2] ^= 0x55
	imp, _ := structpb.NewStruct(map[string]any{"ImpersonatedIdentity": "spiffe://cluster.local/ns/kube-system/sa/admin"})

	for _, tc := range []struct {
		name    string
		token   string
		csr     string
		md      *structpb.Struct
		code    codes.Code
		message string
	}{
		{"no credentials", "", newCSR(t, nil, "").pem, nil, codes.Unauthenticated, "authorization: Bearer"},
		{"expired token", mintExpired(t, cp), newCSR(t, nil, "").pem, nil, codes.Unauthenticated, "expired"},
		{"tampered token", parts[0] + "." + otherPayload + "." + parts[2], newCSR(t, nil, "").pem, nil, codes.Unauthenticated, "signature"},
		{"token from another control plane", other.Token(t, "default", "web", time.Hour), newCSR(t, nil, "").pem, nil, codes.Unauthenticated, "signature"},
		{"wrong audience", wrongAud, newCSR(t, nil, "").pem, nil, codes.Unauthenticated, "audience"},
		{"garbage token", "garbage", newCSR(t, nil, "").pem, nil, codes.Unauthenticated, "JWT"},
		{"empty csr", good, "", nil, codes.InvalidArgument, "csr is empty"},
		{"csr not pem", good, "hello", nil, codes.InvalidArgument, "no PEM"},
		{"csr signature fails", good, string(pem.EncodeToMemory(blk)), nil, codes.InvalidArgument, "CSR"},
		{"rsa 1024 key", good, newCSR(t, rsa1024, "").pem, nil, codes.InvalidArgument, "RSA 1024"},
		{"p-224 key", good, newCSR(t, p224, "").pem, nil, codes.InvalidArgument, "P-224"},
		{"impersonation", good, newCSR(t, nil, "").pem, imp, codes.PermissionDenied, "only the caller's own identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := call(t, conn, tc.token, tc.csr, time.Hour, tc.md)
			st, _ := status.FromError(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.message) {
				t.Fatalf("CreateCertificate = %v, %v; want %v containing %q", resp, err, tc.code, tc.message)
			}
		})
	}
	if n := strings.Count(logs.String(), `msg="certificate request refused"`); n != 12 {
		t.Errorf("%d refusals logged, want 12:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "code=Unauthenticated") || !strings.Contains(logs.String(), "caller=127.0.0.1:") {
		t.Errorf("refusal log lacks code or caller:\n%s", logs.String())
	}
}

func expIn(d time.Duration) string { return strconv.FormatInt(time.Now().Add(d).Unix(), 10) }

// mintRaw signs arbitrary claims with the control plane's token key, for tokens
// `ctl token create` would never produce.
func mintRaw(t testing.TB, dataDir, claims string) string {
	t.Helper()
	key, err := bootstrap.LoadOrCreateKey(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign([]byte(claims))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func mintExpired(t testing.TB, cp *meshtest.ControlPlane) string {
	t.Helper()
	key, err := bootstrap.LoadOrCreateKey(cp.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := bootstrap.Mint(key, cp.ID("default", "web"), time.Minute, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRenewalWithMeshCertificate(t *testing.T) {
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	web := cp.ID("default", "web")
	key, _ := pki.GenerateKey(pki.KeyECP256)
	resp, err := call(t, cp.Dial(t, nil), cp.Token(t, "default", "web", time.Hour), newCSR(t, key, "").pem, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, inter, _ := parseChain(t, resp)
	mesh := &tls.Certificate{PrivateKey: key, Leaf: leaf, Certificate: [][]byte{leaf.Raw}}
	for _, c := range inter {
		mesh.Certificate = append(mesh.Certificate, c.Raw)
	}

	// Renew with the mesh certificate and no token; the CSR asks for someone else.
	resp, err = call(t, cp.Dial(t, mesh), "", newCSR(t, nil, "spiffe://cluster.local/ns/kube-system/sa/admin").pem, time.Hour, nil)
	if err != nil {
		t.Fatalf("renewal with mesh certificate: %v", err)
	}
	renewed, _, _ := parseChain(t, resp)
	if got := identityOf(t, renewed); got != web {
		t.Errorf("renewed identity %v, want %v", got, web)
	}
	if renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("renewal returned the same certificate")
	}

	// A certificate for the same identity from a foreign CA is refused in the handshake
	// and never yields a certificate.
	foreign := meshtest.NewCA(t, "cluster.local").Issue(t, web, time.Hour).TLSCertificate()
	if _, err := call(t, cp.Dial(t, &foreign), "", newCSR(t, nil, "").pem, time.Hour, nil); status.Code(err) != codes.Unavailable {
		t.Errorf("foreign CA: CreateCertificate = %v, want the handshake to fail (Unavailable)", err)
	}
}

func TestServingCertificate(t *testing.T) {
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{})
	host, _, _ := net.SplitHostPort(cp.Addr)
	// pilot-agent verifies istiod.istio-system.svc when its CA address is localhost.
	for _, name := range []string{host, "localhost", "istiod.istio-system.svc", "meshguard.meshguard-system.svc"} {
		t.Run(name, func(t *testing.T) {
			cfg := cp.TLSConfig(nil)
			cfg.ServerName = name
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", cp.Addr, cfg)
			if err != nil {
				t.Fatalf("TLS to %s as %q: %v", cp.Addr, name, err)
			}
			defer conn.Close()
			leaf := conn.ConnectionState().PeerCertificates[0]
			if got := identityOf(t, leaf); got != controlplane.ServingIdentity("cluster.local") {
				t.Errorf("serving identity %v", got)
			}
		})
	}
}

func TestPluginIntermediate(t *testing.T) {
	root := meshtest.NewCA(t, "cluster.local")
	cp := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{CACertsDir: root.WriteIntermediateDir(t)})
	resp, err := call(t, cp.Dial(t, nil), cp.Token(t, "default", "web", time.Hour), newCSR(t, nil, "").pem, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.CertChain) != 3 {
		t.Fatalf("cert_chain has %d entries, want 3 (leaf, intermediate, root)", len(resp.CertChain))
	}
	leaf, inter, roots := parseChain(t, resp)
	if !roots[0].Equal(root.Root) || len(inter) != 1 || !inter[0].IsCA {
		t.Fatalf("chain is not leaf, intermediate, the plugged-in root")
	}
	verifyAgainst(t, leaf, inter, root.Pool())
	if got := rootFile(t, cp.RootCertPath); len(got) != 1 || !got[0].Equal(root.Root) {
		t.Error("root-cert.pem in the data directory is not the plug-in root")
	}
}

func TestRestartKeepsRoot(t *testing.T) {
	dir := t.TempDir()
	first := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{DataDir: dir})
	root1 := rootFile(t, first.RootCertPath)
	token := first.Token(t, "default", "web", time.Hour)
	if err := first.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	second := meshtest.StartControlPlane(t, meshtest.ControlPlaneOptions{DataDir: dir})
	root2 := rootFile(t, second.RootCertPath)
	if len(root1) != 1 || len(root2) != 1 || !root1[0].Equal(root2[0]) {
		t.Fatal("root changed across a restart")
	}
	// Tokens minted before the restart still work: the token key is kept too.
	resp, err := call(t, second.Dial(t, nil), token, newCSR(t, nil, "").pem, time.Hour, nil)
	if err != nil {
		t.Fatalf("token from before the restart: %v", err)
	}
	leaf, inter, _ := parseChain(t, resp)
	verifyAgainst(t, leaf, inter, first.RootPool)
	for _, f := range []string{filepath.Join("ca", "root-key.pem"), "token-signing-key.pem"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want mode 0600", f, err)
		}
	}
}

func TestBadCACertsDirRefused(t *testing.T) {
	good := meshtest.NewCA(t, "cluster.local")
	for _, tc := range []struct {
		name   string
		breakf func(dir string)
		want   string
	}{
		{"missing key", func(dir string) { os.Remove(filepath.Join(dir, "ca-key.pem")) }, "ca-key.pem is missing"},
		{"key does not match", func(dir string) {
			k, _ := pki.GenerateKey(pki.KeyECP256)
			b, _ := pki.EncodeKeyPEM(k)
			os.WriteFile(filepath.Join(dir, "ca-key.pem"), b, 0o600)
		}, "does not match"},
		{"root of another CA", func(dir string) { meshtest.NewCA(t, "cluster.local").WriteRoot(t, dir) }, "does not chain"},
		{"not a CA", func(dir string) {
			c := good.Issue(t, good.ID("default", "web"), time.Hour)
			os.WriteFile(filepath.Join(dir, "ca-cert.pem"), c.CertPEM, 0o644)
			os.WriteFile(filepath.Join(dir, "ca-key.pem"), c.KeyPEM, 0o600)
		}, "not a CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := good.WriteIntermediateDir(t)
			tc.breakf(dir)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer lis.Close()
			_, err = controlplane.New(controlplane.Config{DataDir: t.TempDir(), CACertsDir: dir, Listener: lis})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "refusing to start") {
				t.Fatalf("New = %v, want refusal containing %q", err, tc.want)
			}
		})
	}
}

func TestShutdownOnCancel(t *testing.T) {
	before := runtime.NumGoroutine()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	cp, err := controlplane.New(controlplane.Config{DataDir: dataDir, Listener: lis})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()

	// Serve one real call first, so that shutdown has connection goroutines to end.
	pool := x509.NewCertPool()
	for _, r := range cp.TrustBundle() {
		pool.AddCert(r)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	key, err := bootstrap.LoadOrCreateKey(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := bootstrap.Mint(key, identity.Identity{Namespace: "default", ServiceAccount: "web"}, time.Hour, time.Now())
	if _, err := call(t, conn, tok, newCSR(t, nil, "").pem, time.Hour, nil); err != nil {
		t.Fatalf("CreateCertificate before shutdown: %v", err)
	}
	conn.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	if c, err := net.DialTimeout("tcp", lis.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("listener still accepts after shutdown")
	}
	// Every goroutine Run started must be gone (allowing the runtime a moment to reap).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after shutdown, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestBadConfigLeavesNoState: flags that cannot work are refused before anything is
// written, naming the flag; a later start with good flags must not inherit a root created
// for a start that never happened (for the wrong trust domain, say).
func TestBadConfigLeavesNoState(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  controlplane.Config
		want string
	}{
		{"invalid trust domain", controlplane.Config{TrustDomain: "Bad Domain"}, "--trust-domain"},
		{"trust domain as URI", controlplane.Config{TrustDomain: "spiffe://cluster.local"}, "--trust-domain"},
		{"default ttl above max", controlplane.Config{WorkloadCertTTL: 100 * time.Hour, MaxWorkloadCertTTL: 24 * time.Hour}, "--workload-cert-ttl"},
		{"negative max ttl", controlplane.Config{MaxWorkloadCertTTL: -time.Hour}, "--max-workload-cert-ttl"},
		{"negative default ttl", controlplane.Config{WorkloadCertTTL: -time.Hour}, "--workload-cert-ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer lis.Close()
			cfg := tc.cfg
			cfg.DataDir = filepath.Join(t.TempDir(), "data")
			cfg.Listener = lis
			if _, err := controlplane.New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New(%s) = %v, want an error naming %s", tc.name, err, tc.want)
			}
			if _, err := os.Stat(cfg.DataDir); err == nil {
				entries, _ := os.ReadDir(cfg.DataDir)
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("refused start left %s with %v; want nothing written", cfg.DataDir, names)
			}
		})
	}
}

// TestServingCertificateOnEveryAddress: listening on 0.0.0.0, the serving certificate
// names the host's own addresses too, so that an agent given --controlplane <host IP>
// verifies it (the connection here still goes to loopback; only the name checked differs).
func TestServingCertificateOnEveryAddress(t *testing.T) {
	var hostIP net.IP
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.IsGlobalUnicast() {
			hostIP = n.IP
			break
		}
	}
	if hostIP == nil {
		t.Skip("no non-loopback unicast address on this host")
	}
	lis, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.New(controlplane.Config{DataDir: t.TempDir(), Listener: lis})
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	defer func() { cancel(); <-done }()
	pool := x509.NewCertPool()
	for _, r := range cp.TrustBundle() {
		pool.AddCert(r)
	}
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	for _, name := range []string{"127.0.0.1", hostIP.String()} {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort("127.0.0.1", port),
			&tls.Config{RootCAs: pool, ServerName: name})
		if err != nil {
			t.Errorf("serving certificate on 0.0.0.0 checked as %q: %v", name, err)
			continue
		}
		conn.Close()
	}
}
