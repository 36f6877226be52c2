package demo

import (
	"context"
	"errors"
	"log/slog"
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

// meshSidecar is a configured sidecar: Run serves until ctx ends.
type meshSidecar interface {
	Run(ctx context.Context) error
	WaitUntilReady(ctx context.Context) error
}

// errNoSidecar is returned while the sidecar wiring (internal/sidecar) is not part of
// this build: the demo then reports every step that needs sidecars as failed.
var errNoSidecar = errors.New("the sidecar (internal/sidecar, `meshguard sidecar`) is not available in this build yet")

// newSidecar builds one sidecar from spec.
func newSidecar(spec sidecarSpec) (meshSidecar, error) {
	_ = spec
	return nil, errNoSidecar
}
