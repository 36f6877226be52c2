package xds

import (
	"crypto/x509"

	"github.com/meshguard/meshguard/internal/identity"
)

// Observer is told what the server does, for the control plane's metrics
// (*metrics.ControlPlane implements it). It is called on stream goroutines and must not
// block.
type Observer interface {
	// SidecarConnected and SidecarDisconnected bracket an authenticated sidecar stream.
	SidecarConnected()
	SidecarDisconnected()
	// Pushed counts one response of type URL typ sent to a sidecar.
	Pushed(typ string)
	// NACKed counts a sidecar's rejection of the latest response of type typ.
	NACKed(typ string)
}

type nopObserver struct{}

func (nopObserver) SidecarConnected()    {}
func (nopObserver) SidecarDisconnected() {}
func (nopObserver) Pushed(string)        {}
func (nopObserver) NACKed(string)        {}

// Sidecar is one connected sidecar stream and the certificate it authenticated with.
type Sidecar struct {
	Conn      string
	NodeID    string
	Namespace string
	Workload  string
	Identity  identity.Identity
	// Cert is the verified leaf the stream was authenticated with; the stream ends when
	// it expires, so it is the sidecar's current certificate.
	Cert *x509.Certificate
}

// Sidecars returns the connected sidecars sorted by namespace/workload, then stream.
func (s *Server) Sidecars() []Sidecar {
	cs := s.snapshotConns()
	out := make([]Sidecar, 0, len(cs))
	for _, c := range cs {
		out = append(out, Sidecar{
			Conn: c.id, NodeID: c.nodeID, Namespace: c.workload.Namespace, Workload: c.workload.Name,
			Identity: c.caller, Cert: c.cert,
		})
	}
	return out
}
