// Package config owns Istio configuration as meshguard reads it: the Object and Snapshot
// model over istio.io/api types, strict multi-document YAML decoding with kind dispatch,
// the MeshConfig (from an IstioOperator's spec.meshConfig or the istio ConfigMap's mesh
// key), validation as Istio's webhook does it with errors of the form
// FILE:DOC_INDEX: KIND NAMESPACE/NAME: FIELD: reason, and the ConfigStore interface
// (list + watch) that the directory and Kubernetes stores implement. Objects and
// Snapshots are immutable after construction and safe to share between goroutines.
package config
