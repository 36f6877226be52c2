package accesslog

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/netip"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"
)

type argKind int

const (
	argNone argKind = iota
	argOptional
	argRequired
)

// opSpec describes one command operator: whether it takes an argument, whether it is
// a number in JSON, and how to build its append function from the argument.
type opSpec struct {
	arg     argKind
	numeric bool
	example string
	build   func(arg string, hasArg bool) (appendFunc, error)
}

func asFormatError(err error, fe **FormatError) bool { return errors.As(err, fe) }

// field builds a spec for an operator without argument.
func field(fn appendFunc) opSpec {
	return opSpec{build: func(string, bool) (appendFunc, error) { return fn, nil }}
}

func numField(fn appendFunc) opSpec {
	s := field(fn)
	s.numeric = true
	return s
}

func str(get func(e *Entry) string) opSpec {
	return field(func(dst []byte, e *Entry) ([]byte, bool) {
		v := get(e)
		return append(dst, v...), v != ""
	})
}

func addr(get func(e *Entry) netip.AddrPort, part int) opSpec {
	return field(func(dst []byte, e *Entry) ([]byte, bool) {
		ap := get(e)
		if !ap.IsValid() {
			return dst, false
		}
		switch part {
		case partAddr:
			return ap.Addr().AppendTo(dst), true
		case partPort:
			return strconv.AppendUint(dst, uint64(ap.Port()), 10), true
		}
		return ap.AppendTo(dst), true
	})
}

const (
	partBoth = iota
	partAddr
	partPort
)

// millis prints a duration in whole milliseconds, as Envoy does.
func millis(get func(e *Entry) time.Duration, always bool) opSpec {
	return numField(func(dst []byte, e *Entry) ([]byte, bool) {
		d := get(e)
		if d <= 0 && !always {
			return dst, false
		}
		return strconv.AppendInt(dst, d.Milliseconds(), 10), true
	})
}

func tlsVersion(get func(e *Entry) uint16) opSpec {
	return field(func(dst []byte, e *Entry) ([]byte, bool) {
		// Envoy prints OpenSSL's names.
		switch get(e) {
		case tls.VersionTLS10:
			return append(dst, "TLSv1"...), true
		case tls.VersionTLS11:
			return append(dst, "TLSv1.1"...), true
		case tls.VersionTLS12:
			return append(dst, "TLSv1.2"...), true
		case tls.VersionTLS13:
			return append(dst, "TLSv1.3"...), true
		}
		return dst, false
	})
}

func tlsCipher(get func(e *Entry) uint16) opSpec {
	return field(func(dst []byte, e *Entry) ([]byte, bool) {
		c := get(e)
		if c == 0 {
			return dst, false
		}
		// IANA names (Go's), not OpenSSL's: for TLS 1.3 suites they are the same.
		return append(dst, tls.CipherSuiteName(c)...), true
	})
}

// headerOp builds %REQ(X?Y)%, %RESP(X?Y)% and %TRAILER(X?Y)%: header X, else header Y.
func headerOp(which int) opSpec {
	return opSpec{arg: argRequired, example: "%REQ(USER-AGENT)% or %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
		build: func(arg string, _ bool) (appendFunc, error) {
			main, alt, hasAlt := strings.Cut(arg, "?")
			if strings.Contains(alt, "?") {
				return nil, &FormatError{Pos: len(main) + 1 + strings.IndexByte(alt, '?'), Reason: "more than one alternative header (only X?Y is allowed)"}
			}
			if hasAlt && alt == "" || main == "" {
				return nil, &FormatError{Pos: 0, Reason: "empty header name"}
			}
			for i := 0; i < len(arg); i++ {
				if c := arg[i]; c != '?' && !validHeaderByte(c) {
					return nil, &FormatError{Pos: i, Reason: "invalid character " + strconv.QuoteRune(rune(c)) + " in header name"}
				}
			}
			first := headerGetter(which, main)
			if !hasAlt {
				return first, nil
			}
			second := headerGetter(which, alt)
			return func(dst []byte, e *Entry) ([]byte, bool) {
				if out, ok := first(dst, e); ok {
					return out, true
				}
				return second(dst, e)
			}, nil
		}}
}

const (
	hdrRequest = iota
	hdrResponse
	hdrTrailer
)

// validHeaderByte accepts RFC 9110 token bytes plus the ':' of pseudo-headers.
func validHeaderByte(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$&'*+-.^_`|~:", c) >= 0
}

// headerGetter resolves the header name once at compile time: pseudo-headers map to
// Entry fields, other names to their canonical net/http key so the lookup is a plain
// map index with no allocation.
func headerGetter(which int, name string) appendFunc {
	lower := strings.ToLower(name)
	if which == hdrRequest {
		var get func(e *Entry) string
		switch lower {
		case ":method":
			get = func(e *Entry) string { return e.Method }
		case ":path":
			get = func(e *Entry) string { return e.Path }
		case ":authority", "host": // Envoy folds Host into :authority
			get = func(e *Entry) string { return e.Authority }
		case ":scheme":
			get = func(e *Entry) string { return e.Scheme }
		}
		if get != nil {
			return func(dst []byte, e *Entry) ([]byte, bool) {
				v := get(e)
				return append(dst, v...), v != ""
			}
		}
	}
	if which == hdrResponse && lower == ":status" {
		return func(dst []byte, e *Entry) ([]byte, bool) {
			if e.ResponseCode == 0 {
				return dst, false
			}
			return strconv.AppendInt(dst, int64(e.ResponseCode), 10), true
		}
	}
	key := textproto.CanonicalMIMEHeaderKey(name)
	lookup := func(e *Entry) http.Header {
		switch which {
		case hdrRequest:
			return e.RequestHeaders
		case hdrResponse:
			return e.ResponseHeaders
		}
		return e.ResponseTrailers
	}
	fromHeader := func(dst []byte, e *Entry) ([]byte, bool) {
		vs := lookup(e)[key]
		if len(vs) == 0 {
			return dst, false
		}
		start := len(dst)
		for i, v := range vs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, v...)
		}
		return dst, len(dst) > start
	}
	if which == hdrResponse && key == "X-Envoy-Upstream-Service-Time" {
		// The proxy may record the upstream time without setting the header.
		return func(dst []byte, e *Entry) ([]byte, bool) {
			if out, ok := fromHeader(dst, e); ok {
				return out, true
			}
			if e.UpstreamServiceTime <= 0 {
				return dst, false
			}
			return strconv.AppendInt(dst, e.UpstreamServiceTime.Milliseconds(), 10), true
		}
	}
	return fromHeader
}

// operators is every command operator meshguard understands. Names are Envoy's, plus
// UPSTREAM_SERVICE_TIME (shorthand for %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%) and the
// AUTHZ_* operators, which expose the authorization decision in TEXT logs.
var operators = map[string]opSpec{
	"START_TIME": {arg: argOptional, example: "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
		build: func(arg string, hasArg bool) (appendFunc, error) {
			if !hasArg || arg == "" {
				return func(dst []byte, e *Entry) ([]byte, bool) {
					if e.StartTime.IsZero() {
						return dst, false
					}
					return e.StartTime.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z"), true
				}, nil
			}
			tf, err := parseTimeFormat(arg)
			if err != nil {
				return nil, err
			}
			return func(dst []byte, e *Entry) ([]byte, bool) {
				if e.StartTime.IsZero() {
					return dst, false
				}
				return tf.appendTime(dst, e.StartTime), true
			}, nil
		}},

	"REQ":              headerOp(hdrRequest),
	"REQUEST_HEADER":   headerOp(hdrRequest),
	"RESP":             headerOp(hdrResponse),
	"RESPONSE_HEADER":  headerOp(hdrResponse),
	"TRAILER":          headerOp(hdrTrailer),
	"RESPONSE_TRAILER": headerOp(hdrTrailer),
	"UPSTREAM_SERVICE_TIME": {build: func(string, bool) (appendFunc, error) {
		return headerGetter(hdrResponse, "X-ENVOY-UPSTREAM-SERVICE-TIME"), nil
	}},

	"RESPONSE_CODE": numField(func(dst []byte, e *Entry) ([]byte, bool) {
		return strconv.AppendInt(dst, int64(e.ResponseCode), 10), true
	}),
	// Envoy prints "-" for "no flags" as the flag string itself, so JSON shows "-", not null.
	"RESPONSE_FLAGS": field(func(dst []byte, e *Entry) ([]byte, bool) {
		if e.ResponseFlags == "" {
			return append(dst, '-'), true
		}
		return append(dst, e.ResponseFlags...), true
	}),
	"RESPONSE_CODE_DETAILS":             str(func(e *Entry) string { return e.ResponseCodeDetails }),
	"CONNECTION_TERMINATION_DETAILS":    str(func(e *Entry) string { return e.ConnectionTerminationDetails }),
	"UPSTREAM_TRANSPORT_FAILURE_REASON": str(func(e *Entry) string { return e.UpstreamTransportFailureReason }),

	"DURATION":          millis(func(e *Entry) time.Duration { return e.Duration }, true),
	"REQUEST_DURATION":  millis(func(e *Entry) time.Duration { return e.RequestDuration }, false),
	"RESPONSE_DURATION": millis(func(e *Entry) time.Duration { return e.ResponseDuration }, false),
	"BYTES_RECEIVED": numField(func(dst []byte, e *Entry) ([]byte, bool) {
		return strconv.AppendUint(dst, e.BytesReceived, 10), true
	}),
	"BYTES_SENT": numField(func(dst []byte, e *Entry) ([]byte, bool) {
		return strconv.AppendUint(dst, e.BytesSent, 10), true
	}),
	// Envoy renders PROTOCOL as the string "-" even in typed JSON when unknown.
	"PROTOCOL": field(func(dst []byte, e *Entry) ([]byte, bool) {
		if e.Protocol == "" {
			return append(dst, '-'), true
		}
		return append(dst, e.Protocol...), true
	}),

	"UPSTREAM_HOST":                          addr(func(e *Entry) netip.AddrPort { return e.UpstreamHost }, partBoth),
	"UPSTREAM_REMOTE_ADDRESS":                addr(func(e *Entry) netip.AddrPort { return e.UpstreamHost }, partBoth),
	"UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":   addr(func(e *Entry) netip.AddrPort { return e.UpstreamHost }, partAddr),
	"UPSTREAM_REMOTE_PORT":                   addr(func(e *Entry) netip.AddrPort { return e.UpstreamHost }, partPort),
	"UPSTREAM_LOCAL_ADDRESS":                 addr(func(e *Entry) netip.AddrPort { return e.UpstreamLocalAddress }, partBoth),
	"UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":    addr(func(e *Entry) netip.AddrPort { return e.UpstreamLocalAddress }, partAddr),
	"UPSTREAM_LOCAL_PORT":                    addr(func(e *Entry) netip.AddrPort { return e.UpstreamLocalAddress }, partPort),
	"DOWNSTREAM_REMOTE_ADDRESS":              addr(func(e *Entry) netip.AddrPort { return e.DownstreamRemoteAddress }, partBoth),
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": addr(func(e *Entry) netip.AddrPort { return e.DownstreamRemoteAddress }, partAddr),
	"DOWNSTREAM_REMOTE_PORT":                 addr(func(e *Entry) netip.AddrPort { return e.DownstreamRemoteAddress }, partPort),
	// meshguard has no PROXY protocol or XFF trust, so the direct address is the same.
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS":              addr(func(e *Entry) netip.AddrPort { return e.DownstreamRemoteAddress }, partBoth),
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": addr(func(e *Entry) netip.AddrPort { return e.DownstreamRemoteAddress }, partAddr),
	"DOWNSTREAM_LOCAL_ADDRESS":                      addr(func(e *Entry) netip.AddrPort { return e.DownstreamLocalAddress }, partBoth),
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":         addr(func(e *Entry) netip.AddrPort { return e.DownstreamLocalAddress }, partAddr),
	"DOWNSTREAM_LOCAL_PORT":                         addr(func(e *Entry) netip.AddrPort { return e.DownstreamLocalAddress }, partPort),

	"UPSTREAM_CLUSTER":     str(func(e *Entry) string { return e.UpstreamCluster }),
	"UPSTREAM_CLUSTER_RAW": str(func(e *Entry) string { return e.UpstreamCluster }),
	"ROUTE_NAME":           str(func(e *Entry) string { return e.RouteName }),
	"CONNECTION_ID": numField(func(dst []byte, e *Entry) ([]byte, bool) {
		if e.ConnectionID == 0 {
			return dst, false
		}
		return strconv.AppendUint(dst, e.ConnectionID, 10), true
	}),

	"REQUESTED_SERVER_NAME":    str(func(e *Entry) string { return e.RequestedServerName }),
	"DOWNSTREAM_PEER_URI_SAN":  str(func(e *Entry) string { return e.DownstreamPeerURISAN }),
	"DOWNSTREAM_LOCAL_URI_SAN": str(func(e *Entry) string { return e.DownstreamLocalURISAN }),
	"UPSTREAM_PEER_URI_SAN":    str(func(e *Entry) string { return e.UpstreamPeerURISAN }),
	"DOWNSTREAM_TLS_VERSION":   tlsVersion(func(e *Entry) uint16 { return e.DownstreamTLSVersion }),
	"DOWNSTREAM_TLS_CIPHER":    tlsCipher(func(e *Entry) uint16 { return e.DownstreamTLSCipher }),
	"UPSTREAM_TLS_VERSION":     tlsVersion(func(e *Entry) uint16 { return e.UpstreamTLSVersion }),
	"UPSTREAM_TLS_CIPHER":      tlsCipher(func(e *Entry) uint16 { return e.UpstreamTLSCipher }),

	// ENVIRONMENT(X) is read once, when the format is compiled, as Envoy does.
	"ENVIRONMENT": {arg: argRequired, example: "%ENVIRONMENT(POD_NAME)%",
		build: func(arg string, _ bool) (appendFunc, error) {
			v := os.Getenv(arg)
			return func(dst []byte, _ *Entry) ([]byte, bool) { return append(dst, v...), v != "" }, nil
		}},

	"AUTHZ_POLICY": field(func(dst []byte, e *Entry) ([]byte, bool) {
		if !e.Authz.Denied {
			return dst, false
		}
		return append(dst, e.Authz.deniedPolicy()...), true
	}),
	"AUTHZ_AUDIT_POLICY":   str(func(e *Entry) string { return e.Authz.AuditPolicy }),
	"AUTHZ_DRY_RUN_POLICY": str(func(e *Entry) string { return e.Authz.DryRunPolicy }),
}
