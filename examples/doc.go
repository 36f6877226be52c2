// Package examples holds the Istio YAML that `meshguard demo` applies and the docs
// show: one source of truth, embedded so that the demo binary carries it and tested so
// that every file passes `meshguard ctl validate` unchanged.
//
// It imports nothing of meshguard; the files are plain YAML that a user can copy,
// edit and apply. The package is safe for concurrent use (read-only data).
package examples
