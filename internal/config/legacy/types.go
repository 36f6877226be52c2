package legacy

// The spec of authentication.istio.io/v1alpha1 Policy and MeshPolicy as Istio 1.0–1.5
// defined it (istio.io/api authentication/v1alpha1/policy.proto), field for field.
// istio.io/api no longer ships Go types for it. Decoding is strict (decodeStrict): a
// field not declared here is an error. Each JSON name is also accepted in the proto's
// snake_case spelling (trigger_rules), as Istio's own JSON decoding accepted both. A
// pointer is non-nil when its key was given, even as null: `- mtls:` is an mTLS method
// with default parameters, as Istio read it.

// Policy is the spec of a Policy or MeshPolicy.
type Policy struct {
	// Targets selects services by name (and port) in the policy's namespace; empty
	// means every workload of the namespace (mesh for MeshPolicy).
	Targets []TargetSelector `json:"targets"`
	// Peers are the peer (transport) authentication methods; empty means none.
	Peers []PeerAuthenticationMethod `json:"peers"`
	// PeerIsOptional accepts a request whose peer authentication failed.
	PeerIsOptional bool `json:"peerIsOptional"`
	// Origins are the origin (end-user JWT) methods; a request must pass one of those
	// its path triggers.
	Origins []OriginAuthenticationMethod `json:"origins"`
	// OriginIsOptional accepts a request whose origin authentication failed.
	OriginIsOptional bool `json:"originIsOptional"`
	// PrincipalBinding is USE_PEER (the default) or USE_ORIGIN.
	PrincipalBinding string `json:"principalBinding"`
}

// TargetSelector names a service of the policy's namespace, optionally some of its ports.
type TargetSelector struct {
	Name string `json:"name"`
	// Labels was declared but never implemented by Istio.
	Labels map[string]string `json:"labels"`
	// Ports are service ports (not workload ports); empty means all of them.
	Ports []PortSelector `json:"ports"`
}

// PortSelector is one service port by number or by name (a oneof).
type PortSelector struct {
	Number *uint32 `json:"number"`
	Name   *string `json:"name"`
}

// PeerAuthenticationMethod is a oneof: mtls, or jwt (hidden in Istio's docs as "not yet
// available").
type PeerAuthenticationMethod struct {
	MTLS *MutualTLS `json:"mtls"`
	JWT  *JWT       `json:"jwt"`
}

// MutualTLS is the mtls peer method.
type MutualTLS struct {
	// AllowTLS (deprecated in 1.0) accepted TLS without a client certificate.
	AllowTLS bool `json:"allowTls"`
	// Mode is STRICT (the default) or PERMISSIVE.
	Mode string `json:"mode"`
}

// OriginAuthenticationMethod is an origin method: only JWT existed.
type OriginAuthenticationMethod struct {
	JWT *JWT `json:"jwt"`
}

// JWT describes the tokens one issuer signs and where requests carry them.
type JWT struct {
	Issuer    string   `json:"issuer"`
	Audiences []string `json:"audiences"`
	JwksURI   string   `json:"jwksUri"`
	Jwks      string   `json:"jwks"`
	// JwtHeaders and JwtParams replace the default locations (Authorization: Bearer and
	// the access_token query parameter) when either is given.
	JwtHeaders []string `json:"jwtHeaders"`
	JwtParams  []string `json:"jwtParams"`
	// TriggerRules limit by path where the token is checked; any matching rule
	// triggers, none means always.
	TriggerRules []TriggerRule `json:"triggerRules"`
}

// TriggerRule matches a path (query and fragment removed) that matches no excluded
// path and, when includedPaths is given, at least one included path.
type TriggerRule struct {
	ExcludedPaths []StringMatch `json:"excludedPaths"`
	IncludedPaths []StringMatch `json:"includedPaths"`
}

// StringMatch is a oneof: exact, prefix, suffix or (ECMAScript) regex.
type StringMatch struct {
	Exact  *string `json:"exact"`
	Prefix *string `json:"prefix"`
	Suffix *string `json:"suffix"`
	Regex  *string `json:"regex"`
}
