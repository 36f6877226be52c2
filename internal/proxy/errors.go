package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
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

// TrustDomainError says that an mTLS peer presented an identity outside the workload's
// trust domain and its aliases, for which the mesh has no trust bundle.
type TrustDomainError struct {
	Peer string   // the peer's trust domain
	Want []string // the workload's own trust domain, then the aliases
}

func (e *TrustDomainError) Error() string {
	return fmt.Sprintf("peer trust domain %q is neither the workload's %q nor one of meshConfig.trustDomainAliases [%s]", e.Peer, e.Want[0], strings.Join(e.Want[1:], " "))
}

// handshakeReason maps a TLS handshake error to a short, bounded token for metrics
// (meshguard_tls_handshake_failures_total's reason label): never the error text, which
// would explode cardinality.
func handshakeReason(err error) string {
	var sn *SecureNamingError
	var tde *TrustDomainError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var alert tls.AlertError
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &sn):
		return "peer_identity_mismatch"
	case errors.As(err, &tde):
		return "peer_trust_domain_mismatch"
	case errors.Is(err, errNoPeerCertificate):
		return "no_peer_certificate"
	case errors.Is(err, errNoCertificate):
		return "no_local_certificate"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.As(err, &ua):
		return "unknown_ca"
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return "certificate_expired"
	case errors.As(err, &alert):
		return strings.ReplaceAll(strings.TrimPrefix(alert.Error(), "tls: "), " ", "_")
	case errors.As(err, &rh):
		return "not_tls"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "connection_closed"
	}
	// go-spiffe's verifier does not always wrap the x509 error types.
	switch msg := err.Error(); {
	case strings.Contains(msg, "unknown authority"):
		return "unknown_ca"
	case strings.Contains(msg, "expired"):
		return "certificate_expired"
	case strings.Contains(msg, "protocol version"):
		return "protocol_version"
	}
	return "handshake_error"
}
