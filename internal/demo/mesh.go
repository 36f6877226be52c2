package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/meshguard/meshguard/examples"
	"github.com/meshguard/meshguard/internal/authn/bootstrap"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/controlplane"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/pki"
)

const (
	namespace   = "default"
	servicePort = 9080
	// tokenTTL is the bootstrap tokens' life: long enough for the sidecars' first
	// certificate; renewals authenticate with the certificate itself.
	tokenTTL = time.Hour
)

// service is one service of the application as the demo lays it out: its preferred
// ports (used when free, so the addresses it prints stay the same from run to run) and
// whom it calls.
type service struct {
	name     string
	appPort  uint16
	calls    []string // services it reaches through its sidecar's explicit outbound
	upstream string   // the service its app calls
	path     string   // the path it serves; the upstream's path is called
}

func services() []service {
	return []service{
		{name: "productpage", appPort: 9081, calls: []string{"reviews"}, upstream: "reviews", path: "/productpage"},
		{name: "reviews", appPort: 9082, calls: []string{"ratings"}, upstream: "ratings", path: "/reviews/1"},
		// ratings calls no one in bookinfo; its outbound to reviews is how the demo
		// plays a caller that reviews-access must refuse.
		{name: "ratings", appPort: 9083, calls: []string{"reviews"}, path: "/ratings/1"},
	}
}

func host(svc string) string { return svc + "." + namespace + ".svc.cluster.local" }

// outboundPort is the preferred local port on svc's sidecar for calling target:
// 15x90 where x is svc's position, plus the target's position.
func outboundPort(svc, target string) uint16 {
	idx := map[string]uint16{"productpage": 1, "reviews": 2, "ratings": 3}
	return 15000 + idx[svc]*100 + 90 + idx[target]
}

// ports hands out loopback addresses: the preferred port when it is free (and
// Config.FixedPorts allows), else one the kernel picks.
type ports struct{ fixed bool }

// listen binds 127.0.0.1:preferred, or 127.0.0.1:0.
func (p ports) listen(preferred uint16) (net.Listener, error) {
	if p.fixed && preferred != 0 {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", preferred)); err == nil {
			return l, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on loopback: %w", err)
	}
	return l, nil
}

// reserve finds a free address for a component that binds its own listener (the
// sidecars). Another process could take it in between; the sidecar then fails to start
// with a clear error and the demo reports it.
func (p ports) reserve(preferred uint16) (string, error) {
	l, err := p.listen(preferred)
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// configDir is the control plane's watched directory. apply validates a file together
// with what is already there (the `ctl validate` code path), then writes it atomically so
// the watcher never sees half a file.
type configDir struct {
	dir string
	rep *report
}

func (c *configDir) apply(ctx context.Context, name string, data []byte) error {
	files, err := config.ReadFiles(ctx, c.dir)
	if err != nil {
		return err
	}
	path := filepath.Join(c.dir, name)
	kept := files[:0]
	for _, f := range files {
		if f.Name != path {
			kept = append(kept, f)
		}
	}
	kept = append(kept, config.File{Name: path, Data: data})
	var l config.Loader
	if _, _, err := l.LoadFiles(ctx, kept...); err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				c.rep.info("invalid: %s", p)
			}
		}
		return fmt.Errorf("apply %s: %w", name, err)
	}
	if err := pki.WriteFileAtomic(path, data, 0o644); err != nil {
		return fmt.Errorf("apply %s: %w", name, err)
	}
	c.rep.info("applied %s", strings.TrimPrefix(path, c.dir+string(os.PathSeparator)))
	return nil
}

// applyExample applies an example file under a flat name, after replacing the values
// the demo had to change (ports, URLs) — each replacement is printed.
func (c *configDir) applyExample(ctx context.Context, example string, repl ...string) error {
	data, err := examples.Read(example)
	if err != nil {
		return err
	}
	s := string(data)
	for i := 0; i+1 < len(repl); i += 2 {
		if repl[i] == repl[i+1] {
			continue
		}
		if !strings.Contains(s, repl[i]) {
			return fmt.Errorf("apply %s: %q not found in the example", example, repl[i])
		}
		s = strings.ReplaceAll(s, repl[i], repl[i+1])
		c.rep.info("%s: %s → %s", example, repl[i], repl[i+1])
	}
	if example != examples.Registry { // the registry is long and not a scenario
		c.rep.info("examples/%s:", example)
		for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
			if !strings.HasPrefix(line, "#") {
				c.rep.info("  | %s", line)
			}
		}
	}
	return c.apply(ctx, strings.ReplaceAll(example, "/", "-"), []byte(s))
}

// controlPlane is the running control plane as the demo uses it.
type controlPlane struct {
	addr     string
	rootFile string
	dataDir  string
	td       string
	run      func(ctx context.Context) error
}

func newControlPlane(dataDir, configDir string, lis net.Listener, log *slog.Logger, now func() time.Time) (*controlPlane, error) {
	push, err := controlplane.NewPush(controlplane.PushConfig{ConfigDir: configDir, Logger: log, Now: now})
	if err != nil {
		lis.Close()
		return nil, err
	}
	cp, err := controlplane.New(controlplane.Config{
		DataDir: dataDir, Listener: lis, Logger: log, Now: now,
		Register: []func(*grpc.Server){push.Register},
	})
	if err != nil {
		return nil, err
	}
	return &controlPlane{
		addr: lis.Addr().String(), rootFile: cp.RootCertPath(), dataDir: dataDir,
		td:  controlplane.DefaultTrustDomain,
		run: func(ctx context.Context) error { return controlplane.Serve(ctx, cp, push) },
	}, nil
}

// tokenFile mints a bootstrap token for sa, as `meshguard ctl token create` does, and
// writes it 0600 where the sidecar reads it.
func (cp *controlPlane) tokenFile(dir, sa string, now time.Time) (string, error) {
	key, err := bootstrap.LoadOrCreateKey(cp.dataDir)
	if err != nil {
		return "", err
	}
	id := identity.Identity{TrustDomain: cp.td, Namespace: namespace, ServiceAccount: sa}
	tok, err := bootstrap.Mint(key, id, tokenTTL, now)
	if err != nil {
		return "", fmt.Errorf("mint bootstrap token for %s: %w", id, err)
	}
	path := filepath.Join(dir, sa+".token")
	if err := pki.WriteFileAtomic(path, []byte(tok), 0o600); err != nil {
		return "", fmt.Errorf("write bootstrap token: %w", err)
	}
	return path, nil
}
