package accesslog

import (
	"crypto/tls"
	"net/http"
	"net/netip"
	"time"
)

// The entries the tests render: a successful inbound HTTP request, an HTTP request
// denied by a DENY policy, a TCP connection, and an Entry with nothing set.

var testStart = time.Date(2026, 3, 14, 9, 26, 53, 589793238, time.UTC)

func httpEntry() *Entry {
	return &Entry{
		StartTime:           testStart,
		Duration:            12*time.Millisecond + 700*time.Microsecond,
		RequestDuration:     900 * time.Microsecond,
		ResponseDuration:    10 * time.Millisecond,
		UpstreamServiceTime: 9 * time.Millisecond,
		Method:              "GET",
		Path:                "/productpage?u=normal",
		Authority:           "productpage.bookinfo:9080",
		Scheme:              "http",
		RequestHeaders: http.Header{
			"User-Agent":      {"curl/8.7.1"},
			"X-Request-Id":    {"3f6c2a57-5c1e-4d8e-9b2a-1f0e7c9d4b21"},
			"X-Forwarded-For": {"10.1.2.3"},
		},
		ResponseHeaders:         http.Header{"Content-Type": {"text/html"}, "X-Envoy-Upstream-Service-Time": {"9"}},
		ResponseTrailers:        http.Header{"Grpc-Status": {"0"}},
		Protocol:                "HTTP/1.1",
		ResponseCode:            200,
		ResponseCodeDetails:     "via_upstream",
		BytesReceived:           0,
		BytesSent:               5293,
		UpstreamHost:            netip.MustParseAddrPort("127.0.0.1:9080"),
		UpstreamCluster:         "inbound|9080||",
		UpstreamLocalAddress:    netip.MustParseAddrPort("127.0.0.6:46531"),
		DownstreamRemoteAddress: netip.MustParseAddrPort("10.244.0.7:53820"),
		DownstreamLocalAddress:  netip.MustParseAddrPort("10.244.0.9:9080"),
		RouteName:               "default",
		ConnectionID:            42,
		RequestedServerName:     "outbound_.9080_._.productpage.bookinfo.svc.cluster.local",
		DownstreamPeerURISAN:    "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-gateway",
		DownstreamLocalURISAN:   "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
		DownstreamTLSVersion:    tls.VersionTLS13,
		DownstreamTLSCipher:     tls.TLS_AES_128_GCM_SHA256,
		Authz:                   Authz{AuditPolicy: "ns[bookinfo]-policy[audit-all]-rule[0]"},
	}
}

func deniedEntry() *Entry {
	policy := "ns[bookinfo]-policy[deny-delete]-rule[0]"
	return &Entry{
		StartTime: testStart.Add(time.Second),
		Duration:  300 * time.Microsecond,
		Method:    "DELETE",
		Path:      "/api/v1/products/1",
		Authority: "productpage.bookinfo:9080",
		RequestHeaders: http.Header{
			"User-Agent":            {"curl/8.7.1"},
			"X-Request-Id":          {"9d1c2f3e-0000-4000-8000-000000000001"},
			"X-Envoy-Original-Path": {"/products/1"},
			"X-Forwarded-For":       {"10.1.2.3", "10.244.0.7"},
			"X-Ot-Span-Context":     {""},
		},
		Protocol:                "HTTP/2",
		ResponseCode:            403,
		ResponseCodeDetails:     RBACDeniedDetails(policy),
		BytesReceived:           0,
		BytesSent:               19,
		UpstreamCluster:         "inbound|9080||",
		DownstreamRemoteAddress: netip.MustParseAddrPort("10.244.0.7:53822"),
		DownstreamLocalAddress:  netip.MustParseAddrPort("10.244.0.9:9080"),
		RouteName:               "default",
		RequestedServerName:     "outbound_.9080_._.productpage.bookinfo.svc.cluster.local",
		DownstreamPeerURISAN:    "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-gateway",
		DownstreamLocalURISAN:   "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
		DownstreamTLSVersion:    tls.VersionTLS13,
		DownstreamTLSCipher:     tls.TLS_AES_256_GCM_SHA384,
		Authz:                   Authz{Denied: true, Policy: policy},
	}
}

func tcpEntry() *Entry {
	return &Entry{
		StartTime:               testStart.Add(2 * time.Second),
		Duration:                3*time.Second + 4*time.Millisecond,
		BytesReceived:           84,
		BytesSent:               78,
		UpstreamHost:            netip.MustParseAddrPort("10.244.0.12:5432"),
		UpstreamCluster:         "outbound|5432||postgres.db.svc.cluster.local",
		UpstreamLocalAddress:    netip.MustParseAddrPort("10.244.0.9:54048"),
		DownstreamRemoteAddress: netip.MustParseAddrPort("10.244.0.9:54046"),
		DownstreamLocalAddress:  netip.MustParseAddrPort("10.96.14.2:5432"),
		UpstreamPeerURISAN:      "spiffe://cluster.local/ns/db/sa/postgres",
		UpstreamTLSVersion:      tls.VersionTLS13,
		UpstreamTLSCipher:       tls.TLS_CHACHA20_POLY1305_SHA256,
	}
}

// testEntries are the golden-file cases, in file-name order.
var testEntries = []struct {
	name  string
	entry func() *Entry
}{
	{"http-ok", httpEntry},
	{"http-denied", deniedEntry},
	{"tcp", tcpEntry},
	{"empty", func() *Entry { return &Entry{} }},
}
