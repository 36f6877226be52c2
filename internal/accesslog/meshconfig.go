package accesslog

import (
	"fmt"
	"strings"

	meshconfig "istio.io/api/mesh/v1alpha1"
)

// DefaultTextFormat is Istio's default TEXT access-log format, byte for byte
// (EnvoyTextLogFormat in Istio's pilot/pkg/model/telemetry_logging.go).
const DefaultTextFormat = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% " +
	"%PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% " +
	"%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% " +
	"\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% " +
	"%DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" " +
	"\"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" " +
	"%UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% " +
	"%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"

// DefaultJSONFormat is Istio's default JSON access-log format (EnvoyJSONLogFormatIstio):
// the same keys and operators, written here with sorted keys.
const DefaultJSONFormat = `{` +
	`"authority":"%REQ(:AUTHORITY)%",` +
	`"bytes_received":"%BYTES_RECEIVED%",` +
	`"bytes_sent":"%BYTES_SENT%",` +
	`"connection_termination_details":"%CONNECTION_TERMINATION_DETAILS%",` +
	`"downstream_local_address":"%DOWNSTREAM_LOCAL_ADDRESS%",` +
	`"downstream_remote_address":"%DOWNSTREAM_REMOTE_ADDRESS%",` +
	`"duration":"%DURATION%",` +
	`"method":"%REQ(:METHOD)%",` +
	`"path":"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",` +
	`"protocol":"%PROTOCOL%",` +
	`"request_id":"%REQ(X-REQUEST-ID)%",` +
	`"requested_server_name":"%REQUESTED_SERVER_NAME%",` +
	`"response_code":"%RESPONSE_CODE%",` +
	`"response_code_details":"%RESPONSE_CODE_DETAILS%",` +
	`"response_flags":"%RESPONSE_FLAGS%",` +
	`"route_name":"%ROUTE_NAME%",` +
	`"start_time":"%START_TIME%",` +
	`"upstream_cluster":"%UPSTREAM_CLUSTER_RAW%",` +
	`"upstream_host":"%UPSTREAM_HOST%",` +
	`"upstream_local_address":"%UPSTREAM_LOCAL_ADDRESS%",` +
	`"upstream_service_time":"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",` +
	`"upstream_transport_failure_reason":"%UPSTREAM_TRANSPORT_FAILURE_REASON%",` +
	`"user_agent":"%REQ(USER-AGENT)%",` +
	`"x_forwarded_for":"%REQ(X-FORWARDED-FOR)%"` +
	`}`

// FormatterFor compiles meshConfig.accessLogFormat for meshConfig.accessLogEncoding the
// way Istio does: an empty format means Istio's default for the encoding, and a TEXT
// format gets a trailing newline if it lacks one. Unlike Istio, which logs and falls
// back to the default, a format that does not compile is an error: the caller keeps
// its last good configuration.
func FormatterFor(encoding meshconfig.MeshConfig_AccessLogEncoding, format string) (Formatter, error) {
	switch encoding {
	case meshconfig.MeshConfig_TEXT:
		if format == "" {
			format = DefaultTextFormat
		} else if !strings.HasSuffix(format, "\n") {
			format += "\n"
		}
		f, err := ParseText(format)
		if err != nil {
			return nil, fmt.Errorf("meshConfig.accessLogFormat: %w", err)
		}
		return f, nil
	case meshconfig.MeshConfig_JSON:
		if format == "" {
			format = DefaultJSONFormat
		}
		f, err := ParseJSON(format)
		if err != nil {
			return nil, fmt.Errorf("meshConfig.accessLogFormat: %w", err)
		}
		return f, nil
	}
	return nil, fmt.Errorf("meshConfig.accessLogEncoding: unsupported value %d (want TEXT or JSON)", int32(encoding))
}

// FromMeshConfig builds the Writer that MeshConfig asks for: accessLogFile (empty = no
// access log, and FromMeshConfig returns nil, nil; "/dev/stdout" = opts.Stdout),
// accessLogFormat and accessLogEncoding. The Writer is not running yet: the caller
// runs it with Run(ctx).
func FromMeshConfig(mc *meshconfig.MeshConfig, opts WriterOptions) (*Writer, error) {
	if mc == nil || mc.GetAccessLogFile() == "" {
		return nil, nil
	}
	f, err := FormatterFor(mc.GetAccessLogEncoding(), mc.GetAccessLogFormat())
	if err != nil {
		return nil, err
	}
	return NewWriter(mc.GetAccessLogFile(), f, opts)
}
