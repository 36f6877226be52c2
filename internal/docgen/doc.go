// Package docgen renders the command-line reference (docs/reference/cli.md) from the
// cobra command tree, so that the reference is never written by hand and a test fails
// when the committed file is stale. Regenerate with
//
//	go test ./internal/docgen -run TestCLIReference -update
//
// It takes the tree as a *cobra.Command and imports nothing of meshguard; only its test
// imports internal/cli to build the real tree. Rendering is pure and deterministic.
package docgen
