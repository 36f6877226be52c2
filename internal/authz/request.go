package authz

import (
	"net/netip"
	"strings"
)

// Request is what the engine decides on: the attributes of one HTTP request or one TCP
// connection. It is a plain struct (headers are a slice, not a map) so that building and
// evaluating it costs no allocation on the proxy's hot path.
//
// Identity fields must come from authenticated sources only: SourcePrincipal from the
// verified peer certificate, the Request* fields from a verified JWT.
type Request struct {
	// TCP marks an opaque TCP connection: HTTP-only fields cannot be evaluated, which
	// makes ALLOW rules that use them not match and DENY rules ignore them (fail closed).
	TCP bool

	SourceIP        netip.Addr // the direct peer: source.ip, ipBlocks
	RemoteIP        netip.Addr // original client (X-Forwarded-For / proxy protocol): remote.ip; SourceIP when invalid
	DestinationIP   netip.Addr // destination.ip
	DestinationPort uint32     // destination.port, ports
	// SourcePrincipal is the peer's SPIFFE identity, with or without the "spiffe://"
	// scheme: "cluster.local/ns/default/sa/sleep". Empty for plaintext peers.
	SourcePrincipal string
	// SourceNamespace is used only when SourcePrincipal does not carry a namespace.
	SourceNamespace string
	SNI             string // connection.sni

	Method string // must be upper case (else the request is invalid, 400)
	// Host is :authority / Host as sent, port included; matched case-insensitively.
	Host string
	Path string // origin-form request target: path, optional ?query
	// Headers holds each header line; names compare case-insensitively. A repeated
	// header matches on its comma-joined value, as in Envoy (DENY rules also on each
	// line, to fail closed).
	Headers []Header

	// request.auth.* from a verified JWT (see internal/authn/jwt). requestPrincipals
	// match the issuer and subject separately, as Istio does: taken from Claims "iss"
	// and "sub" when present, else from RequestPrincipal split at its last "/".
	RequestPrincipal string         // "<iss>/<sub>"
	Audiences        []string       // aud
	Presenter        string         // azp
	Claims           map[string]any // the token's payload, as decoded JSON
}

// Header is one request header line.
type Header struct {
	Name, Value string
}

// Header returns the first value of the named header (case-insensitive), or "".
func (r *Request) Header(name string) string {
	for i := range r.Headers {
		if strings.EqualFold(r.Headers[i].Name, name) {
			return r.Headers[i].Value
		}
	}
	return ""
}
