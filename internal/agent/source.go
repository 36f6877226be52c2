package agent

import (
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// held is one issued certificate with its key and the trust bundle that came with it.
// It is immutable once built.
type held struct {
	svid     *x509svid.SVID
	bundle   *x509bundle.Bundle
	issuedAt time.Time // later of NotBefore and reception
	renewAt  time.Time
}

func (h *held) leaf() *x509.Certificate {
	if h == nil {
		return nil
	}
	return h.svid.Certificates[0]
}

// Source is the workload's current certificate and trust bundle, with change
// notification: DESIGN's CertSource. It implements go-spiffe's x509svid.Source and
// x509bundle.Source, so go-spiffe's tlsconfig helpers accept it, and Updated for
// consumers that push (the SDS server) or cache.
//
// An expired certificate is never returned: GetX509SVID checks the clock on every call,
// so the guarantee does not depend on the rotation loop waking up in time.
type Source struct {
	now func() time.Time

	mu      sync.RWMutex
	cur     *held
	changed chan struct{}
}

var (
	_ x509svid.Source   = (*Source)(nil)
	_ x509bundle.Source = (*Source)(nil)
)

func newSource(now func() time.Time) *Source {
	return &Source{now: now, changed: make(chan struct{})}
}

// GetX509SVID returns the current SVID. It fails with ErrNoCertificate before the first
// issuance and ErrExpired once the held certificate has expired.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	cur := s.cur
	s.mu.RUnlock()
	if cur == nil {
		return nil, ErrNoCertificate
	}
	if now := s.now(); expired(now, cur.leaf()) {
		return nil, fmt.Errorf("%w: %s expired at %s", ErrExpired, cur.svid.ID, cur.leaf().NotAfter.UTC().Format(time.RFC3339))
	}
	return cur.svid, nil
}

// GetX509BundleForTrustDomain returns the trust bundle received with the current
// certificate. It may hold several roots while the mesh rotates its root. The bundle is
// served even when the certificate has expired: verifying peers does not need our own
// certificate.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.RLock()
	cur := s.cur
	s.mu.RUnlock()
	if cur == nil {
		return nil, ErrNoCertificate
	}
	if cur.bundle.TrustDomain() != td {
		return nil, fmt.Errorf("no trust bundle for trust domain %q: this workload is in %q", td, cur.bundle.TrustDomain())
	}
	return cur.bundle, nil
}

// Updated returns a channel that is closed at the next change: a new certificate, a new
// bundle, or the held certificate expiring. Call it again after each change, and before
// reading the Source, so that no change is missed.
func (s *Source) Updated() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Ready reports whether a certificate that may be served is held at now.
func (s *Source) Ready() bool {
	_, err := s.GetX509SVID()
	return err == nil
}

func (s *Source) current() *held {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur
}

// set installs h (nil to keep the current one) and wakes every waiter.
func (s *Source) set(h *held) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h != nil {
		s.cur = h
	}
	close(s.changed)
	s.changed = make(chan struct{})
}
