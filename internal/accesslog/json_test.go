package accesslog

import (
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// istioDefaultJSON is Istio's EnvoyJSONLogFormatIstio as a key → operator table,
// copied field by field from Istio's pilot/pkg/model/telemetry_logging.go.
var istioDefaultJSON = map[string]string{
	"start_time":                        "%START_TIME%",
	"route_name":                        "%ROUTE_NAME%",
	"method":                            "%REQ(:METHOD)%",
	"path":                              "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol":                          "%PROTOCOL%",
	"response_code":                     "%RESPONSE_CODE%",
	"response_flags":                    "%RESPONSE_FLAGS%",
	"response_code_details":             "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"bytes_received":                    "%BYTES_RECEIVED%",
	"bytes_sent":                        "%BYTES_SENT%",
	"duration":                          "%DURATION%",
	"upstream_service_time":             "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	"x_forwarded_for":                   "%REQ(X-FORWARDED-FOR)%",
	"user_agent":                        "%REQ(USER-AGENT)%",
	"request_id":                        "%REQ(X-REQUEST-ID)%",
	"authority":                         "%REQ(:AUTHORITY)%",
	"upstream_host":                     "%UPSTREAM_HOST%",
	"upstream_cluster":                  "%UPSTREAM_CLUSTER_RAW%",
	"upstream_local_address":            "%UPSTREAM_LOCAL_ADDRESS%",
	"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
	"requested_server_name":             "%REQUESTED_SERVER_NAME%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

func TestDefaultJSONFormatIsIstios(t *testing.T) {
	var got map[string]string
	if err := json.Unmarshal([]byte(DefaultJSONFormat), &got); err != nil {
		t.Fatalf("DefaultJSONFormat is not JSON: %v", err)
	}
	if diff := cmp.Diff(istioDefaultJSON, got); diff != "" {
		t.Errorf("DefaultJSONFormat differs from Istio's (-istio +ours):\n%s", diff)
	}
	f, err := ParseJSON(DefaultJSONFormat)
	if err != nil {
		t.Fatalf("ParseJSON(DefaultJSONFormat): %v", err)
	}
	if f.String() != DefaultJSONFormat {
		t.Errorf("ParseJSON(DefaultJSONFormat).String() =\n%s\nwant\n%s", f.String(), DefaultJSONFormat)
	}
}

// decode renders e with f and decodes the line, failing on invalid JSON.
func decode(t *testing.T, f Formatter, e *Entry) map[string]any {
	t.Helper()
	line := f.Append(nil, e)
	if !strings.HasSuffix(string(line), "}\n") || strings.Count(string(line), "\n") != 1 {
		t.Fatalf("JSON entry is not exactly one line: %q", line)
	}
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("JSON entry %q does not decode: %v", line, err)
	}
	return m
}

func TestJSONTypedValues(t *testing.T) {
	f, err := ParseJSON(DefaultJSONFormat)
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, f, httpEntry())
	want := map[string]any{
		"authority":                         "productpage.bookinfo:9080",
		"bytes_received":                    json.Number("0"),
		"bytes_sent":                        json.Number("5293"),
		"connection_termination_details":    nil,
		"downstream_local_address":          "10.244.0.9:9080",
		"downstream_remote_address":         "10.244.0.7:53820",
		"duration":                          json.Number("12"),
		"method":                            "GET",
		"path":                              "/productpage?u=normal",
		"protocol":                          "HTTP/1.1",
		"request_id":                        "3f6c2a57-5c1e-4d8e-9b2a-1f0e7c9d4b21",
		"requested_server_name":             "outbound_.9080_._.productpage.bookinfo.svc.cluster.local",
		"response_code":                     json.Number("200"),
		"response_code_details":             "via_upstream",
		"response_flags":                    "-",
		"route_name":                        "default",
		"start_time":                        "2026-03-14T09:26:53.589Z",
		"upstream_cluster":                  "inbound|9080||",
		"upstream_host":                     "127.0.0.1:9080",
		"upstream_local_address":            "127.0.0.6:46531",
		"upstream_service_time":             "9",
		"upstream_transport_failure_reason": nil,
		"user_agent":                        "curl/8.7.1",
		"x_forwarded_for":                   "10.1.2.3",
		"audit_policy":                      "ns[bookinfo]-policy[audit-all]-rule[0]",
	}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("default JSON for an allowed request (-want +got):\n%s", diff)
	}

	d := decode(t, f, deniedEntry())
	if d["policy"] != "ns[bookinfo]-policy[deny-delete]-rule[0]" {
		t.Errorf("denied entry policy = %v, want the deciding policy", d["policy"])
	}
	if d["response_code_details"] != "rbac_access_denied_matched_policy[ns[bookinfo]-policy[deny-delete]-rule[0]]" {
		t.Errorf("denied entry response_code_details = %v", d["response_code_details"])
	}
	if _, ok := m["policy"]; ok {
		t.Errorf("allowed entry has a policy key: %v", m["policy"])
	}
	if p := decode(t, f, &Entry{Authz: Authz{Denied: true}})["policy"]; p != "none" {
		t.Errorf("denial without matching policy: policy = %v, want none", p)
	}
	if p := decode(t, f, &Entry{Authz: Authz{DryRunPolicy: "ns[a]-policy[b]-rule[0]"}})["dry_run_policy"]; p != "ns[a]-policy[b]-rule[0]" {
		t.Errorf("dry-run entry: dry_run_policy = %v", p)
	}
	// TCP: PROTOCOL stays the string "-", as Envoy renders it in typed JSON.
	if p := decode(t, f, tcpEntry())["protocol"]; p != "-" {
		t.Errorf("tcp protocol = %#v, want \"-\"", p)
	}
}

func TestJSONCustomFormats(t *testing.T) {
	tests := []struct {
		name, format string
		entry        func() *Entry
		want         string
	}{
		{"mixed text is a string with dashes", `{"line":"%REQ(:METHOD)% %REQ(X-MISSING)% %RESPONSE_CODE%"}`, httpEntry,
			`{"audit_policy":"ns[bookinfo]-policy[audit-all]-rule[0]","line":"GET - 200"}`},
		{"keys are sorted, nesting works", `{"z":"%DURATION%","a":{"peer":"%DOWNSTREAM_PEER_URI_SAN%","code":"%RESPONSE_CODE%"},"m":7,"t":true,"n":null}`, tcpEntry,
			`{"a":{"code":0,"peer":null},"m":7,"n":null,"t":true,"z":3004}`},
		{"user policy key wins", `{"policy":"%RESPONSE_CODE_DETAILS%"}`, deniedEntry,
			`{"policy":"rbac_access_denied_matched_policy[ns[bookinfo]-policy[deny-delete]-rule[0]]"}`},
		{"escaping and truncation", `{"ua":"%REQ(USER-AGENT):3%","q":"\"%REQ(:PATH)%\""}`,
			func() *Entry {
				return &Entry{Path: "/a\"b\\c\n\x01", RequestHeaders: map[string][]string{"User-Agent": {"é\xffxyz"}}}
			},
			`{"q":"\"/a\"b\\c\n\u0001\"","ua":"é\ufffd"}`},
		{"number truncation stays a number", `{"d":"%BYTES_SENT:2%"}`, httpEntry, `{"audit_policy":"ns[bookinfo]-policy[audit-all]-rule[0]","d":52}`},
		{"empty object", `{}`, tcpEntry, `{}`},
		{"literal string", `{"kind":"sidecar"}`, tcpEntry, `{"kind":"sidecar"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseJSON(tc.format)
			if err != nil {
				t.Fatalf("ParseJSON(%q): %v", tc.format, err)
			}
			if got := string(f.Append(nil, tc.entry())); got != tc.want+"\n" {
				t.Errorf("ParseJSON(%q).Append =\n %s\nwant\n %s", tc.format, got, tc.want)
			}
			if !json.Valid(f.Append(nil, tc.entry())) {
				t.Errorf("output is not valid JSON")
			}
		})
	}
}

func TestParseJSONErrors(t *testing.T) {
	tests := []struct {
		format, key, reason string
		pos                 int
	}{
		{`not json`, "", "not valid JSON", -1},
		{`["%DURATION%"]`, "", "must be a JSON object", -1},
		{`"%DURATION%"`, "", "must be a JSON object", -1},
		{`{"a":"%DURATION%"} {}`, "", "data after", -1},
		{`{"a":"%DURATION%","a":"%BYTES_SENT%"}`, "a", "duplicate key", -1},
		{`{"a":{"b":"%NOPE%"}}`, "a.b", "unknown command operator", 0},
		{`{"a":{"b":["x"]}}`, "a.b", "lists are not supported", -1},
		{`{"path":"x %REQ(:PATH"}`, "path", "missing ')'", 2},
		{`{"a":"%DURATION%"`, "", "not valid JSON", -1},
	}
	for _, tc := range tests {
		t.Run(tc.format, func(t *testing.T) {
			f, err := ParseJSON(tc.format)
			if f != nil {
				t.Errorf("ParseJSON(%q) returned a formatter with error %v", tc.format, err)
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("ParseJSON(%q) error = %v, want *FormatError", tc.format, err)
			}
			if fe.Key != tc.key || fe.Pos != tc.pos || !strings.Contains(fe.Reason, tc.reason) {
				t.Errorf("ParseJSON(%q) = %q, want key %q pos %d reason containing %q", tc.format, err, tc.key, tc.pos, tc.reason)
			}
		})
	}
}

func TestJSONStringRoundTrip(t *testing.T) {
	in := `{"b":{"y":"%%x %REQ(A?B):3%","x":1.5},"a":"%START_TIME(%s.%3f)%"}`
	f, err := ParseJSON(in)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"a":"%START_TIME(%s.%3f)%","b":{"x":1.5,"y":"%%x %REQ(A?B):3%"}}`
	if f.String() != want {
		t.Errorf("String() = %s, want %s", f.String(), want)
	}
	keys := []string{}
	for k := range istioDefaultJSON {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !strings.HasPrefix(DefaultJSONFormat, `{"`+keys[0]) {
		t.Errorf("DefaultJSONFormat does not start with the first sorted key %q", keys[0])
	}
}
