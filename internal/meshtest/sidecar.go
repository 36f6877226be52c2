package meshtest

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/proxy"
)

// Sidecar is a running proxy on loopback.
type Sidecar struct {
	Proxy *proxy.Proxy
	// Inbound is the inbound listener; Outbound the explicit outbound listeners in
	// SidecarOptions.Outbound order.
	Inbound  netip.AddrPort
	Outbound []netip.AddrPort
	// Stop ends Run (drain included) and returns its error; the test's cleanup calls
	// it too, so calling it is optional.
	Stop func() error
}

// SidecarOptions configure StartSidecar. Certs and Apps are required.
type SidecarOptions struct {
	Certs    proxy.CertSource
	Apps     []netip.AddrPort
	Outbound []proxy.ExplicitOutbound // Listen may be empty: 127.0.0.1:0 is used
	Policy   *proxy.Policy
	Observer proxy.Observer
	TLS      proxy.TLSSettings
	Drain    time.Duration
	Logger   *slog.Logger
	// DisableH2Upstream sends outbound HTTP/1.1 to peer sidecars over pooled HTTP/1.1
	// connections instead of HTTP/2 streams.
	DisableH2Upstream bool
	// H2ReadIdleTimeout and H2PingTimeout: proxy.Config's, zero for the defaults.
	H2ReadIdleTimeout, H2PingTimeout time.Duration
}

// StartSidecar builds a proxy with its inbound listener on 127.0.0.1:0, sets the
// policy, runs it and waits until it is ready. It stops when the test ends.
func StartSidecar(tb testing.TB, o SidecarOptions) *Sidecar {
	tb.Helper()
	outs := append([]proxy.ExplicitOutbound(nil), o.Outbound...)
	for i := range outs {
		if outs[i].Listen == "" {
			outs[i].Listen = "127.0.0.1:0"
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	p, err := proxy.New(proxy.Config{
		Certs: o.Certs, Apps: o.Apps, InboundAddr: "127.0.0.1:0", Outbound: outs,
		TLS: o.TLS, Observer: o.Observer, Logger: o.Logger, DrainTimeout: o.Drain, DisableH2Upstream: o.DisableH2Upstream,
		H2ReadIdleTimeout: o.H2ReadIdleTimeout, H2PingTimeout: o.H2PingTimeout,
	})
	if err != nil {
		tb.Fatalf("proxy.New: %v", err)
	}
	if o.Policy != nil {
		if err := p.SetPolicy(o.Policy); err != nil {
			tb.Fatalf("SetPolicy: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var runErr error
	stopped := false
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				tb.Errorf("sidecar did not stop within 30s")
			}
		}
		return runErr
	}
	tb.Cleanup(func() { stop() }) //nolint:errcheck // reported by the test when it cares
	select {
	case <-p.Ready():
	case err := <-done:
		tb.Fatalf("sidecar stopped before ready: %v", err)
	case <-time.After(10 * time.Second):
		tb.Fatalf("sidecar not ready within 10s")
	}
	s := &Sidecar{Proxy: p, Inbound: p.InboundAddr().(*net.TCPAddr).AddrPort(), Stop: stop}
	for _, a := range p.ExplicitAddrs() {
		s.Outbound = append(s.Outbound, a.(*net.TCPAddr).AddrPort())
	}
	return s
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.tb.Helper()
	w.tb.Logf("%s", b)
	return len(b), nil
}
