package agent

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/internal/metrics"
)

// Metrics receives what the agent reports. NewMetrics gives the standalone agent's
// collectors; SidecarMetrics adapts the sidecar's shared ones.
type Metrics interface {
	// CertRotated counts one attempt to obtain a certificate (bootstrap or renewal): ok is
	// whether a usable certificate was installed. Attempts that fail before reaching the
	// CA (an unreadable token file) count as failures too.
	CertRotated(ok bool)
	// CertsChanged reports the certificate now served and the trust bundle.
	CertsChanged(leaf *x509.Certificate, roots []*x509.Certificate)
}

// Names under which certificates appear in the expiry metrics' "cert" label.
const (
	metricWorkloadCert = "workload"
	metricRootPrefix   = "root"
)

// promMetrics is the standalone agent's Metrics on a Prometheus registry.
type promMetrics struct {
	expiry    *metrics.CertExpiry
	rotations *prometheus.CounterVec
}

// NewMetrics registers the agent's collectors on reg: the shared certificate-expiry
// gauges meshguard_cert_expiry_timestamp_seconds and meshguard_cert_expiry_remaining_seconds
// (computed at scrape time with now; negative once expired) for the workload certificate
// and each root, and meshguard_cert_rotations_total{result="success"|"failure"}, the same
// names the sidecar uses. now nil means time.Now.
func NewMetrics(reg prometheus.Registerer, now func() time.Time) (Metrics, error) {
	m := &promMetrics{
		expiry: metrics.NewCertExpiry("meshguard_cert", "the workload certificate and trust bundle roots the agent holds", now),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_cert_rotations_total",
			Help: "Attempts to obtain a workload certificate (bootstrap or renewal), by result (success, failure).",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.expiry, m.rotations} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register agent metrics: %w", err)
		}
	}
	// Expose both results from the start so that rate() and alerts work before the
	// first failure.
	m.rotations.WithLabelValues("success")
	m.rotations.WithLabelValues("failure")
	return m, nil
}

func (m *promMetrics) CertRotated(ok bool) {
	if ok {
		m.rotations.WithLabelValues("success").Inc()
	} else {
		m.rotations.WithLabelValues("failure").Inc()
	}
}

func (m *promMetrics) CertsChanged(leaf *x509.Certificate, roots []*x509.Certificate) {
	setCerts(m.expiry, leaf, roots)
}

func setCerts(e *metrics.CertExpiry, leaf *x509.Certificate, roots []*x509.Certificate) {
	e.Set(metricWorkloadCert, metrics.RoleWorkload, leaf)
	e.SetBundle(metricRootPrefix, metrics.RoleRoot, roots)
}

// SidecarMetrics reports into the sidecar's shared collectors, so an agent embedded in
// the sidecar does not register a second set.
func SidecarMetrics(s *metrics.Sidecar) Metrics { return sidecarMetrics{s} }

type sidecarMetrics struct{ s *metrics.Sidecar }

func (m sidecarMetrics) CertRotated(ok bool) { m.s.CertRotated(ok) }
func (m sidecarMetrics) CertsChanged(leaf *x509.Certificate, roots []*x509.Certificate) {
	setCerts(m.s.Certs, leaf, roots)
}

// ReadyGauge returns meshguard_agent_certificate_valid, 1 while a certificate that may be
// served is held and 0 otherwise (none yet, or expired), evaluated at scrape time.
func (a *Agent) ReadyGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshguard_agent_certificate_valid",
		Help: "1 while the agent holds a workload certificate it may serve, 0 when it has none or it expired.",
	}, func() float64 {
		if a.src.Ready() {
			return 1
		}
		return 0
	})
}
