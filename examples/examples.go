package examples

import (
	"embed"
	"fmt"
	"io/fs"
)

// files is read-only data compiled into the binary.
//
//go:embed */*.yaml
var files embed.FS

// Paths of the example files, relative to this directory.
const (
	// Registry is the bookinfo-like application's ServiceEntries and WorkloadEntries.
	Registry = "bookinfo/registry.yaml"
	// PeerAuthenticationStrict is the seeds' namespace-wide STRICT PeerAuthentication.
	PeerAuthenticationStrict = "mtls/peer-authentication-strict.yaml"
	// DestinationRuleIstioMutual is the seeds' ISTIO_MUTUAL DestinationRule.
	DestinationRuleIstioMutual = "mtls/destination-rule-istio-mutual.yaml"
	// ReviewsAccess is the seeds' AuthorizationPolicy reviews-access.
	ReviewsAccess = "authz/reviews-access.yaml"
	// AllowNothing denies everything in namespace default (docs only).
	AllowNothing = "authz/allow-nothing.yaml"
	// RatingsReadOnly lets only reviews GET ratings (docs only).
	RatingsReadOnly = "authz/ratings-read-only.yaml"
	// RequestAuthentication validates end-user JWTs sent to reviews.
	RequestAuthentication = "jwt/request-authentication.yaml"
	// RequireJWT denies requests to reviews without a valid JWT.
	RequireJWT = "jwt/require-jwt.yaml"
	// AccessLog turns on the access log in the seeds' custom format.
	AccessLog = "accesslog/mesh.yaml"
)

// Defaults written in the example files that `meshguard demo` replaces when the
// address it actually got differs.
const (
	// JWKSAddr is the JWKS server's address in RequestAuthentication's jwksUri.
	JWKSAddr = "127.0.0.1:15080"
	// Issuer is the JWT issuer RequestAuthentication trusts.
	Issuer = "https://issuer.demo.meshguard.local"
	// AccessLogFile is the accessLogFile of AccessLog.
	AccessLogFile = "/dev/stdout"
)

// RegistryPorts returns the sidecar inbound ports the Registry's WorkloadEntries name,
// by service.
func RegistryPorts() map[string]uint16 {
	return map[string]uint16{"productpage": 15106, "reviews": 15206, "ratings": 15306}
}

// FS returns the example files.
func FS() fs.FS { return files }

// Read returns one example file by its path (one of the constants above).
func Read(name string) ([]byte, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read example %s: %w", name, err)
	}
	return b, nil
}

// Names lists every example file, sorted.
func Names() []string {
	names, err := fs.Glob(files, "*/*.yaml")
	if err != nil { // only on a malformed pattern, which this is not
		panic(err)
	}
	return names
}
