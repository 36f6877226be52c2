package metrics

import (
	"crypto/x509"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CertExpiry is a collector for certificate expiry. It stores certificates, not
// numbers: the seconds left are computed at scrape time from its clock, so the gauge is
// right even if nothing touched it for hours.
type CertExpiry struct {
	now       func() time.Time
	timestamp *prometheus.Desc
	remaining *prometheus.Desc

	mu    sync.RWMutex
	certs map[string]certEntry
}

type certEntry struct {
	role     string
	identity string
	serial   string
	notAfter time.Time
}

var _ prometheus.Collector = (*CertExpiry)(nil)

// Certificate roles, the "role" label.
const (
	RoleRoot         = "root"
	RoleIntermediate = "intermediate"
	RoleServing      = "serving"
	RoleWorkload     = "workload"
)

// NewCertExpiry returns a collector exposing <prefix>_expiry_timestamp_seconds and
// <prefix>_expiry_remaining_seconds, labelled by cert (the caller's name), role,
// identity (the SPIFFE ID or subject CN) and serial. now nil means time.Now.
func NewCertExpiry(prefix, what string, now func() time.Time) *CertExpiry {
	if now == nil {
		now = time.Now
	}
	labels := []string{"cert", "role", "identity", "serial"}
	return &CertExpiry{
		now:       now,
		timestamp: prometheus.NewDesc(prefix+"_expiry_timestamp_seconds", "NotAfter of "+what+", in Unix seconds.", labels, nil),
		remaining: prometheus.NewDesc(prefix+"_expiry_remaining_seconds", "Seconds until "+what+" expire, negative once expired; computed at scrape time.", labels, nil),
		certs:     map[string]certEntry{},
	}
}

// Set records (or replaces) the certificate called name, e.g. "workload" or "root-0".
// A nil cert removes it.
func (c *CertExpiry) Set(name, role string, cert *x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cert == nil {
		delete(c.certs, name)
		return
	}
	id := cert.Subject.CommonName
	if len(cert.URIs) > 0 {
		id = cert.URIs[0].String()
	}
	c.certs[name] = certEntry{role: role, identity: id, serial: cert.SerialNumber.Text(16), notAfter: cert.NotAfter}
}

// SetBundle replaces every certificate whose name starts with prefix+"-" by certs,
// named prefix-0, prefix-1, …: for trust bundles whose size changes on root rotation.
func (c *CertExpiry) SetBundle(prefix, role string, certs []*x509.Certificate) {
	c.mu.Lock()
	for name := range c.certs {
		if len(name) > len(prefix) && name[:len(prefix)+1] == prefix+"-" {
			delete(c.certs, name)
		}
	}
	c.mu.Unlock()
	for i, cert := range certs {
		c.Set(prefix+"-"+strconv.Itoa(i), role, cert)
	}
}

// Describe implements prometheus.Collector.
func (c *CertExpiry) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.timestamp
	ch <- c.remaining
}

// Collect implements prometheus.Collector.
func (c *CertExpiry) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	c.mu.RLock()
	names := make([]string, 0, len(c.certs))
	for n := range c.certs {
		names = append(names, n)
	}
	entries := make([]certEntry, len(names))
	sort.Strings(names)
	for i, n := range names {
		entries[i] = c.certs[n]
	}
	c.mu.RUnlock()
	for i, e := range entries {
		lv := []string{names[i], e.role, e.identity, e.serial}
		ch <- prometheus.MustNewConstMetric(c.timestamp, prometheus.GaugeValue, float64(e.notAfter.Unix()), lv...)
		ch <- prometheus.MustNewConstMetric(c.remaining, prometheus.GaugeValue, e.notAfter.Sub(now).Seconds(), lv...)
	}
}
