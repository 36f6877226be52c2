// Package controlplane is the wiring of `meshguard controlplane`: it prepares the data
// directory, loads or creates the CA (self-signed root kept in the data directory, or an
// Istio plug-in CA directory validated first), publishes root-cert.pem, and serves the CA
// service over TLS gRPC with a serving certificate from the same CA (rotated at two
// thirds of its life). Client certificates are requested, not required, and verified
// against the trust bundle so that workloads can renew with their mesh certificate.
// Later services (xDS, admin) register on the same gRPC server through Config.Register.
//
// It may import any meshguard domain package; only cli and demo import it. New does all
// the checking and file I/O but starts nothing; Run(ctx) serves until ctx ends.
package controlplane
