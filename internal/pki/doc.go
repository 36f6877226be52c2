// Package pki owns meshguard's X.509 building blocks: key types and generation, CSRs,
// certificate templates for roots and intermediates, PEM encoding and parsing, chain
// checks, Istio's plug-in CA directory (ca-cert.pem, ca-key.pem, cert-chain.pem,
// root-cert.pem), and atomic 0600 file writes. It is stateless, opens no sockets and
// imports only identity from meshguard; every function is safe for concurrent use.
package pki
