// Package meshtest is test-only support: a test CA, and real servers started on
// 127.0.0.1:0 — the control plane, agents, sidecars, echo backends, a JWKS server — plus
// network-namespace helpers. Every helper takes testing.TB and cleans up after itself.
// Nothing outside _test.go files imports it (internal/archtest enforces this).
package meshtest
