package accesslog

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// textCases are format → output cases; FuzzParseText is seeded from them.
var textCases = []struct {
	format string
	entry  func() *Entry
	want   string
}{
	{"%START_TIME%", httpEntry, "2026-03-14T09:26:53.589Z"},
	{"%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%", httpEntry, "2026-03-14T09:26:53.589Z"},
	{"%START_TIME(%s.%6f)%", httpEntry, "1773480413.589793"},
	{"%START_TIME(%f|%1f|%9f)%", httpEntry, "589793238|5|589793238"},
	{"%START_TIME(%Y/%m/%dT%H:%M:%S%z %s)%", httpEntry, "2026/03/14T09:26:53+0000 1773480413"},
	{"%START_TIME(%a %b %e %T %Y %Z %j %p %I %u %w %F %D %R %y %Ez %E3S %%)%", httpEntry,
		"Sat Mar 14 09:26:53 2026 UTC 073 AM 09 6 6 2026-03-14 03/14/26 09:26 26 +00:00 53.589 %"},
	{"%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %REQ(HOST)% %REQ(:SCHEME)%", httpEntry,
		"GET /productpage?u=normal productpage.bookinfo:9080 productpage.bookinfo:9080 http"},
	{"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", httpEntry, "/productpage?u=normal"},
	{"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", deniedEntry, "/products/1"},
	{"%REQ(user-agent)% %REQUEST_HEADER(User-Agent)%", httpEntry, "curl/8.7.1 curl/8.7.1"},
	{"%REQ(USER-AGENT):4%", httpEntry, "curl"},
	{"%REQ(X-FORWARDED-FOR)%", deniedEntry, "10.1.2.3,10.244.0.7"},
	{"%REQ(X-OT-SPAN-CONTEXT)%|%REQ(X-MISSING)%|%REQ(X-MISSING?X-ALSO-MISSING)%", deniedEntry, "-|-|-"},
	{"%RESP(CONTENT-TYPE)% %RESPONSE_HEADER(:status)% %TRAILER(GRPC-STATUS)% %RESPONSE_TRAILER(grpc-status)%", httpEntry, "text/html 200 0 0"},
	{"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% %UPSTREAM_SERVICE_TIME%", httpEntry, "9 9"},
	{"%UPSTREAM_SERVICE_TIME%", func() *Entry { e := httpEntry(); e.ResponseHeaders = nil; return e }, "9"},
	{"%UPSTREAM_SERVICE_TIME%", deniedEntry, "-"},
	{"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON%", httpEntry,
		"200 - via_upstream - -"},
	{"%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%", deniedEntry,
		"403 rbac_access_denied_matched_policy[ns[bookinfo]-policy[deny-delete]-rule[0]]"},
	{"%DURATION% %REQUEST_DURATION% %RESPONSE_DURATION% %BYTES_RECEIVED% %BYTES_SENT%", httpEntry, "12 0 10 0 5293"},
	{"%DURATION% %REQUEST_DURATION% %RESPONSE_DURATION% %BYTES_RECEIVED% %BYTES_SENT% %PROTOCOL% %RESPONSE_CODE%", tcpEntry, "3004 - - 84 78 - 0"},
	{"%PROTOCOL%", deniedEntry, "HTTP/2"},
	{"%UPSTREAM_HOST% %UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_REMOTE_PORT% %UPSTREAM_CLUSTER% %UPSTREAM_CLUSTER_RAW%", tcpEntry,
		"10.244.0.12:5432 10.244.0.12 5432 outbound|5432||postgres.db.svc.cluster.local outbound|5432||postgres.db.svc.cluster.local"},
	{"%UPSTREAM_LOCAL_ADDRESS% %UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_PORT%", tcpEntry, "10.244.0.9:54048 10.244.0.9 54048"},
	{"%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_REMOTE_PORT% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%", httpEntry,
		"10.244.0.7:53820 10.244.0.7 53820 10.244.0.7:53820 10.244.0.7"},
	{"%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_PORT%", httpEntry, "10.244.0.9:9080 10.244.0.9 9080"},
	{"%UPSTREAM_HOST% %UPSTREAM_LOCAL_ADDRESS%", deniedEntry, "- -"},
	{"%ROUTE_NAME% %CONNECTION_ID% %REQUESTED_SERVER_NAME%", httpEntry, "default 42 outbound_.9080_._.productpage.bookinfo.svc.cluster.local"},
	{"%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_LOCAL_URI_SAN% %UPSTREAM_PEER_URI_SAN%", httpEntry,
		"spiffe://cluster.local/ns/bookinfo/sa/bookinfo-gateway spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage -"},
	{"%UPSTREAM_PEER_URI_SAN% %UPSTREAM_TLS_VERSION% %UPSTREAM_TLS_CIPHER%", tcpEntry,
		"spiffe://cluster.local/ns/db/sa/postgres TLSv1.3 TLS_CHACHA20_POLY1305_SHA256"},
	{"%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER%", httpEntry, "TLSv1.3 TLS_AES_128_GCM_SHA256"},
	{"%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER%", tcpEntry, "- -"},
	{"%ENVIRONMENT(MESHGUARD_TEST_POD)% %ENVIRONMENT(MESHGUARD_TEST_UNSET)% %ENVIRONMENT(MESHGUARD_TEST_POD):11%", httpEntry,
		"productpage-v1-7d9f - productpage"},
	{"%AUTHZ_POLICY% %AUTHZ_AUDIT_POLICY% %AUTHZ_DRY_RUN_POLICY%", httpEntry, "- ns[bookinfo]-policy[audit-all]-rule[0] -"},
	{"%AUTHZ_POLICY%", deniedEntry, "ns[bookinfo]-policy[deny-delete]-rule[0]"},
	{"%AUTHZ_POLICY%", func() *Entry { return &Entry{Authz: Authz{Denied: true}} }, "none"},
	{"100%% literal %%%DURATION%%%", httpEntry, "100% literal %12%"},
	{"", httpEntry, ""},
	{"no operators at all\n", httpEntry, "no operators at all\n"},
	// Values cannot forge log lines: control bytes in values become '?'.
	{"%REQ(:PATH)%|%REQUESTED_SERVER_NAME%\n", func() *Entry { return &Entry{Path: "/a\nFAKE 200", RequestedServerName: "x\x1b[31m"} },
		"/a?FAKE 200|x?[31m\n"},
	{"%START_TIME% %DURATION% %RESPONSE_CODE% %BYTES_SENT%", func() *Entry { return &Entry{} }, "- 0 0 0"},
}

func TestTextOperators(t *testing.T) {
	t.Setenv("MESHGUARD_TEST_POD", "productpage-v1-7d9f")
	for _, tc := range textCases {
		t.Run(tc.format, func(t *testing.T) {
			f, err := ParseText(tc.format)
			if err != nil {
				t.Fatalf("ParseText(%q) error: %v", tc.format, err)
			}
			if got := string(f.Append(nil, tc.entry())); got != tc.want {
				t.Errorf("ParseText(%q).Append =\n %q\nwant\n %q", tc.format, got, tc.want)
			}
			if got := f.String(); got != tc.format {
				t.Errorf("ParseText(%q).String() = %q, want the input back", tc.format, got)
			}
		})
	}
}

func TestSeedsFormat(t *testing.T) {
	// The custom format from the seeds, as written in its EnvoyFilter.
	const format = "[%START_TIME%] %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% -> %RESPONSE_CODE%\n"
	f, err := ParseText(format)
	if err != nil {
		t.Fatalf("ParseText(%q) error: %v", format, err)
	}
	want := "[2026-03-14T09:26:54.589Z] DELETE /products/1 -> 403\n"
	if got := string(f.Append(nil, deniedEntry())); got != want {
		t.Errorf("seeds format = %q, want %q", got, want)
	}
}

// textErrorCases are rejected formats; FuzzParseText is seeded from them too.
var textErrorCases = []struct {
	format  string
	pos     int
	op      string
	reason  string
	wantMsg string
}{
	{format: "%FOO%", pos: 0, op: "%FOO%", reason: "unknown command operator",
		wantMsg: `access log format: position 0: command operator "%FOO%": unknown command operator`},
	{format: "[%START_TIME%] %REQ(:METHOD)% %BOGUS_OPERATOR(x):3%", pos: 30, op: "%BOGUS_OPERATOR(x):3%", reason: "unknown command operator"},
	{format: "100% done", pos: 3, reason: "'%' must start a command operator"},
	{format: "trailing %", pos: 9, reason: "'%' must start a command operator"},
	{format: "%req(:METHOD)%", pos: 0, reason: "'%' must start a command operator"},
	{format: "x %DURATION", pos: 2, op: "%DURATION", reason: "missing closing '%'"},
	{format: "%REQ(:METHOD%", pos: 0, op: "%REQ(:METHOD%", reason: "missing ')'"},
	{format: "%REQ(:METHOD)x%", pos: 0, op: "%REQ(:METHOD)x", reason: "missing closing '%'"},
	{format: "%REQ%", pos: 0, op: "%REQ%", reason: "REQ needs an argument"},
	{format: "%REQ()%", pos: 0, op: "%REQ()%", reason: "REQ needs an argument"},
	{format: "%RESP(A?B?C)%", pos: 9, op: "%RESP(A?B?C)%", reason: "more than one alternative header"},
	{format: "%REQ(A?)%", pos: 5, op: "%REQ(A?)%", reason: "empty header name"},
	{format: "%REQ(?A)%", pos: 5, op: "%REQ(?A)%", reason: "empty header name"},
	{format: "%REQ(X FOO)%", pos: 6, op: "%REQ(X FOO)%", reason: "invalid character ' ' in header name"},
	{format: "%DURATION(ms)%", pos: 0, op: "%DURATION(ms)%", reason: "DURATION takes no argument"},
	{format: "%REQ(USER-AGENT):0%", pos: 0, op: "%REQ(USER-AGENT):0%", reason: "truncation length"},
	{format: "%REQ(USER-AGENT):%", pos: 0, op: "%REQ(USER-AGENT):%", reason: "truncation length"},
	{format: "%START_TIME(%Y-%Q)%", pos: 15, op: "%START_TIME(%Y-%Q)%", reason: `unsupported START_TIME specifier "%Q"`},
	{format: "%START_TIME(%Y%)%", pos: 14, op: "%START_TIME(%Y%)%", reason: "lone '%'"},
	{format: "%ENVIRONMENT%", pos: 0, op: "%ENVIRONMENT%", reason: "needs an argument"},
}

func TestParseTextErrors(t *testing.T) {
	for _, tc := range textErrorCases {
		t.Run(tc.format, func(t *testing.T) {
			f, err := ParseText(tc.format)
			if f != nil {
				t.Errorf("ParseText(%q) returned a formatter with error %v; want none", tc.format, err)
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("ParseText(%q) error = %v, want a *FormatError", tc.format, err)
			}
			if fe.Pos != tc.pos || fe.Operator != tc.op || !strings.Contains(fe.Reason, tc.reason) {
				t.Errorf("ParseText(%q) = {Pos:%d Operator:%q Reason:%q}, want {Pos:%d Operator:%q Reason containing %q}",
					tc.format, fe.Pos, fe.Operator, fe.Reason, tc.pos, tc.op, tc.reason)
			}
			if tc.wantMsg != "" && err.Error() != tc.wantMsg {
				t.Errorf("ParseText(%q) error text = %q, want %q", tc.format, err.Error(), tc.wantMsg)
			}
		})
	}
}

func TestRBACDeniedDetails(t *testing.T) {
	tests := []struct{ policy, want string }{
		{"ns[foo]-policy[deny-get]-rule[0]", "rbac_access_denied_matched_policy[ns[foo]-policy[deny-get]-rule[0]]"},
		{"", "rbac_access_denied_matched_policy[none]"},
		{"odd name\twith spaces", "rbac_access_denied_matched_policy[odd_name_with_spaces]"},
	}
	for _, tc := range tests {
		if got := RBACDeniedDetails(tc.policy); got != tc.want {
			t.Errorf("RBACDeniedDetails(%q) = %q, want %q", tc.policy, got, tc.want)
		}
	}
}

func TestTimeFormatYearPadding(t *testing.T) {
	f, err := ParseText("%START_TIME(%Y|%F)%")
	if err != nil {
		t.Fatal(err)
	}
	e := &Entry{StartTime: time.Date(33, 1, 2, 3, 4, 5, 0, time.UTC)}
	if got, want := string(f.Append(nil, e)), "0033|0033-01-02"; got != want {
		t.Errorf("year 33 = %q, want %q", got, want)
	}
	// Non-UTC start times are printed in UTC, as Envoy does.
	e.StartTime = time.Date(2026, 3, 14, 23, 30, 0, 0, time.FixedZone("X", -2*3600))
	f2, _ := ParseText("%START_TIME%")
	if got, want := string(f2.Append(nil, e)), "2026-03-15T01:30:00.000Z"; got != want {
		t.Errorf("zoned start time = %q, want %q", got, want)
	}
}
