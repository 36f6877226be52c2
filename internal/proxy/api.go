package proxy

import (
	"context"
	"net/http"
	"net/netip"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
)

// CertSource is the workload's current certificate and trust bundle with change
// notification (DESIGN's CertSource; the agent's Source implements it). Updated's channel
// receives after each rotation; the proxy then rebuilds its cached tls.Certificate so
// that new handshakes use the new certificate while open connections continue.
type CertSource interface {
	x509svid.Source
	x509bundle.Source
	Updated() <-chan struct{}
}

// HeaderGetter reads request headers: Get by case-insensitive name, Each over every
// header line in order. The lean HTTP/1.1 path's header view and HTTPHeader implement
// it, so no header map is built per request. Values are valid only during the call
// they are passed to.
type HeaderGetter interface {
	Get(name string) string
	Each(fn func(name, value string))
}

// HTTPHeader adapts an http.Header to HeaderGetter.
type HTTPHeader http.Header

// Get returns the first value of name.
func (h HTTPHeader) Get(name string) string { return http.Header(h).Get(name) }

// Each calls fn for every value of every header.
func (h HTTPHeader) Each(fn func(name, value string)) {
	for k, vs := range h {
		for _, v := range vs {
			fn(k, v)
		}
	}
}

// Request is what the proxy knows about one inbound request or TCP connection when it
// asks for an authorization decision (Istio's attributes: source.principal,
// source.ip, destination.port, request.headers, request.auth.*, …).
type Request struct {
	// SourcePrincipal is the verified peer identity in Istio's principal form
	// "TRUST_DOMAIN/ns/NS/sa/SA"; empty for plaintext.
	SourcePrincipal string
	Source          netip.AddrPort
	Destination     netip.AddrPort
	// SNI is the server name the peer asked for, if TLS.
	SNI string
	// HTTP is false for opaque TCP connections; the HTTP fields are then empty.
	HTTP   bool
	Method string
	// Path is the origin-form request target as received: path and query.
	Path    string
	Host    string
	Headers HeaderGetter
	// Auth holds the validated end-user JWT, nil when the request carried none.
	Auth *Auth
}

// Auth is the result of end-user JWT authentication (Istio's request.auth.*).
type Auth struct {
	// Principal is "ISS/SUB".
	Principal string
	Audiences []string
	Presenter string
	Claims    map[string]any
}

// Decision is an authorization verdict with the policy that decided it.
type Decision struct {
	Allow bool
	// Status is the HTTP status for a denial (0: 403).
	Status int
	// Policy names the deciding policy as "NAMESPACE/NAME" (empty when no policy applied).
	Policy string
	// Rule is the index of the deciding rule in the policy's spec.rules (Istio's RBAC
	// policy ID carries it); meaningless when Policy is empty.
	Rule int
	// AuditPolicy and AuditRule name the AUDIT policy rule that matched, if any: it marks
	// the access-log entry and changes nothing else.
	AuditPolicy string
	AuditRule   int
	// Reason is for logs only; the peer never sees it.
	Reason string
}

// Authorizer decides a request (the proxy is its consumer; *authz.Engine implements it
// through the sidecar's adapter). It must not block and should not allocate.
type Authorizer interface {
	Authorize(ctx context.Context, r *Request) Decision
}

// RequestAuthenticator validates end-user JWTs per RequestAuthentication. It returns
// (nil, nil) when the request carries no token, and an error when a token is present
// but invalid (the proxy answers 401).
type RequestAuthenticator interface {
	Authenticate(ctx context.Context, h HeaderGetter, path string) (*Auth, error)
}

// PeerAuthn gives the effective PeerAuthentication mode for an inbound workload port,
// with Istio's precedence already applied (port-level, selector, namespace, mesh).
// UNSET means the mesh default, PERMISSIVE.
type PeerAuthn interface {
	MTLSMode(port uint32) security.PeerAuthentication_MutualTLS_Mode
}

// DestinationRules returns the client TLS settings of the DestinationRule that applies
// to host:port (longest host match, port-level settings first), or nil when none does.
type DestinationRules interface {
	ClientTLS(host string, port uint32) *networking.ClientTLSSettings
}

// Observer receives one Record per completed HTTP request or TCP connection (access
// log, metrics) and one call per failed inbound handshake. Implementations must not
// block: they run on the data path.
type Observer interface {
	Observe(r *Record)
	HandshakeFailed(direction Direction, reason string)
}

// Direction tells inbound from outbound traffic.
type Direction uint8

// Directions.
const (
	Inbound Direction = iota + 1
	Outbound
)

func (d Direction) String() string {
	switch d {
	case Inbound:
		return "inbound"
	case Outbound:
		return "outbound"
	}
	return "unknown"
}

// Record describes one completed request (HTTP) or connection (TCP). The proxy reuses
// Records: an Observer must copy what it keeps.
type Record struct {
	Direction Direction
	Protocol  string // "http/1.1", "h2", "tcp"
	Start     time.Time
	Duration  time.Duration
	// ConnectionID identifies the downstream connection (also in ConnInfo.ID).
	ConnectionID uint64
	Source       netip.AddrPort
	// Local is the downstream connection's local end: the original destination for
	// captured traffic, else the listener's address.
	Local netip.AddrPort
	// Port is the workload port (inbound) or the service port (outbound) the traffic is
	// for; 0 when unknown.
	Port uint32
	// Mode is the inbound PeerAuthentication mode applied (STRICT, PERMISSIVE, DISABLE)
	// or the outbound DestinationRule TLS mode (ISTIO_MUTUAL, …, PASSTHROUGH).
	Mode string
	// TLSVersion and TLSCipher describe the downstream TLS session; 0 for plaintext.
	TLSVersion, TLSCipher uint16
	SNI                   string
	// Upstream is the address the proxy forwarded to, invalid when it did not.
	Upstream        netip.AddrPort
	SourcePrincipal string // verified peer (inbound) or "" ; Istio principal form
	PeerPrincipal   string // outbound: the verified server identity
	LocalPrincipal  string
	Host            string // outbound: destination service host
	Method          string
	Path            string
	Authority       string
	Status          int // HTTP status; 0 for TCP
	BytesReceived   int64
	BytesSent       int64
	// Headers are the request headers (HTTP only), valid only during Observe.
	Headers HeaderGetter
	// Policy is the deciding AuthorizationPolicy ("NAMESPACE/NAME") and Rule its rule
	// index; Denied says whether it denied (Policy empty and Denied: no ALLOW policy
	// matched). AuditPolicy/AuditRule: the AUDIT rule that matched, if any.
	Policy      string
	Rule        int
	Denied      bool
	AuditPolicy string
	AuditRule   int
	// Flags is Envoy-style response flags: "" or e.g. "UF" (upstream failure),
	// "UAEX" (unauthorized external), "URX".
	Flags string
}
