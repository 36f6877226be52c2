// Package legacy owns Istio 1.0's authentication policies, the
// authentication.istio.io/v1alpha1 Policy (one namespace, or the services its targets
// name) and MeshPolicy (the mesh): their Go types, decoded strictly (an unknown field is
// an error), and their translation into today's PeerAuthentication,
// RequestAuthentication and AuthorizationPolicy. Translator plugs into
// config.Loader.Translator, so every configuration load reads the old kinds; Convert
// and Encode are `meshguard ctl convert`. Each converted object gets one warning that
// names its replacements.
//
// A field converts only when the modern objects have the same effect; otherwise the
// whole object is refused with a problem naming the field and why. Never weaker, and
// where the modern model is unavoidably stricter, a warning says so.
//
//	old field                          modern equivalent, or why refused
//	---------------------------------  --------------------------------------------------------
//	MeshPolicy (named default)         objects in the root namespace: mesh-wide
//	Policy without targets (default)   objects without selector in its namespace
//	Policy in the root namespace       refused: there modern objects bind the whole mesh
//	targets[].name                     selector = the named Service's spec.selector; the
//	                                   Service manifest must be in the input, else refused
//	                                   (no service registry maps names to labels);
//	                                   several targets: one set of objects per service,
//	                                   named POLICY-SERVICE
//	targets[].ports[number|name]       PeerAuthentication portLevelMtls keyed by the
//	                                   Service's targetPort (named targetPort: refused);
//	                                   with origins: refused (JWT cannot be per port)
//	targets[].labels                   refused: Istio never implemented it
//	a service named by two Policies    refused: Istio applied one, chosen arbitrarily
//	peers: [] (none)                   PeerAuthentication mode DISABLE: no peer authn
//	peers[].mtls (null, {}, STRICT)    mode STRICT
//	peers[].mtls.mode PERMISSIVE       mode PERMISSIVE
//	peers[].mtls.allowTls true         refused: TLS without client cert has no mode
//	peers[].jwt, a second peer method  refused: never available / one mode only
//	peerIsOptional true                refused (ignored with a warning when no peers)
//	origins[].jwt issuer, audiences,   RequestAuthentication jwtRules[] with the same
//	jwksUri, jwks, jwtParams           fields, forwardOriginalToken: true (Istio 1.0
//	                                   forwarded the token to the app)
//	origins[].jwt.jwtHeaders           fromHeaders[].name, no prefix (the raw token);
//	                                   ingress-authorization: refused (prefix varied)
//	origins (required token)           AuthorizationPolicy POLICY-require-jwt, DENY,
//	                                   from.source.notRequestPrincipals ["*"]
//	triggerRules[] included/excluded   one DENY rule per trigger rule: to.operation.paths
//	  exact / prefix / suffix          = included, notPaths = excluded: "p", "p*", "*p";
//	                                   values holding '*', '{' or '}': refused
//	  regex                            refused: no regex path match in the modern API
//	  differing between origins        refused: a modern token of any issuer passes
//	originIsOptional true              refused: Istio then accepted invalid tokens too
//	principalBinding USE_PEER          nothing to convert: modern rules name
//	principalBinding USE_ORIGIN        principals and requestPrincipals explicitly (it
//	                                   never decided acceptance); USE_ORIGIN without
//	                                   origins: refused (Istio failed every request)
//	wider policy with origins, plus    refused: Istio applied only the narrowest policy
//	a narrower Policy that overrides   whole; the modern JWT objects would add up
//
// Stricter than Istio 1.0, by construction of the modern API (warned where it applies):
// a RequestAuthentication rejects an invalid token on every path, including paths the
// trigger rules excluded; a DENY rule on request principals also denies plain TCP
// traffic to the selected workloads, which origin authentication never looked at; and
// CORS preflight requests need a token too. Jwt audiences left empty are not checked,
// in both APIs.
//
// This package imports config, never the other way round; it holds no state.
package legacy
