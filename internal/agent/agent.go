package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/pki"
)

// Output file names in Config.OutputDir, as Istio's OUTPUT_CERTS writes them.
const (
	CertChainFile = "cert-chain.pem"
	KeyFile       = "key.pem"
	RootCertFile  = "root-cert.pem"
)

// Defaults for the zero values of Config.
const (
	DefaultCertTTL        = 24 * time.Hour
	DefaultGraceRatio     = 0.5
	DefaultJitterRatio    = 0.01
	DefaultRetryInitial   = time.Second
	DefaultRetryMax       = time.Minute
	DefaultRequestTimeout = 10 * time.Second
)

// Config configures an Agent. ControlPlane, CARoots, TokenFile and Logger are required.
type Config struct {
	// ControlPlane is the CA's HOST:PORT (the control plane's gRPC address).
	ControlPlane string
	// CARoots verify the CA's serving certificate (the --ca-root file). The roots of the
	// bundle the CA hands out are trusted for that purpose too once received.
	CARoots []*x509.Certificate
	// CAServerName overrides the name the CA's serving certificate is verified against;
	// by default it is the host of ControlPlane, or istiod.istio-system.svc for localhost.
	CAServerName string
	// TokenFile holds the bootstrap token. It is read again on every bootstrap attempt,
	// so a refreshed token is picked up without a restart.
	TokenFile string

	// KeyType of the workload key; zero means ECDSA P-256.
	KeyType pki.KeyType
	// CertTTL is the validity asked for (the CA may cap it); zero means 24h.
	CertTTL time.Duration
	// GraceRatio: renew when this fraction of the lifetime is left; zero means 0.5.
	GraceRatio float64
	// JitterRatio spreads renewals by up to ± this fraction of the lifetime; zero means
	// 0.01 (Istio's default). Negative disables jitter.
	JitterRatio float64
	// RetryInitial and RetryMax bound the exponential backoff while the CA fails; zero
	// means 1s and 1m.
	RetryInitial, RetryMax time.Duration
	// RequestTimeout bounds one CSR round trip; zero means 10s.
	RequestTimeout time.Duration

	// OutputDir, when set, receives cert-chain.pem, key.pem (0600) and root-cert.pem on
	// every rotation, for workloads that do their own TLS. The key is written nowhere else.
	OutputDir string

	// Logger receives rotation events and failures. Required.
	Logger *slog.Logger
	// Now is the clock for rotation and expiry decisions; nil means time.Now.
	Now func() time.Time
	// Rand seeds the jitter; nil means crypto/rand.
	Rand io.Reader
	// Metrics receives rotations and certificate changes; nil records nothing.
	Metrics Metrics

	// client replaces the gRPC CA client in this package's tests.
	client caClient
}

func (c *Config) setDefaults() {
	if c.KeyType == 0 {
		c.KeyType = pki.KeyECP256
	}
	if c.CertTTL == 0 {
		c.CertTTL = DefaultCertTTL
	}
	if c.GraceRatio == 0 {
		c.GraceRatio = DefaultGraceRatio
	}
	if c.JitterRatio == 0 {
		c.JitterRatio = DefaultJitterRatio
	}
	c.JitterRatio = max(c.JitterRatio, 0)
	if c.RetryInitial == 0 {
		c.RetryInitial = DefaultRetryInitial
	}
	if c.RetryMax == 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.client == nil {
		if c.ControlPlane == "" {
			errs = append(errs, errors.New("control plane address is empty"))
		}
		if len(c.CARoots) == 0 {
			errs = append(errs, errors.New("no CA root certificates to verify the control plane with"))
		}
	}
	if c.TokenFile == "" {
		errs = append(errs, errors.New("no bootstrap token file"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("no logger"))
	}
	if c.CertTTL < time.Second {
		errs = append(errs, fmt.Errorf("certificate TTL %s: want at least 1s", c.CertTTL))
	}
	if c.GraceRatio <= 0 || c.GraceRatio >= 1 {
		errs = append(errs, fmt.Errorf("grace ratio %g: want a fraction between 0 and 1", c.GraceRatio))
	}
	if c.JitterRatio >= 0.5 {
		errs = append(errs, fmt.Errorf("jitter ratio %g: want less than 0.5", c.JitterRatio))
	}
	if c.RetryInitial < 0 || c.RetryMax < c.RetryInitial {
		errs = append(errs, fmt.Errorf("retry backoff %s..%s: want 0 < initial <= max", c.RetryInitial, c.RetryMax))
	}
	if _, err := pki.GenerateKey(c.KeyType); err != nil {
		errs = append(errs, fmt.Errorf("key type %s: %w", c.KeyType, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	return nil
}

// Agent obtains and rotates the workload certificate. Create it with New, run it with
// Run, read certificates from Source.
type Agent struct {
	cfg Config
	log *slog.Logger
	src *Source
	ca  caClient
	rng *mrand.Rand // Run's goroutine only
	ran atomic.Bool

	mu      sync.Mutex
	lastErr error

	// Run's goroutine only.
	expiredNoted *held
	outputStale  *held
	useToken     bool // the CA refused our certificate: try the bootstrap token next
}

// New validates cfg and returns an Agent. It opens no connection and starts no
// goroutine; the token file is not read until the first bootstrap attempt.
func New(cfg Config) (*Agent, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var seed [32]byte
	if _, err := io.ReadFull(cfg.Rand, seed[:]); err != nil {
		return nil, fmt.Errorf("agent: seed jitter: %w", err)
	}
	a := &Agent{
		cfg: cfg,
		log: cfg.Logger.With("component", "agent"),
		src: newSource(cfg.Now),
		ca:  cfg.client,
		rng: mrand.New(mrand.NewChaCha8(seed)),
	}
	if a.ca == nil {
		name := cfg.CAServerName
		if name == "" {
			n, err := caServerName(cfg.ControlPlane)
			if err != nil {
				return nil, fmt.Errorf("agent config: %w", err)
			}
			name = n
		}
		a.ca = &grpcCA{addr: cfg.ControlPlane, serverName: name, roots: a.caPool}
	}
	return a, nil
}

// Source returns the agent's certificate source. It is valid before Run starts and
// stays valid after it returns.
func (a *Agent) Source() *Source { return a.src }

// LastError returns the error of the last failed attempt, or nil after a success.
func (a *Agent) LastError() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastErr
}

// WaitUntilReady blocks until a certificate that may be served is held, or ctx is done;
// then its error names the last failure (an expired bootstrap token, say).
func (a *Agent) WaitUntilReady(ctx context.Context) error {
	for {
		changed := a.src.Updated()
		if a.src.Ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			if last := a.LastError(); last != nil {
				return fmt.Errorf("no valid workload certificate: %w (last attempt: %w)", ctx.Err(), last)
			}
			return fmt.Errorf("no valid workload certificate: %w", ctx.Err())
		case <-changed:
		}
	}
}

// Run obtains the first certificate, then renews it before it expires, until ctx is
// done. Failures never end Run: it keeps serving the current certificate while it is
// valid and retries with backoff; it returns nil when ctx is done. An Agent runs once.
func (a *Agent) Run(ctx context.Context) error {
	if a.ran.Swap(true) {
		return errors.New("agent: Run called twice")
	}
	var (
		attempt int       // consecutive failures
		retryAt time.Time // while backing off
	)
	for ctx.Err() == nil {
		now := a.cfg.Now()
		cur := a.src.current()
		a.noteExpiry(now, cur)
		if now.Before(retryAt) {
			a.sleep(ctx, now, a.nextWake(now, cur, retryAt))
			continue
		}
		var err error
		switch {
		case shouldRotate(now, cur) || a.useToken:
			err = a.rotate(ctx, now, cur)
		case a.outputStale != nil:
			if err = a.writeOutput(a.outputStale); err == nil {
				a.outputStale = nil
			}
		default:
			a.sleep(ctx, now, a.nextWake(now, cur, time.Time{}))
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			delay := backoffDelay(attempt, a.cfg.RetryInitial, a.cfg.RetryMax, a.rng.Float64())
			attempt++
			retryAt = a.cfg.Now().Add(delay)
			a.setLastErr(err)
			a.logFailure(err, attempt, delay)
			continue
		}
		if attempt > 0 {
			a.log.Info("certificate renewal recovered", "failed_attempts", attempt)
		}
		attempt, retryAt = 0, time.Time{}
		a.setLastErr(nil)
	}
	return nil
}

// nextWake returns when the loop must look again: the retry time while backing off,
// otherwise the renewal time, and the expiry of the held certificate if sooner, so that
// an expiry is noticed (and reported) on time.
func (a *Agent) nextWake(now time.Time, cur *held, retryAt time.Time) time.Time {
	var next time.Time
	switch {
	case !retryAt.IsZero():
		next = retryAt
	case cur != nil:
		next = cur.renewAt
	default:
		return now
	}
	if cur != nil && !expired(now, cur.leaf()) && cur.leaf().NotAfter.Before(next) {
		next = cur.leaf().NotAfter
	}
	return next
}

func (a *Agent) sleep(ctx context.Context, now, until time.Time) {
	d := until.Sub(now)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// noteExpiry reports, once per certificate, that the held certificate has expired: the
// Source already refuses to serve it; this makes the state visible in the log and wakes
// every consumer (SDS streams, readiness waiters).
func (a *Agent) noteExpiry(now time.Time, cur *held) {
	if cur == nil || a.expiredNoted == cur || !expired(now, cur.leaf()) {
		return
	}
	a.expiredNoted = cur
	a.log.Error("workload certificate expired; it is no longer served until renewal succeeds",
		"spiffe_id", cur.svid.ID.String(), "not_after", cur.leaf().NotAfter, "last_error", errString(a.LastError()))
	a.src.set(nil)
}

// rotate obtains a new certificate and installs it. Every attempt that ends without a
// new certificate counts as a failure, wherever it failed (token file, CA, response), so
// that an agent stuck before reaching the CA shows on the failure counter too.
func (a *Agent) rotate(ctx context.Context, now time.Time, cur *held) (err error) {
	installed := false
	defer func() {
		if !installed && err != nil && ctx.Err() == nil {
			a.metricRotated(false)
		}
	}()
	key, err := pki.GenerateKey(a.cfg.KeyType)
	if err != nil {
		return err
	}
	var (
		id   spiffeid.ID
		cred credential
		via  = "certificate"
	)
	if cur != nil && !expired(now, cur.leaf()) && !a.useToken {
		// Renewal: the current certificate authenticates us; the CSR asks for the same ID.
		id = cur.svid.ID
		tc := tls.Certificate{PrivateKey: cur.svid.PrivateKey, Leaf: cur.leaf()}
		for _, c := range cur.svid.Certificates {
			tc.Certificate = append(tc.Certificate, c.Raw)
		}
		cred.cert = &tc
	} else {
		// One token attempt per refusal of the certificate: if the token fails too (it
		// has usually expired on a long-running workload), the next attempt goes back to
		// the certificate, which may be accepted again, instead of never trying it.
		a.useToken = false
		tok, err := a.readToken()
		if err != nil {
			return err
		}
		cred.token, via = tok, "bootstrap token"
	}
	csr, err := pki.CreateCSR(key, id)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	chain, err := a.ca.createCertificate(rctx, csr, a.cfg.CertTTL, cred)
	cancel()
	if err != nil {
		if errors.Is(err, ErrRejected) {
			if cred.token != "" {
				return fmt.Errorf("bootstrap with the token in %s: %w (put a fresh token there; it is read again on every attempt)", a.cfg.TokenFile, err)
			}
			// The CA no longer accepts our certificate (revoked, or a root it stopped
			// trusting): fall back to the bootstrap token on the next attempt.
			a.useToken = true
			return fmt.Errorf("renew with the current certificate: %w; next attempt uses the bootstrap token", err)
		}
		return err
	}
	received := a.cfg.Now()
	svid, bundle, err := parseCertChain(chain, key, received)
	if err != nil {
		return err
	}
	leaf := svid.Certificates[0]
	issued := leaf.NotBefore
	if received.After(issued) {
		issued = received
	}
	jitter := (a.rng.Float64()*2 - 1) * a.cfg.JitterRatio
	h := &held{svid: svid, bundle: bundle, issuedAt: issued, renewAt: renewAt(issued, leaf.NotAfter, a.cfg.GraceRatio, jitter)}
	// Never busy-loop on a certificate the CA made shorter than our backoff.
	if floor := received.Add(a.cfg.RetryInitial); h.renewAt.Before(floor) {
		h.renewAt = floor
	}
	if cur != nil && cur.svid.ID != svid.ID {
		a.log.Warn("CA issued a different identity than the previous certificate", "previous", cur.svid.ID.String(), "spiffe_id", svid.ID.String())
	}
	a.useToken = false
	// Files first, so that readiness (and the change notification) implies the files
	// are in place for workloads that wait for it before reading them.
	werr := a.writeOutput(h)
	a.src.set(h)
	installed = true
	a.metricRotated(true)
	if a.cfg.Metrics != nil {
		a.cfg.Metrics.CertsChanged(leaf, bundle.X509Authorities())
	}
	a.log.Info("workload certificate issued",
		"spiffe_id", svid.ID.String(), "serial", leaf.SerialNumber.Text(16), "via", via,
		"not_after", leaf.NotAfter, "renew_at", h.renewAt, "roots", len(bundle.X509Authorities()))
	if werr != nil {
		// The new certificate is good and is served; only the files are stale. Run
		// retries the write with backoff.
		a.outputStale = h
		return werr
	}
	a.outputStale = nil
	return nil
}

func (a *Agent) readToken() (string, error) {
	b, err := os.ReadFile(a.cfg.TokenFile)
	if err != nil {
		return "", fmt.Errorf("read bootstrap token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("bootstrap token file %s is empty", a.cfg.TokenFile)
	}
	return tok, nil
}

// writeOutput writes the certificate files for workloads that do their own TLS. The key
// goes first: a reader that sees the new chain then finds its key already in place.
func (a *Agent) writeOutput(h *held) error {
	dir := a.cfg.OutputDir
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("output directory %s: %w", dir, err)
	}
	keyPEM, err := pki.EncodeKeyPEM(h.svid.PrivateKey)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{KeyFile, keyPEM, 0o600},
		{CertChainFile, pki.EncodeCertsPEM(h.svid.Certificates...), 0o644},
		{RootCertFile, pki.EncodeCertsPEM(h.bundle.X509Authorities()...), 0o644},
	} {
		if err := pki.WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("output certificates: %w", err)
		}
	}
	return nil
}

// caPool is the pool that verifies the CA: the configured roots plus the current bundle.
func (a *Agent) caPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range a.cfg.CARoots {
		p.AddCert(c)
	}
	if cur := a.src.current(); cur != nil {
		for _, c := range cur.bundle.X509Authorities() {
			p.AddCert(c)
		}
	}
	return p
}

func (a *Agent) logFailure(err error, attempt int, delay time.Duration) {
	cur := a.src.current()
	serving := "nothing"
	if cur != nil && !expired(a.cfg.Now(), cur.leaf()) {
		serving = "current certificate until " + cur.leaf().NotAfter.UTC().Format(time.RFC3339)
	} else if cur != nil {
		serving = "nothing (certificate expired)"
	}
	a.log.Warn("certificate request failed; retrying", "attempt", attempt, "retry_in", delay.Round(time.Millisecond), "serving", serving, "error", err)
}

func (a *Agent) setLastErr(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastErr = err
}

func (a *Agent) metricRotated(ok bool) {
	if a.cfg.Metrics != nil {
		a.cfg.Metrics.CertRotated(ok)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
