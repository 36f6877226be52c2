package accesslog_test

import (
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/meshguard/meshguard/internal/accesslog"
	meshconfig "istio.io/api/mesh/v1alpha1"
)

// The seeds' custom format, compiled from meshConfig.accessLogFormat, rendering a
// request that an AuthorizationPolicy denied.
func ExampleFormatterFor() {
	f, err := accesslog.FormatterFor(meshconfig.MeshConfig_TEXT,
		"[%START_TIME%] %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% -> %RESPONSE_CODE% %RESPONSE_CODE_DETAILS%")
	if err != nil {
		fmt.Println(err)
		return
	}
	e := &accesslog.Entry{
		StartTime:           time.Date(2026, 3, 14, 9, 26, 53, 589_000_000, time.UTC),
		Method:              "GET",
		Path:                "/admin",
		ResponseCode:        403,
		ResponseCodeDetails: accesslog.RBACDeniedDetails("ns[shop]-policy[deny-admin]-rule[0]"),
		Authz:               accesslog.Authz{Denied: true, Policy: "ns[shop]-policy[deny-admin]-rule[0]"},
	}
	os.Stdout.Write(f.Append(nil, e))
	// Output:
	// [2026-03-14T09:26:53.589Z] GET /admin -> 403 rbac_access_denied_matched_policy[ns[shop]-policy[deny-admin]-rule[0]]
}

// A JSON format keeps numbers as numbers, prints unset values as null, and names the
// deciding policy of a denial.
func ExampleParseJSON() {
	f, err := accesslog.ParseJSON(`{"code":"%RESPONSE_CODE%","peer":"%DOWNSTREAM_PEER_URI_SAN%","from":"%DOWNSTREAM_REMOTE_ADDRESS%","ua":"%REQ(USER-AGENT)%"}`)
	if err != nil {
		fmt.Println(err)
		return
	}
	e := &accesslog.Entry{
		ResponseCode:            403,
		DownstreamPeerURISAN:    "spiffe://cluster.local/ns/shop/sa/frontend",
		DownstreamRemoteAddress: netip.MustParseAddrPort("10.0.0.7:41234"),
		Authz:                   accesslog.Authz{Denied: true},
	}
	os.Stdout.Write(f.Append(nil, e))
	// Output:
	// {"code":403,"from":"10.0.0.7:41234","peer":"spiffe://cluster.local/ns/shop/sa/frontend","policy":"none","ua":null}
}

// Unknown operators are configuration errors that say where they are.
func ExampleParseText_error() {
	_, err := accesslog.ParseText("[%START_TIME%] %REQ(:METHOD)% %RESPONSE_CDOE%")
	fmt.Println(err)
	// Output:
	// access log format: position 30: command operator "%RESPONSE_CDOE%": unknown command operator
}
