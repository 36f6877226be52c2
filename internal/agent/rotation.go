package agent

import (
	"crypto/x509"
	"math"
	"time"
)

// renewAt returns when a certificate issued at issued and expiring at notAfter should be
// renewed: when graceRatio of its lifetime is left, moved by jitter (a fraction of the
// lifetime, in [-maxJitter, +maxJitter], drawn once per certificate) so that a fleet
// started together does not renew together. This is Istio's rule
// (SECRET_GRACE_PERIOD_RATIO with SECRET_GRACE_PERIOD_RATIO_JITTER).
//
// issued is the later of the certificate's NotBefore and the moment it was received: CAs
// back-date NotBefore to absorb clock skew, and counting the back-dating as lifetime
// would renew short-lived certificates far too early.
func renewAt(issued, notAfter time.Time, graceRatio, jitter float64) time.Time {
	g := math.Min(1, math.Max(0, graceRatio+jitter))
	life := notAfter.Sub(issued)
	if life <= 0 {
		return issued
	}
	return notAfter.Add(-time.Duration(g * float64(life)))
}

// shouldRotate reports whether the held certificate must be renewed at now: it is due,
// or it has expired, or there is none.
func shouldRotate(now time.Time, c *held) bool {
	return c == nil || !now.Before(c.renewAt) || expired(now, c.leaf())
}

// expired reports whether cert may no longer be served at now.
func expired(now time.Time, cert *x509.Certificate) bool {
	return cert == nil || !now.Before(cert.NotAfter)
}

// backoffDelay returns the wait before retry number attempt (0 for the first retry):
// initial doubled per attempt, capped at max, then "equal jitter" — half fixed, half
// random (u in [0,1)) — so retries of many agents spread out but never collapse to zero.
func backoffDelay(attempt int, initial, max time.Duration, u float64) time.Duration {
	d := initial
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + time.Duration(u*float64(d-half))
}
