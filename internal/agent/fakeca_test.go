package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/authn/bootstrap"
	"github.com/meshguard/meshguard/internal/authn/peercert"
	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/pki"
)

// fakeCA is the control plane's CA path without the network: the real ca.Authority,
// the real bootstrap-token and peer-certificate authenticators, and Istio's response
// layout, behind the agent's caClient interface, so rotation can be tested under
// testing/synctest (real sockets are not durably blocking in a bubble). The client
// certificate check stands in for the TLS handshake: it verifies the presented chain
// against the bundle as a TLS server with RequireAndVerifyClientCert would.
type fakeCA struct {
	td       string
	root     *testRoot
	tokenKey crypto.Signer
	auth     authn.Authenticator

	mu          sync.Mutex
	authority   *ca.Authority
	down        bool
	rejectCerts bool
	calls       []string // "token" or "cert", per request that reached the CA
}

func newFakeCA(t testing.TB, td string) *fakeCA {
	t.Helper()
	root := newTestRoot(t, td)
	key, err := pki.GenerateKey(pki.KeyECP256)
	if err != nil {
		t.Fatal(err)
	}
	ba, err := bootstrap.NewAuthenticator(key.Public(), td, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCA{td: td, root: root, tokenKey: key, auth: authn.Chain{ba, peercert.New(td, nil)}}
	f.setBundle(t, root.cert)
	return f
}

// testRoot is a self-signed CA made by the real ca package. (meshtest cannot be used
// here: it starts agents, so it imports this package.)
type testRoot struct {
	cert   *x509.Certificate
	signer ca.Signer
}

func newTestRoot(t testing.TB, td string) *testRoot {
	t.Helper()
	// Back-dated a year so that tests under synctest (whose clock starts in 2000) and
	// real-time tests can both use it.
	cert, signer, err := ca.NewRoot(td, 20*365*24*time.Hour, time.Now().Add(-365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &testRoot{cert: cert, signer: signer}
}

func (r *testRoot) pem() []byte { return pki.EncodeCertsPEM(r.cert) }

// setBundle replaces the authority so that it hands out roots (the signing root first).
func (f *fakeCA) setBundle(t testing.TB, roots ...*x509.Certificate) {
	t.Helper()
	a, err := ca.New(ca.Config{TrustDomain: f.td, Signer: f.root.signer, Bundle: roots, MaxTTL: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.authority = a
	f.mu.Unlock()
}

func (f *fakeCA) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *fakeCA) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// mint returns a bootstrap token for ns/sa valid for ttl from now.
func (f *fakeCA) mint(t testing.TB, ns, sa string, ttl time.Duration) string {
	t.Helper()
	tok, err := bootstrap.Mint(f.tokenKey, identity.Identity{TrustDomain: f.td, Namespace: ns, ServiceAccount: sa}, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fakeCA) createCertificate(ctx context.Context, csrPEM []byte, ttl time.Duration, cred credential) ([]string, error) {
	f.mu.Lock()
	down, rejectCerts, authority := f.down, f.rejectCerts, f.authority
	f.mu.Unlock()
	if down {
		return nil, classifyCAError("fake-ca:15012", status.Error(codes.Unavailable, "connection refused"))
	}
	creds := authn.Credentials{BearerToken: cred.token}
	kind := "token"
	if cred.cert != nil {
		kind = "cert"
		opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		for _, r := range authority.TrustBundle() {
			opts.Roots.AddCert(r)
		}
		for _, der := range cred.cert.Certificate[1:] {
			c, _ := x509.ParseCertificate(der)
			opts.Intermediates.AddCert(c)
		}
		chains, err := cred.cert.Leaf.Verify(opts)
		if err != nil {
			return nil, classifyCAError("fake-ca:15012", status.Error(codes.Unavailable, "tls: bad certificate"))
		}
		creds.VerifiedChains = chains
	}
	f.mu.Lock()
	f.calls = append(f.calls, kind)
	f.mu.Unlock()
	if rejectCerts && cred.cert != nil {
		return nil, classifyCAError("fake-ca:15012", status.Error(codes.Unauthenticated, "certificate revoked"))
	}
	caller, err := f.auth.Authenticate(ctx, creds)
	if err != nil {
		return nil, classifyCAError("fake-ca:15012", status.Error(codes.Unauthenticated, "authentication failed: "+err.Error()))
	}
	chain, err := authority.SignCSR(ctx, csrPEM, caller.Identity, ttl)
	if err != nil {
		return nil, classifyCAError("fake-ca:15012", status.Error(codes.InvalidArgument, err.Error()))
	}
	var out []string
	for _, c := range chain {
		out = append(out, string(pki.EncodeCertsPEM(c)))
	}
	return append(out, string(pki.EncodeCertsPEM(authority.TrustBundle()...))), nil
}

// logRecorder keeps the records an agent logs, for assertions on what an operator sees.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
	t    testing.TB
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	if testing.Verbose() {
		var attrs string
		r.Attrs(func(a slog.Attr) bool { attrs += " " + a.String(); return true })
		l.t.Logf("%s %s %s%s", r.Time.Format(time.TimeOnly), r.Level, r.Message, attrs)
	}
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// messages returns the messages logged at level.
func (l *logRecorder) messages(level slog.Level) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.recs {
		if r.Level == level {
			out = append(out, r)
		}
	}
	return out
}

func attr(r slog.Record, key string) slog.Value {
	var v slog.Value
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

// testAgent builds an agent against f with a token file for default/web.
func testAgent(t testing.TB, f *fakeCA, mod func(*Config)) (*Agent, *logRecorder, string) {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(f.mint(t, "default", "web", 24*time.Hour)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := &logRecorder{t: t}
	cfg := Config{
		TokenFile:    tokenFile,
		CertTTL:      time.Hour,
		RetryInitial: time.Second,
		RetryMax:     30 * time.Second,
		Logger:       slog.New(rec),
		client:       f,
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a, rec, tokenFile
}

// runAgent runs a in the background until the test ends.
func runAgent(t *testing.T, a *Agent) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
}

func mustReady(t *testing.T, a *Agent, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := a.WaitUntilReady(ctx); err != nil {
		t.Fatalf("WaitUntilReady: %v", err)
	}
}
