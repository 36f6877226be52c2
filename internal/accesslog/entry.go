package accesslog

import (
	"net/http"
	"net/netip"
	"time"
)

// Entry is what the proxy knows about one HTTP request or one TCP connection when it
// is done. Zero values mean "not known" and print as Envoy prints an unset value:
// "-" in TEXT, null in JSON (numbers such as BytesSent and ResponseCode print 0).
//
// The formatter reads the Entry and its header maps only during Append / Writer.Log;
// the caller may reuse them afterwards.
type Entry struct {
	// StartTime is when the request (HTTP) or the downstream connection (TCP) started.
	StartTime time.Time
	// Duration runs from StartTime to the last byte out (HTTP) or to connection close
	// (TCP).
	Duration time.Duration
	// RequestDuration runs to the last byte of the request received from downstream and
	// ResponseDuration to the first byte read from upstream. Zero means the point was
	// never reached (a measured duration is never exactly zero) and prints "-".
	RequestDuration  time.Duration
	ResponseDuration time.Duration
	// UpstreamServiceTime is the upstream's processing time; it is what
	// %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% prints when the response carries no such
	// header. Zero prints "-".
	UpstreamServiceTime time.Duration

	// HTTP pseudo-headers: %REQ(:METHOD)%, %REQ(:PATH)%, %REQ(:AUTHORITY)% (also
	// %REQ(HOST)%), %REQ(:SCHEME)%. Empty for TCP.
	Method, Path, Authority, Scheme string
	// RequestHeaders, ResponseHeaders and ResponseTrailers back %REQ(…)%, %RESP(…)% and
	// %TRAILER(…)%. Keys must be in canonical form (as net/http stores them).
	RequestHeaders, ResponseHeaders, ResponseTrailers http.Header
	// Protocol is "HTTP/1.1", "HTTP/2" or "HTTP/3"; empty for TCP.
	Protocol string

	// ResponseCode is the HTTP status sent downstream; 0 for TCP or when no response
	// was started.
	ResponseCode int
	// ResponseFlags is Envoy's short flag list, comma separated (e.g. "UF,URX").
	ResponseFlags string
	// ResponseCodeDetails says who set the response code and why: "via_upstream", or
	// RBACDeniedDetails(policy) for an authorization denial.
	ResponseCodeDetails string
	// ConnectionTerminationDetails says why the proxy closed the connection for L4
	// reasons, e.g. RBACDeniedDetails(policy) for a TCP denial.
	ConnectionTerminationDetails string
	// UpstreamTransportFailureReason is why the upstream TLS handshake failed.
	UpstreamTransportFailureReason string

	// BytesReceived and BytesSent are body bytes (HTTP) or connection bytes (TCP).
	BytesReceived, BytesSent uint64

	// UpstreamHost is the upstream address the request went to; UpstreamCluster the
	// cluster name (Istio's "outbound|8080||svc.ns.svc.cluster.local" or
	// "inbound|8080||"); UpstreamLocalAddress the local end of the upstream connection.
	UpstreamHost         netip.AddrPort
	UpstreamCluster      string
	UpstreamLocalAddress netip.AddrPort
	// DownstreamRemoteAddress and DownstreamLocalAddress are the two ends of the
	// downstream connection; the local one is the original destination for redirected
	// traffic.
	DownstreamRemoteAddress netip.AddrPort
	DownstreamLocalAddress  netip.AddrPort
	// RouteName is the route that matched, "default" for sidecar inbound.
	RouteName string
	// ConnectionID identifies the downstream connection; zero prints "-".
	ConnectionID uint64

	// TLS facts about the downstream and upstream connections.
	RequestedServerName   string // SNI
	DownstreamPeerURISAN  string // SPIFFE ID of the client, comma separated if several
	DownstreamLocalURISAN string // our own SPIFFE ID on the downstream connection
	UpstreamPeerURISAN    string // SPIFFE ID of the server we connected to
	DownstreamTLSVersion  uint16 // tls.VersionTLS13 …; 0 = plaintext
	DownstreamTLSCipher   uint16 // tls.TLS_AES_128_GCM_SHA256 …
	UpstreamTLSVersion    uint16
	UpstreamTLSCipher     uint16

	// Authz is the authorization decision that applied to this request or connection.
	Authz Authz
}

// Authz is the authorization outcome as the access log reports it. Policy names use
// Istio's RBAC policy IDs, "ns[NAMESPACE]-policy[NAME]-rule[INDEX]", which is what
// Envoy prints in rbac_access_denied_matched_policy[…].
type Authz struct {
	// Denied is set when an enforced policy (CUSTOM, DENY, or no matching ALLOW) denied.
	Denied bool
	// Policy is the policy that decided. Empty with Denied means no ALLOW policy
	// matched ("none" in the log).
	Policy string
	// AuditPolicy is the AUDIT policy that matched, if any: it marks the entry and
	// changes nothing else.
	AuditPolicy string
	// DryRunPolicy is a dry-run policy (istio.io/dry-run) that would have denied.
	DryRunPolicy string
}

// deniedPolicy is the policy name as a denial reports it, Envoy's "none" when no ALLOW
// policy matched.
func (a *Authz) deniedPolicy() string {
	if a.Policy == "" {
		return "none"
	}
	return a.Policy
}

// RBACDeniedDetails is the response-code detail (HTTP) or connection-termination detail
// (TCP) that Envoy's RBAC filters record for a denial:
// rbac_access_denied_matched_policy[ns[foo]-policy[deny-get]-rule[0]], or
// rbac_access_denied_matched_policy[none] when no ALLOW policy matched. Whitespace is
// replaced by '_' as Envoy does for details, so the TEXT log stays one token.
func RBACDeniedDetails(policy string) string {
	if policy == "" {
		policy = "none"
	}
	b := make([]byte, 0, len("rbac_access_denied_matched_policy[]")+len(policy))
	b = append(b, "rbac_access_denied_matched_policy["...)
	for i := 0; i < len(policy); i++ {
		c := policy[i]
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' {
			c = '_'
		}
		b = append(b, c)
	}
	return string(append(b, ']'))
}
