package cli

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/memtrim"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/proxy"
	"github.com/meshguard/meshguard/internal/redirect"
	"github.com/meshguard/meshguard/internal/sidecar"
)

// sidecarOptions are `meshguard sidecar`'s flags as typed.
type sidecarOptions struct {
	agentFlags
	workload, namespace, serviceAccount string
	labels                              string
	apps                                []string
	inboundPort, outboundPort           uint16
	outbound                            []string
	configDir, admin                    string
	keyType                             string
	certTTL, drainTimeout               time.Duration
	h2Upstream                          bool
	gcPercent                           int
	memoryLimit                         string
	trimAfter                           time.Duration
	outboundPortSet                     bool
}

func newSidecarCmd(env *cmdenv.Env) *cobra.Command {
	o := &sidecarOptions{}
	c := &cobra.Command{
		Use:   "sidecar",
		Short: "Run the workload's agent and proxy: mTLS, peer authentication, authorization, JWT, access log, metrics",
		Long: `sidecar runs beside one workload: the agent obtains and rotates the workload
certificate from the control plane's CA (bootstrap token first, then mTLS renewals), and
the proxy carries the workload's traffic.

Inbound (--inbound-port, all addresses): PeerAuthentication STRICT accepts only mTLS
from the mesh, PERMISSIVE also plaintext (sniffed), DISABLE plaintext and passes any
TLS through untouched; then RequestAuthentication (JWT), AuthorizationPolicy, and the
app on loopback (--app; with several apps the port comes from the captured original
destination, the mTLS SNI, or a plaintext request's Host header).

Outbound: explicit listeners (--outbound HOST:PORT=LOCAL_PORT; the app calls
127.0.0.1:LOCAL_PORT) and, when no --outbound is given or --outbound-port is set, the
transparent listener for traffic 'meshguard init' redirects (SO_ORIGINAL_DST).
DestinationRule TLS per host: ISTIO_MUTUAL (mesh certificate, secure naming), MUTUAL,
SIMPLE, DISABLE.

Configuration comes from --config-dir (Istio YAML, watched) or, without it, is pushed by
the control plane at --controlplane. MeshConfig's accessLogFile/Format/Encoding and
meshMTLS apply on every change. --admin serves /healthz/ready, /metrics (Istio's
standard metrics) and /debug/connections.

Signals: SIGTERM/SIGINT stop accepting, let open connections finish for
--drain-timeout, then close the rest; SIGHUP reopens the access-log file.`,
		Example: `  # explicit mode: the app calls 127.0.0.1:19080 to reach reviews over mTLS
  meshguard sidecar --controlplane 127.0.0.1:15012 --ca-root root-cert.pem --token-file web.token \
      --workload productpage-v1 --namespace default --service-account productpage \
      --labels app=productpage,version=v1 --app 127.0.0.1:9080 \
      --outbound reviews.default.svc.cluster.local:9080=19080 --admin 127.0.0.1:15020

  # transparent mode after 'meshguard init', configuration from a directory
  meshguard sidecar --controlplane 10.0.0.5:15012 --ca-root root.pem --token-file tok \
      --workload reviews-v1 --namespace default --app 127.0.0.1:9080 --config-dir ./mesh`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.trimAfter > 0 {
				// Package initialisers touched pages all over the binary before main
				// ran; drop them first thing, so that start-up's own work is not added
				// on top of them in the recorded peak.
				if _, err := memtrim.Trim(); err != nil {
					env.Logger.Warn("memory trim failed", "err", err)
				}
			}
			o.outboundPortSet = cmd.Flags().Changed("outbound-port")
			pc, err := o.toConfig(env)
			if err != nil {
				return err
			}
			if err := sidecar.SetRuntimeDefaults(o.gcPercent, o.memoryLimit, cmd.Flags().Changed("gc-percent"), cmd.Flags().Changed("memory-limit")); err != nil {
				return err
			}
			if o.trimAfter > 0 {
				// Building the components, loading the configuration and the first CSR
				// (gRPC, TLS, x509) each run code the next does not need: release it
				// between them, so that start-up's peak is one stage's pages rather than
				// all of them. Not once the configuration is applied: the first requests
				// follow at once and would only fault the pages back. Once more after
				// --trim-memory-after for whatever those requests touched once.
				pc.Sidecar.StartupStage = func(s sidecar.Stage) {
					if s == sidecar.StageApplied || s == sidecar.StageListening {
						return
					}
					if _, err := memtrim.ReleaseExecutable(); err != nil {
						env.Logger.Warn("memory release failed", "stage", string(s), "err", err)
					}
				}
				go memtrim.After(cmd.Context(), o.trimAfter, env.Logger)
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			reopen := make(chan struct{}, 1)
			go func() {
				for range hup {
					select {
					case reopen <- struct{}{}:
					default:
					}
				}
			}()
			pc.Sidecar.Reopen = reopen
			if err := sidecar.RunProcess(cmd.Context(), pc); err != nil {
				return cmdenv.Exit(1, err)
			}
			return nil
		},
	}
	f := c.Flags()
	o.agentFlags.add(f, "CA and config push")
	f.StringVar(&o.workload, "workload", "", "workload name (required)")
	f.StringVar(&o.namespace, "namespace", "", "workload namespace (required)")
	f.StringVar(&o.serviceAccount, "service-account", "default", "workload service account")
	f.StringVar(&o.labels, "labels", "", "workload labels, k=v,k=v (select policies; app and version label metrics)")
	f.StringSliceVar(&o.apps, "app", nil, "the app on loopback, 127.0.0.1:PORT; repeat or comma-separate for several ports (required)")
	f.Uint16Var(&o.inboundPort, "inbound-port", 15006, "inbound listener port (all addresses)")
	f.Uint16Var(&o.outboundPort, "outbound-port", 15001, "transparent outbound listener port (bound when set, or when no --outbound is given)")
	f.StringArrayVar(&o.outbound, "outbound", nil, "explicit outbound HOST:PORT=LOCAL_PORT: the app calls 127.0.0.1:LOCAL_PORT to reach HOST:PORT; repeatable")
	f.StringVar(&o.configDir, "config-dir", "", "read Istio YAML from this directory (watched) instead of the control plane's push")
	f.StringVar(&o.admin, "admin", "127.0.0.1:15020", "admin address for /healthz/ready, /metrics and /debug/connections; empty disables")
	f.DurationVar(&o.drainTimeout, "drain-timeout", 5*time.Second, "on SIGTERM, how long open connections may finish before they are closed")
	f.BoolVar(&o.h2Upstream, "h2-upstream", true, "multiplex HTTP/1.1 between meshguard sidecars as HTTP/2 streams on a few pooled connections (the server sidecar converts back to HTTP/1.1 toward the app); false: pooled HTTP/1.1 connections")
	f.IntVar(&o.gcPercent, "gc-percent", sidecar.DefaultGCPercent, "Go GC target percentage (GOGC in the environment takes precedence unless this flag is given)")
	f.StringVar(&o.memoryLimit, "memory-limit", sidecar.DefaultMemoryLimit, "Go soft memory limit, e.g. 64MiB; 0 for none (GOMEMLIMIT takes precedence unless this flag is given)")
	f.DurationVar(&o.trimAfter, "trim-memory-after", 10*time.Second, "after this long, release the binary's start-up pages and free heap to lower resident memory; 0 disables")
	return c
}

// toConfig checks the flags and builds the sidecar's configuration, naming the flag in
// every error.
func (o *sidecarOptions) toConfig(env *cmdenv.Env) (sidecar.ProcessConfig, error) {
	var zero sidecar.ProcessConfig
	acfg, err := o.agentFlags.config(env.Logger)
	if err != nil {
		return zero, err
	}
	for _, req := range []struct{ flag, val string }{
		{"--workload", o.workload}, {"--namespace", o.namespace},
	} {
		if req.val == "" {
			return zero, fmt.Errorf("%s is required", req.flag)
		}
	}
	if len(o.apps) == 0 {
		return zero, fmt.Errorf("--app is required")
	}
	labels, err := parseLabels(o.labels)
	if err != nil {
		return zero, fmt.Errorf("--labels: %w", err)
	}
	var apps []netip.AddrPort
	for _, a := range o.apps {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(a))
		if err != nil || ap.Port() == 0 {
			return zero, fmt.Errorf("--app %q: want IP:PORT, e.g. 127.0.0.1:8080", a)
		}
		apps = append(apps, ap)
	}
	var outs []proxy.ExplicitOutbound
	for _, s := range o.outbound {
		out, err := parseOutbound(s)
		if err != nil {
			return zero, fmt.Errorf("--outbound %q: %w", s, err)
		}
		outs = append(outs, out)
	}
	if o.drainTimeout < 0 {
		return zero, fmt.Errorf("--drain-timeout %s: want 0 or more", o.drainTimeout)
	}
	pcfg := proxy.Config{
		Apps:              apps,
		InboundAddr:       net.JoinHostPort("0.0.0.0", strconv.Itoa(int(o.inboundPort))),
		Outbound:          outs,
		OriginalDst:       redirect.OriginalDst,
		DrainTimeout:      o.drainTimeout,
		DisableH2Upstream: !o.h2Upstream,
	}
	if o.drainTimeout == 0 {
		pcfg.DrainTimeout = time.Nanosecond // close at once; proxy's zero means its default
	}
	if len(outs) == 0 || o.outboundPortSet {
		pcfg.OutboundAddr = net.JoinHostPort("0.0.0.0", strconv.Itoa(int(o.outboundPort)))
	}
	return sidecar.ProcessConfig{
		Sidecar: sidecar.Config{
			Workload:  policy.Workload{Namespace: o.namespace, Name: o.workload, ServiceAccount: o.serviceAccount, Labels: labels},
			Proxy:     pcfg,
			AdminAddr: o.admin,
			Logger:    env.Logger,
			// The access log to /dev/stdout goes where the command prints.
			AccessLogStdout: env.Stdout,
		},
		Agent:     acfg,
		ConfigDir: o.configDir,
	}, nil
}

// parseLabels reads k=v,k=v.
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

// parseOutbound reads HOST:PORT=LOCAL_PORT (LOCAL may also be IP:PORT).
func parseOutbound(s string) (proxy.ExplicitOutbound, error) {
	var zero proxy.ExplicitOutbound
	dst, local, ok := strings.Cut(s, "=")
	if !ok {
		return zero, fmt.Errorf("want HOST:PORT=LOCAL_PORT")
	}
	host, ps, err := net.SplitHostPort(dst)
	if err != nil || host == "" {
		return zero, fmt.Errorf("destination %q: want HOST:PORT", dst)
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return zero, fmt.Errorf("destination port %q: want 1-65535", ps)
	}
	listen := local
	if n, err := strconv.ParseUint(local, 10, 16); err == nil {
		if n == 0 {
			return zero, fmt.Errorf("local port 0: want 1-65535")
		}
		listen = net.JoinHostPort("127.0.0.1", local)
	} else if _, err := netip.ParseAddrPort(local); err != nil {
		return zero, fmt.Errorf("local %q: want a port or IP:PORT", local)
	}
	return proxy.ExplicitOutbound{Host: host, Port: uint32(port), Listen: listen}, nil
}
