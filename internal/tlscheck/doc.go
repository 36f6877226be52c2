// Package tlscheck is `meshguard ctl tls-check`, the proof that mTLS is on: it reads a
// sidecar admin's live connections (/debug/connections, proxy.ConnInfo in JSON) and
// says for each inbound and outbound connection what protects it — mTLS, one-way TLS,
// plaintext accepted under PERMISSIVE, plaintext under DISABLE — with the TLS version,
// cipher suite and key exchange (flagging post-quantum hybrids such as
// X25519MLKEM768), both SPIFFE IDs and the policy that admitted it.
//
// The admin JSON is parsed as untrusted input: malformed documents are errors, never a
// partial list. The package imports proxy only for the ConnInfo type, the contract
// with the sidecar. It holds no state; every function is safe for concurrent use.
package tlscheck
