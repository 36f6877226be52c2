// Package accesslog owns the sidecar's access log: a compiler for Envoy's format
// language (command operators such as %START_TIME%, %REQ(X?Y):Z% and
// %DOWNSTREAM_PEER_URI_SAN%) into TEXT and JSON encoders, Istio's default formats
// byte for byte, the MeshConfig binding (accessLogFile, accessLogFormat,
// accessLogEncoding), and a non-blocking Writer that drops and counts entries rather
// than stall the data path and reopens its file on demand (SIGHUP, logrotate).
//
// It imports no other meshguard package: the proxy fills an Entry per HTTP request or
// TCP connection and hands it to a Writer. The access log is a data product of its own,
// never routed through slog.
//
// Concurrency: a compiled Formatter is immutable and safe for concurrent use.
// Writer.Log, Writer.Reopen and Writer.Dropped may be called from any goroutine;
// Writer.Run runs once, in its own goroutine.
package accesslog
