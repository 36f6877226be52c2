package accesslog

import (
	"errors"
	"strings"
	"testing"

	meshconfig "istio.io/api/mesh/v1alpha1"
)

// istioTextFormat is Istio's EnvoyTextLogFormat, copied from Istio's
// pilot/pkg/model/telemetry_logging.go in one piece so a typo in DefaultTextFormat
// cannot hide.
const istioTextFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%` + "\n"

func TestFormatterFor(t *testing.T) {
	tests := []struct {
		name     string
		encoding meshconfig.MeshConfig_AccessLogEncoding
		format   string
		want     string // String() of the result
		wantErr  string
	}{
		{"text default is Istio's", meshconfig.MeshConfig_TEXT, "", istioTextFormat, ""},
		{"json default is Istio's", meshconfig.MeshConfig_JSON, "", DefaultJSONFormat, ""},
		{"newline added like Istio", meshconfig.MeshConfig_TEXT, "%DURATION%", "%DURATION%\n", ""},
		{"newline not doubled", meshconfig.MeshConfig_TEXT, "%DURATION%\n", "%DURATION%\n", ""},
		{"custom json", meshconfig.MeshConfig_JSON, `{"d":"%DURATION%"}`, `{"d":"%DURATION%"}`, ""},
		{"bad text", meshconfig.MeshConfig_TEXT, "%NOPE%", "", `meshConfig.accessLogFormat: access log format: position 0: command operator "%NOPE%": unknown command operator`},
		{"bad json", meshconfig.MeshConfig_JSON, `{"d":"%NOPE%"}`, "", `meshConfig.accessLogFormat: access log format: key "d": position 0: command operator "%NOPE%": unknown command operator`},
		{"text format given as JSON encoding", meshconfig.MeshConfig_JSON, "[%START_TIME%]", "", "JSON format must be a JSON object"},
		{"bad encoding", meshconfig.MeshConfig_AccessLogEncoding(7), "", "", "meshConfig.accessLogEncoding: unsupported value 7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := FormatterFor(tc.encoding, tc.format)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || f != nil {
					t.Fatalf("FormatterFor(%v, %q) = %v, %v; want no formatter and error containing %q", tc.encoding, tc.format, f, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("FormatterFor(%v, %q): %v", tc.encoding, tc.format, err)
			}
			if f.String() != tc.want {
				t.Errorf("FormatterFor(%v, %q).String() =\n%q\nwant\n%q", tc.encoding, tc.format, f.String(), tc.want)
			}
		})
	}
	if DefaultTextFormat != istioTextFormat {
		t.Errorf("DefaultTextFormat =\n%q\nwant Istio's\n%q", DefaultTextFormat, istioTextFormat)
	}
}

func TestFromMeshConfig(t *testing.T) {
	w, err := FromMeshConfig(&meshconfig.MeshConfig{}, WriterOptions{})
	if w != nil || err != nil {
		t.Errorf("FromMeshConfig(no accessLogFile) = %v, %v; want nil, nil (access log off)", w, err)
	}
	w, err = FromMeshConfig(nil, WriterOptions{})
	if w != nil || err != nil {
		t.Errorf("FromMeshConfig(nil) = %v, %v; want nil, nil", w, err)
	}
	w, err = FromMeshConfig(&meshconfig.MeshConfig{AccessLogFile: "/dev/stdout", AccessLogFormat: "%BAD"}, WriterOptions{})
	var fe *FormatError
	if w != nil || !errors.As(err, &fe) {
		t.Errorf("FromMeshConfig(bad format) = %v, %v; want nil and a *FormatError", w, err)
	}
	w, err = FromMeshConfig(&meshconfig.MeshConfig{AccessLogFile: "/dev/stdout", AccessLogEncoding: meshconfig.MeshConfig_JSON}, WriterOptions{})
	if err != nil || w == nil {
		t.Fatalf("FromMeshConfig(stdout, JSON) = %v, %v", w, err)
	}
	if _, ok := w.format.(*JSONFormat); !ok {
		t.Errorf("FromMeshConfig(JSON) formatter is %T, want *JSONFormat", w.format)
	}
}
