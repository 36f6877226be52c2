// Package config owns Istio configuration as meshguard reads it: the Object and Snapshot
// model over istio.io/api types, strict multi-document YAML decoding with kind dispatch,
// the MeshConfig (from an IstioOperator's spec.meshConfig or the istio ConfigMap's mesh
// key), validation as Istio's webhook does it with errors of the form
// FILE:DOC_INDEX: KIND NAMESPACE/NAME: FIELD: reason, and the ConfigStore interface
// (list + watch) that the directory and Kubernetes stores implement. Objects and
// Snapshots are immutable after construction and safe to share between goroutines.
//
// Decisions worth knowing:
//   - An object without metadata.namespace gets Loader.DefaultNamespace, "default"
//     unless set, as `kubectl apply` would give it.
//   - DOC_INDEX counts a file's non-empty YAML documents from 0; a leading "---" or a
//     document of comments only does not shift it.
//   - Unknown fields are errors everywhere (spec, metadata, top level, MeshConfig);
//     enums must be given by name; durations may be written as Istio users write them
//     ("30ms", "1m30s"). Kinds meshguard does not use are skipped with a warning.
//   - The mesh config is Istio's defaults merged with what the user gave, with Istio's
//     merge rules. The istio ConfigMap counts only in the root namespace (istio-system,
//     or the rootNamespace of an IstioOperator's meshConfig); giving the mesh config
//     twice is an error.
//   - Loading is all or nothing: a Problems error and no Snapshot, or a complete one.
//   - Where meshguard is stricter than Istio's webhook (a '*' inside a match value,
//     present-but-empty lists, AUDIT without rules, port 0, a CUSTOM provider missing
//     from the mesh config, experimental.envoy.filters.* condition keys, which read
//     Envoy metadata meshguard does not have) the check fails closed and the message
//     says why.
//
// This package imports no other meshguard package.
package config
