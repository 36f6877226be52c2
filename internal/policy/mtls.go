package policy

import (
	"fmt"

	security "istio.io/api/security/v1beta1"

	"github.com/meshguard/meshguard/internal/config"
)

// MTLSMode is an effective PeerAuthentication mode (never UNSET: that inherits).
type MTLSMode int

// The modes. Permissive is the zero value because it is Istio's default.
const (
	MTLSPermissive MTLSMode = iota
	MTLSStrict
	MTLSDisable
)

func (m MTLSMode) String() string {
	switch m {
	case MTLSPermissive:
		return "PERMISSIVE"
	case MTLSStrict:
		return "STRICT"
	case MTLSDisable:
		return "DISABLE"
	}
	return fmt.Sprintf("MTLSMode(%d)", int(m))
}

// MTLS is the effective inbound mTLS setting of a workload.
type MTLS struct {
	// Mode applies to every port not in PerPort.
	Mode MTLSMode
	// PerPort holds the workload policy's portLevelMtls, keyed by the workload's
	// (container) port; UNSET entries inherit Mode.
	PerPort map[uint32]MTLSMode
	// Mesh, Namespace and Workload name the policies ("namespace/name") considered at
	// each level, "" when there was none — the answer to "why is this port STRICT".
	Mesh, Namespace, Workload string
}

// ForPort returns the mode for an inbound port.
func (m MTLS) ForPort(port uint32) MTLSMode {
	if pm, ok := m.PerPort[port]; ok {
		return pm
	}
	return m.Mode
}

// PeerAuthentication resolves w's effective mTLS with Istio's precedence: the mesh-wide
// policy (root namespace, no selector), then the namespace policy (no selector), then the
// workload policy (selector matching w, not in the root namespace), each overriding the
// previous unless its mode is UNSET; portLevelMtls comes from the workload policy only.
// With nothing set the mode is PERMISSIVE. Selector policies in the root namespace are
// ignored, as in Istio. When two policies compete at one level, Istio keeps the oldest
// (creation time, then name, then namespace: config.Meta.Older).
func (ix *Index) PeerAuthentication(w Workload) MTLS {
	var meshO, nsO, wlO *config.Object
	older := func(cur, o *config.Object) bool { return cur == nil || o.Older(&cur.Meta) }
	for _, o := range ix.peer.forWorkload(ix.rootNS, w) {
		sp := o.PeerAuthentication()
		switch {
		case len(sp.GetSelector().GetMatchLabels()) == 0 && o.Namespace == ix.rootNS:
			if older(meshO, o) {
				meshO = o
			}
		case len(sp.GetSelector().GetMatchLabels()) == 0:
			if older(nsO, o) {
				nsO = o
			}
		case o.Namespace != ix.rootNS:
			if older(wlO, o) {
				wlO = o
			}
		}
	}
	out := MTLS{Mode: MTLSPermissive}
	for _, lvl := range []struct {
		o    *config.Object
		name *string
	}{{meshO, &out.Mesh}, {nsO, &out.Namespace}, {wlO, &out.Workload}} {
		if lvl.o == nil {
			continue
		}
		*lvl.name = lvl.o.Key()
		if m, ok := modeOf(lvl.o.PeerAuthentication().GetMtls()); ok {
			out.Mode = m
		}
	}
	if wlO != nil {
		for port, pm := range wlO.PeerAuthentication().GetPortLevelMtls() {
			if out.PerPort == nil {
				out.PerPort = map[uint32]MTLSMode{}
			}
			if m, ok := modeOf(pm); ok {
				out.PerPort[port] = m
			} else {
				out.PerPort[port] = out.Mode
			}
		}
	}
	return out
}

func modeOf(m *security.PeerAuthentication_MutualTLS) (MTLSMode, bool) {
	switch m.GetMode() {
	case security.PeerAuthentication_MutualTLS_STRICT:
		return MTLSStrict, true
	case security.PeerAuthentication_MutualTLS_PERMISSIVE:
		return MTLSPermissive, true
	case security.PeerAuthentication_MutualTLS_DISABLE:
		return MTLSDisable, true
	}
	return 0, false
}
