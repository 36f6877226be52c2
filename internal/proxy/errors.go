package proxy

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// errNoPeerCertificate: a TLS peer presented no certificate where mTLS is required.
	errNoPeerCertificate = errors.New("peer presented no certificate")
	// errNoCertificate: the workload has no certificate yet (the agent has not issued one).
	errNoCertificate = errors.New("no workload certificate available yet")
	// ErrNoRoute: an outbound destination is not in the service registry.
	ErrNoRoute = errors.New("destination not in the service registry")
)

// SecureNamingError says that an ISTIO_MUTUAL server presented an identity the registry
// does not list for the destination host.
type SecureNamingError struct {
	Host string
	Got  string
	Want []string
}

func (e *SecureNamingError) Error() string {
	return fmt.Sprintf("secure naming: server for %s presented %s, want one of [%s]", e.Host, e.Got, strings.Join(e.Want, " "))
}
