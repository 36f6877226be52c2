package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ControlPlane holds the control plane's collectors. Create it with NewControlPlane.
type ControlPlane struct {
	issued       prometheus.Counter
	refused      *prometheus.CounterVec
	sidecars     prometheus.Gauge
	pushes       *prometheus.CounterVec
	nacks        *prometheus.CounterVec
	configErrors *prometheus.CounterVec
	// Certs reports the CA's roots, intermediate and serving certificate expiry.
	Certs *CertExpiry
}

// Reasons a CSR is refused, the "reason" label of
// meshguard_ca_certificates_refused_total. Callers may use others, but keep the set
// small and fixed.
const (
	RefusedAuthentication = "authentication" // no or bad credential
	RefusedCSRInvalid     = "csr_invalid"    // unparsable CSR or bad signature
	RefusedIdentity       = "identity"       // CSR asks for an identity the caller is not
	RefusedTTL            = "ttl"            // requested lifetime over the maximum
	RefusedSigning        = "signing"        // CA failed to sign
)

// NewControlPlane creates the control-plane collectors and registers them on reg. now is
// the clock for certificate expiry (nil means time.Now).
func NewControlPlane(reg prometheus.Registerer, now func() time.Time) (*ControlPlane, error) {
	cp := &ControlPlane{
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_ca_certificates_issued_total", Help: "Workload certificates the CA issued.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_ca_certificates_refused_total", Help: "Certificate requests the CA refused, by reason.",
		}, []string{"reason"}),
		sidecars: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshguard_xds_connected_sidecars", Help: "Sidecars with an open policy stream.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_xds_pushes_total", Help: "Policy pushes sent to sidecars, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_xds_nacks_total", Help: "Pushes sidecars rejected (NACK), by resource type.",
		}, []string{"type"}),
		configErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_config_errors_total", Help: "Configuration objects rejected by validation, by kind.",
		}, []string{"kind"}),
		Certs: NewCertExpiry("meshguard_ca_cert", "the CA's certificates", now),
	}
	for _, c := range []prometheus.Collector{cp.issued, cp.refused, cp.sidecars, cp.pushes, cp.nacks, cp.configErrors, cp.Certs} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register control plane metrics: %w", err)
		}
	}
	for _, r := range []string{RefusedAuthentication, RefusedCSRInvalid, RefusedIdentity, RefusedTTL, RefusedSigning} {
		cp.refused.WithLabelValues(r)
	}
	return cp, nil
}

// CertIssued counts an issued certificate.
func (cp *ControlPlane) CertIssued() { cp.issued.Inc() }

// CertRefused counts a refused certificate request.
func (cp *ControlPlane) CertRefused(reason string) { cp.refused.WithLabelValues(reason).Inc() }

// SidecarConnected and SidecarDisconnected track open policy streams.
func (cp *ControlPlane) SidecarConnected() { cp.sidecars.Inc() }

// SidecarDisconnected: see SidecarConnected.
func (cp *ControlPlane) SidecarDisconnected() { cp.sidecars.Dec() }

// Pushed counts a push of resource type typ (a type URL or Istio kind).
func (cp *ControlPlane) Pushed(typ string) { cp.pushes.WithLabelValues(typ).Inc() }

// NACKed counts a push of type typ that a sidecar rejected.
func (cp *ControlPlane) NACKed(typ string) { cp.nacks.WithLabelValues(typ).Inc() }

// ConfigRejected counts a configuration object of kind (e.g. "AuthorizationPolicy")
// that failed validation.
func (cp *ControlPlane) ConfigRejected(kind string) { cp.configErrors.WithLabelValues(kind).Inc() }
