package controlplane

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/meshguard/meshguard/internal/caservice"
	"github.com/meshguard/meshguard/internal/certreport"
	"github.com/meshguard/meshguard/internal/config/dirstore"
	"github.com/meshguard/meshguard/internal/metrics"
)

// CAExpiryWarning is how long before the CA's own certificate expires the control plane
// starts warning, at start and then daily: the time an operator has to rotate it.
const CAExpiryWarning = 30 * 24 * time.Hour

// caExpiryCheckEvery is how often the warning is repeated.
const caExpiryCheckEvery = 24 * time.Hour

// caMetrics is what caservice records issuance on; nil when metrics are off (a nil
// *metrics.ControlPlane in an interface would not be nil).
func (cp *ControlPlane) caMetrics() caservice.Metrics {
	if cp.cfg.Metrics == nil {
		return nil
	}
	return cp.cfg.Metrics
}

// caChain returns the CA's certificates below the roots: the signing certificate and the
// intermediates up to (not including) a root in the bundle. Empty for a self-signed root.
func (cp *ControlPlane) caChain() []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range append([]*x509.Certificate{cp.signer.Cert}, cp.signer.Intermediates...) {
		if !slices.ContainsFunc(cp.authority.TrustBundle(), c.Equal) {
			out = append(out, c)
		}
	}
	return out
}

// recordCerts puts the CA's roots, intermediates and serving certificate on the expiry
// gauges; expiry is computed at scrape time, so this runs only when a certificate changes.
func (cp *ControlPlane) recordCerts() {
	m := cp.cfg.Metrics
	if m == nil {
		return
	}
	m.Certs.SetBundle("root", metrics.RoleRoot, cp.authority.TrustBundle())
	m.Certs.SetBundle("intermediate", metrics.RoleIntermediate, cp.caChain())
	m.Certs.Set("serving", metrics.RoleServing, cp.serving.Load().Leaf)
}

// Certificates is the inventory `meshguard ctl certs` reports: every root of the trust
// bundle, the CA's intermediates, the serving certificate and, with a config push, each
// connected sidecar's current certificate.
func (cp *ControlPlane) Certificates() []certreport.Cert {
	var out []certreport.Cert
	for i, r := range cp.authority.TrustBundle() {
		out = append(out, certreport.FromX509(certreport.RoleRoot, fmt.Sprintf("root-%d", i), r))
	}
	for i, c := range cp.caChain() {
		name := "ca-cert"
		if i > 0 {
			name = fmt.Sprintf("intermediate-%d", i)
		}
		out = append(out, certreport.FromX509(certreport.RoleIntermediate, name, c))
	}
	out = append(out, certreport.FromX509(certreport.RoleServing, "serving", cp.serving.Load().Leaf))
	if cp.cfg.Push != nil {
		for _, s := range cp.cfg.Push.server.Sidecars() {
			if s.Cert != nil {
				out = append(out, certreport.FromX509(certreport.RoleWorkload, s.Namespace+"/"+s.Workload+" "+s.Conn, s.Cert))
			}
		}
	}
	return out
}

// checkCAExpiry warns when the CA's own certificate — the root when self-signed, the
// intermediate when plugged in — or the root it chains to has less than CAExpiryWarning
// left. Workload certificates cannot outlive it, so every workload is affected.
func (cp *ControlPlane) checkCAExpiry() {
	now := cp.cfg.Now()
	certs := []*x509.Certificate{cp.signer.Cert}
	if root := cp.authority.Root(); !root.Equal(cp.signer.Cert) {
		certs = append(certs, root)
	}
	for _, c := range certs {
		left := c.NotAfter.Sub(now)
		if left >= CAExpiryWarning {
			continue
		}
		role := metrics.RoleIntermediate
		if c.Equal(cp.authority.Root()) {
			role = metrics.RoleRoot
		}
		msg := "CA certificate expires soon: rotate it before workloads can no longer renew"
		if left <= 0 {
			msg = "CA certificate has expired: workloads can no longer renew"
		}
		cp.log.Warn(msg, "role", role, "subject", c.Subject.String(), "serial", c.SerialNumber.Text(16),
			"not_after", c.NotAfter.UTC(), "time_left", left.Round(time.Minute))
	}
}

// watchCAExpiry runs checkCAExpiry now and every day until ctx ends.
func (cp *ControlPlane) watchCAExpiry(ctx context.Context) error {
	t := time.NewTicker(caExpiryCheckEvery)
	defer t.Stop()
	for {
		cp.checkCAExpiry()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// configErrors turns the directory store's refusals into the config-error counter. The
// store keeps a refusal (with its time) while the bad content is on disk; each refusal
// is counted once, per rejected object.
type configErrors struct {
	mu      sync.Mutex
	counted map[string]time.Time // file → At of the refusal already counted
}

func (ce *configErrors) sync(st dirstore.Status, m *metrics.ControlPlane) {
	ce.mu.Lock()
	defer ce.mu.Unlock()
	if ce.counted == nil {
		ce.counted = map[string]time.Time{}
	}
	current := map[string]bool{}
	for _, r := range st.Refused {
		current[r.File] = true
		if at, ok := ce.counted[r.File]; ok && at.Equal(r.At) {
			continue
		}
		ce.counted[r.File] = r.At
		seen := map[string]bool{}
		for _, p := range r.Problems {
			obj := p.Kind + "/" + p.Namespace + "/" + p.Name
			if seen[obj] {
				continue
			}
			seen[obj] = true
			kind := p.Kind
			if kind == "" {
				kind = "unknown" // the document did not parse far enough to have one
			}
			m.ConfigRejected(kind)
		}
	}
	for f := range ce.counted {
		if !current[f] {
			delete(ce.counted, f)
		}
	}
}
