package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshguard/meshguard/examples"
)

// Config configures Run.
type Config struct {
	// Stdout receives the walkthrough. Required.
	Stdout io.Writer
	// Once runs the walkthrough and returns; otherwise the mesh stays up until ctx ends.
	Once bool
	// WorkDir holds the data directory, the config directory, the token files, the logs
	// and the certificates. Empty means a new temporary directory, removed on return.
	WorkDir string
	// FixedPorts makes the demo try its documented ports first (control plane 15012,
	// apps 9081-9083, …) so that the addresses it prints are stable; tests turn it off
	// and get kernel-chosen ports.
	FixedPorts bool
	// PolicyTimeout bounds how long a check waits for a policy change to show in real
	// requests (default 5s; the push target is one second).
	PolicyTimeout time.Duration
	// Logger receives the components' logs. Nil means a text log at info level in
	// WorkDir/meshguard.log, whose path the demo prints.
	Logger *slog.Logger
	Now    func() time.Time
}

// totalSteps is the number of walkthrough steps after start-up.
const totalSteps = 5

// Run brings the mesh up, walks through the steps and, unless cfg.Once, keeps the mesh
// up until ctx ends. It returns a *StepsFailedError when a check did not behave as
// shown, an error when the mesh could not start, or ctx's end as nil (a clean Ctrl-C).
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Stdout == nil {
		return errors.New("demo: Config.Stdout is required")
	}
	if cfg.PolicyTimeout == 0 {
		cfg.PolicyTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.WorkDir == "" {
		dir, err := os.MkdirTemp("", "meshguard-demo-")
		if err != nil {
			return fmt.Errorf("demo: temporary directory: %w", err)
		}
		defer os.RemoveAll(dir)
		cfg.WorkDir = dir
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return fmt.Errorf("demo: work directory: %w", err)
	}
	if cfg.Logger == nil {
		f, err := os.OpenFile(filepath.Join(cfg.WorkDir, "meshguard.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("demo: log file: %w", err)
		}
		defer f.Close()
		cfg.Logger = slog.New(slog.NewTextHandler(f, nil))
	}
	rep := newReport(cfg.Stdout, totalSteps)
	rep.printf("meshguard demo: a zero-trust mesh on loopback — productpage → reviews → ratings\n")
	rep.printf("  work directory  %s\n", cfg.WorkDir)
	rep.printf("  component logs  %s\n", filepath.Join(cfg.WorkDir, "meshguard.log"))

	runCtx, stop := context.WithCancel(ctx)
	m := &mesh{cfg: cfg, rep: rep, errs: make(chan error, 16)}
	defer func() {
		stop()
		if werr := m.wait(); werr != nil && err == nil {
			err = werr
		}
	}()
	if err := m.start(runCtx); err != nil {
		rep.printf("✗ the mesh did not start: %v\n", err)
		return fmt.Errorf("demo: start the mesh: %w", err)
	}
	w := &walkthrough{m: m, rep: rep}
	for i, s := range w.steps() {
		if ctx.Err() != nil {
			return nil
		}
		rep.begin(i+1, s.title)
		s.run(runCtx)
		rep.end()
	}
	failed := rep.Failed()
	if cfg.Once {
		if len(failed) > 0 {
			rep.printf("\n✗ %d check(s) did not behave as shown\n", len(failed))
			return &StepsFailedError{Failed: failed}
		}
		rep.printf("\n✓ every step behaved as shown\n")
		return nil
	}
	m.printHowTo()
	select {
	case <-ctx.Done():
		rep.printf("\nstopping…\n")
	case err := <-m.errs:
		rep.printf("\n✗ a component stopped: %v\n", err)
		return fmt.Errorf("demo: %w", err)
	}
	if len(failed) > 0 {
		return &StepsFailedError{Failed: failed}
	}
	return nil
}

// mesh is everything the demo started.
type mesh struct {
	cfg  Config
	rep  *report
	cp   *controlPlane
	jwt  *issuer
	conf *configDir

	apps      map[string]*app
	inbound   map[string]string            // service → sidecar inbound address
	outbounds map[string]map[string]string // caller → target → local address
	certDirs  map[string]string
	sidecars  map[string]error // service → why its sidecar is not running (nil: running)
	accessLog string

	wg   sync.WaitGroup
	errs chan error
	mu   sync.Mutex
	runE []error
}

// goRun runs a component; an error while the demo is still running is reported on errs.
func (m *mesh) goRun(ctx context.Context, name string, run func(context.Context) error) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := run(ctx); err != nil && ctx.Err() == nil {
			err = fmt.Errorf("%s: %w", name, err)
			m.mu.Lock()
			m.runE = append(m.runE, err)
			m.mu.Unlock()
			select {
			case m.errs <- err:
			default:
			}
		}
	}()
}

// wait waits for every component to stop and returns the first error one had.
func (m *mesh) wait() error {
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	return errors.Join(m.runE...)
}

func (m *mesh) start(ctx context.Context) error {
	rep, cfg := m.rep, m.cfg
	rep.printf("\n[0/%d] starting the mesh\n", totalSteps)
	p := ports{fixed: cfg.FixedPorts}
	dataDir := filepath.Join(cfg.WorkDir, "data")
	confDir := filepath.Join(cfg.WorkDir, "config")
	for _, d := range []string{dataDir, confDir, filepath.Join(cfg.WorkDir, "tokens")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	m.conf = &configDir{dir: confDir, rep: rep}
	m.accessLog = filepath.Join(cfg.WorkDir, "access.log")

	// Addresses first: the registry and the apps need the sidecars' ports.
	m.inbound = map[string]string{}
	m.outbounds = map[string]map[string]string{}
	m.certDirs = map[string]string{}
	repl := []string{}
	for _, s := range services() {
		in, err := p.reserve(examples.RegistryPorts()[s.name])
		if err != nil {
			return err
		}
		m.inbound[s.name] = in
		_, port, _ := strings.Cut(in, ":")
		repl = append(repl, fmt.Sprintf("http: %d\n", examples.RegistryPorts()[s.name]), "http: "+port+"\n")
		m.outbounds[s.name] = map[string]string{}
		for _, t := range s.calls {
			out, err := p.reserve(outboundPort(s.name, t))
			if err != nil {
				return err
			}
			m.outbounds[s.name][t] = out
		}
		m.certDirs[s.name] = filepath.Join(cfg.WorkDir, "certs", s.name)
	}

	cpLis, err := p.listen(15012)
	if err != nil {
		return err
	}
	m.cp, err = newControlPlane(dataDir, confDir, cpLis, cfg.Logger, cfg.Now)
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	// The registry goes in before the control plane's first load.
	rep.info("the application's registry: a ServiceEntry and a WorkloadEntry per service (examples/%s)", examples.Registry)
	if err := m.conf.applyExample(ctx, examples.Registry, repl...); err != nil {
		return err
	}
	m.goRun(ctx, "control plane", m.cp.run)
	rep.check(true, "control plane: CA and config push on "+m.cp.addr, "trust domain "+m.cp.td+", root certificate "+m.cp.rootFile)

	jwtLis, err := p.listen(portOf(examples.JWKSAddr))
	if err != nil {
		return err
	}
	m.jwt, err = newIssuer(examples.Issuer, jwtLis, cfg.Now, cfg.Logger)
	if err != nil {
		jwtLis.Close()
		return err
	}
	m.goRun(ctx, "JWKS server", m.jwt.run)
	rep.check(true, "end-user token issuer: JWKS at "+m.jwt.JWKSURI(), "issuer "+examples.Issuer)

	m.apps = map[string]*app{}
	for _, s := range services() {
		lis, err := p.listen(s.appPort)
		if err != nil {
			return err
		}
		up := ""
		path := ""
		if s.upstream != "" {
			up = "http://" + m.outbounds[s.name][s.upstream]
			path = pathOf(s.upstream)
		}
		a := newApp(s.name, lis, up, path, cfg.Logger)
		m.apps[s.name] = a
		m.goRun(ctx, s.name+" app", a.run)
	}
	rep.check(true, "apps (plain HTTP, no mesh code): "+m.appList(), "")

	// The sidecars start together: each is ready once it holds a certificate and its
	// first configuration, which they fetch from the control plane independently.
	rep.info("starting a sidecar per service (agent: certificate from the CA; proxy: config pushed by the control plane)…")
	m.sidecars = map[string]error{}
	started := map[string]<-chan error{}
	for _, s := range services() {
		ready := make(chan error, 1)
		started[s.name] = ready
		go func() { ready <- m.startSidecar(ctx, s) }()
	}
	for _, s := range services() {
		m.sidecars[s.name] = <-started[s.name]
		detail := fmt.Sprintf("inbound %s, outbound %s", m.inbound[s.name], m.outboundList(s.name))
		if err := m.sidecars[s.name]; err != nil {
			rep.check(false, "sidecar of "+s.name, err.Error())
			continue
		}
		rep.check(true, "sidecar of "+s.name+" (service account "+s.name+")", detail)
	}
	return nil
}

// startSidecar starts s's sidecar and waits until it is ready.
func (m *mesh) startSidecar(ctx context.Context, s service) error {
	tok, err := m.cp.tokenFile(filepath.Join(m.cfg.WorkDir, "tokens"), s.name, m.cfg.Now())
	if err != nil {
		return err
	}
	spec := sidecarSpec{
		Workload: s.name + "-v1", Namespace: namespace, ServiceAccount: s.name,
		Labels:       map[string]string{"app": s.name, "version": "v1"},
		ControlPlane: m.cp.addr, CARootFile: m.cp.rootFile, TokenFile: tok,
		App: m.apps[s.name].Addr(), Inbound: m.inbound[s.name],
		CertDir: m.certDirs[s.name],
		Logger:  m.cfg.Logger.With("workload", s.name),
	}
	for _, t := range s.calls {
		spec.Outbound = append(spec.Outbound, outbound{Host: host(t), Port: servicePort, Listen: m.outbounds[s.name][t]})
	}
	sc, err := newSidecar(spec)
	if err != nil {
		return err
	}
	m.goRun(ctx, s.name+" sidecar", sc.Run)
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := sc.WaitUntilReady(wctx); err != nil {
		return fmt.Errorf("not ready: %w", err)
	}
	return nil
}

func (m *mesh) appList() string {
	var parts []string
	for _, s := range services() {
		parts = append(parts, s.name+" "+m.apps[s.name].Addr())
	}
	return strings.Join(parts, ", ")
}

func (m *mesh) outboundList(svc string) string {
	var parts []string
	for t, a := range m.outbounds[svc] {
		parts = append(parts, fmt.Sprintf("%s:%d=%s", host(t), servicePort, a))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// printHowTo is what the demo leaves on screen while it stays up.
func (m *mesh) printHowTo() {
	r := m.rep
	tokFile := filepath.Join(m.cfg.WorkDir, "alice.jwt")
	if tok, err := m.jwt.token("alice", 24*time.Hour, false); err == nil {
		_ = os.WriteFile(tokFile, []byte(tok), 0o600)
	}
	r.printf("\nThe mesh stays up. Try it:\n")
	r.printf("  # the application's front door (productpage → reviews → ratings), as the end user alice\n")
	r.printf("  curl -s http://%s/productpage -H \"Authorization: Bearer $(cat %s)\"\n", m.apps["productpage"].Addr(), tokFile)
	r.printf("  # be productpage's app calling reviews through its sidecar (mTLS, identity productpage)\n")
	r.printf("  curl -s http://%s/reviews/1 -H \"Authorization: Bearer $(cat %s)\"\n", m.outbounds["productpage"]["reviews"], tokFile)
	r.printf("  # be ratings calling reviews: reviews-access refuses it with 403\n")
	r.printf("  curl -si http://%s/reviews/1\n", m.outbounds["ratings"]["reviews"])
	r.printf("  # a plaintext client straight at reviews' sidecar: STRICT mTLS refuses it\n")
	r.printf("  curl -v http://%s/reviews/1\n", m.inbound["reviews"])
	r.printf("\nEdit the policies live — files in this directory are applied within a second, invalid ones refused:\n")
	r.printf("  %s\n", m.conf.dir)
	r.printf("  e.g. rm %s\n", filepath.Join(m.conf.dir, "authz-reviews-access.yaml"))
	r.printf("  and ratings may call reviews again — with a token, as reviews-require-jwt still asks:\n")
	r.printf("  curl -s http://%s/reviews/1 -H \"Authorization: Bearer $(cat %s)\"\n", m.outbounds["ratings"]["reviews"], tokFile)
	r.printf("Access log: %s   Component logs: %s\n", m.accessLog, filepath.Join(m.cfg.WorkDir, "meshguard.log"))
	r.printf("The same with separate processes, step by step: docs/tasks/run-sidecars.md\n")
	r.printf("Press Ctrl-C to stop.\n")
}

func portOf(addr string) uint16 {
	_, p, _ := strings.Cut(addr, ":")
	var n uint16
	fmt.Sscanf(p, "%d", &n)
	return n
}

func pathOf(svc string) string {
	for _, s := range services() {
		if s.name == svc {
			return s.path
		}
	}
	return "/"
}
