package demo

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/meshguard/meshguard/internal/agent"
	"github.com/meshguard/meshguard/internal/pki"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/proxy"
	"github.com/meshguard/meshguard/internal/sidecar"
)

// sidecarSpec is what the demo asks of one workload's sidecar: the same settings as
// `meshguard sidecar`'s flags.
type sidecarSpec struct {
	Workload, Namespace, ServiceAccount string
	Labels                              map[string]string
	ControlPlane                        string // HOST:PORT of the CA and config push
	CARootFile, TokenFile               string
	App                                 string // the app on loopback
	Inbound                             string // inbound listener address
	Outbound                            []outbound
	// CertDir receives cert-chain.pem, key.pem and root-cert.pem on every rotation (the
	// agent's output directory); step 1 reads the certificate from there.
	CertDir string
	Logger  *slog.Logger
}

type outbound struct {
	Host   string // e.g. reviews.default.svc.cluster.local
	Port   uint32 // the service port
	Listen string // 127.0.0.1:PORT the app calls
}

// demoSidecar is `meshguard sidecar` in-process: sidecar.RunProcess with the settings
// the command would build from its flags, so the demo runs the command's wiring.
type demoSidecar struct {
	pc    sidecar.ProcessConfig
	admin chan string   // the admin address, once it listens
	done  chan struct{} // closed when Run returns
	err   error         // Run's error, set before done closes
}

// processConfig turns spec into what `meshguard sidecar` passes to sidecar.RunProcess.
func (spec sidecarSpec) processConfig() (sidecar.ProcessConfig, error) {
	var zero sidecar.ProcessConfig
	rootPEM, err := os.ReadFile(spec.CARootFile)
	if err != nil {
		return zero, fmt.Errorf("read CA root: %w", err)
	}
	roots, err := pki.ParseCertsPEM(rootPEM)
	if err != nil {
		return zero, fmt.Errorf("CA root %s: %w", spec.CARootFile, err)
	}
	app, err := netip.ParseAddrPort(spec.App)
	if err != nil {
		return zero, fmt.Errorf("app address %q: %w", spec.App, err)
	}
	// A short drain: Ctrl-C should stop the demo promptly, and its requests are short.
	pc := proxy.Config{Apps: []netip.AddrPort{app}, InboundAddr: spec.Inbound, DrainTimeout: time.Second}
	for _, o := range spec.Outbound {
		pc.Outbound = append(pc.Outbound, proxy.ExplicitOutbound{Host: o.Host, Port: o.Port, Listen: o.Listen})
	}
	return sidecar.ProcessConfig{
		Sidecar: sidecar.Config{
			Workload: policy.Workload{Namespace: spec.Namespace, Name: spec.Workload, ServiceAccount: spec.ServiceAccount, Labels: spec.Labels},
			Proxy:    pc,
			// The admin listener is how the demo sees readiness; the kernel picks its port.
			AdminAddr:  "127.0.0.1:0",
			HTTPClient: &http.Client{Timeout: 5 * time.Second},
			Logger:     spec.Logger,
		},
		Agent: agent.Config{
			ControlPlane: spec.ControlPlane, CARoots: roots, TokenFile: spec.TokenFile,
			OutputDir: spec.CertDir, Logger: spec.Logger,
		},
	}, nil
}

// newSidecar builds one sidecar from spec; Run starts it.
func newSidecar(spec sidecarSpec) (*demoSidecar, error) {
	pc, err := spec.processConfig()
	if err != nil {
		return nil, err
	}
	d := &demoSidecar{pc: pc, admin: make(chan string, 1), done: make(chan struct{})}
	d.pc.Sidecar.AdminListening = func(a net.Addr) { d.admin <- a.String() }
	return d, nil
}

func (d *demoSidecar) Run(ctx context.Context) error {
	defer close(d.done)
	d.err = sidecar.RunProcess(ctx, d.pc)
	return d.err
}

// WaitUntilReady polls the sidecar's /healthz/ready: listening, with a certificate and
// its first configuration applied.
func (d *demoSidecar) WaitUntilReady(ctx context.Context) error {
	var admin string
	select {
	case admin = <-d.admin:
	case <-d.done:
		return fmt.Errorf("sidecar stopped: %w", d.err)
	case <-ctx.Done():
		return fmt.Errorf("%w (the admin listener never started)", ctx.Err())
	}
	url := "http://" + admin + "/healthz/ready"
	var last string
	for {
		r := get(ctx, url)
		if r.err == nil && r.status == http.StatusOK {
			return nil
		}
		last = r.String()
		select {
		case <-d.done:
			return fmt.Errorf("sidecar stopped: %w", d.err)
		case <-ctx.Done():
			return fmt.Errorf("%w (last readiness answer: %s)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
