package jwt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	security "istio.io/api/security/v1beta1"

	"github.com/meshguard/meshguard/internal/config"
)

// Defaults, as Istio and Envoy use them.
const (
	// DefaultRefreshInterval is how long a fetched JWKS is used before it is fetched
	// again (Istio's PILOT_JWT_PUB_KEY_REFRESH_INTERVAL).
	DefaultRefreshInterval = 20 * time.Minute
	// DefaultTimeout bounds one JWKS fetch when the rule sets no timeout.
	DefaultTimeout = 5 * time.Second
	// DefaultClockSkew is the leeway for exp and nbf (Envoy's clock_skew_seconds).
	DefaultClockSkew = 60 * time.Second
)

// allowedAlgorithms are the asymmetric JWS algorithms. "none" and HS256/384/512 are
// absent on purpose: a verifier that accepts them lets callers forge tokens.
var allowedAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// Options tune an Authenticator. The zero value is usable.
type Options struct {
	// HTTPClient fetches JWKS and discovery documents. Default: a client with its own
	// transport.
	HTTPClient *http.Client
	// Now is the clock for exp, nbf and cache ages. Default: time.Now.
	Now func() time.Time
	// RefreshInterval is how long fetched keys are cached. Default DefaultRefreshInterval.
	RefreshInterval time.Duration
	// ClockSkew is the leeway for exp and nbf. Default DefaultClockSkew.
	ClockSkew time.Duration
	// Logger receives JWKS refresh failures. Default: discard.
	Logger *slog.Logger
}

// Authenticator verifies the JWTs of one workload's RequestAuthentications.
type Authenticator struct {
	rules   []*rule
	client  *http.Client
	now     func() time.Time
	refresh time.Duration
	skew    time.Duration
	logger  *slog.Logger
}

type location struct {
	kind   byte // 'h' header, 'q' query parameter, 'c' cookie
	name   string
	prefix string // headers only
}

type rule struct {
	policy         string // namespace/name
	index          int
	issuer         string
	audiences      []string
	locations      []location
	forward        bool
	payloadHeader  string
	claimHeaders   []*security.ClaimToHeader
	spaceDelimited []string
	keys           *keySource
}

func (r *rule) String() string {
	return fmt.Sprintf("%s jwtRules[%d] (issuer %q)", r.policy, r.index, r.issuer)
}

// defaultLocations are Istio's when a rule names none: Authorization: Bearer, then the
// access_token query parameter.
var defaultLocations = []location{{kind: 'h', name: "Authorization", prefix: "Bearer "}, {kind: 'q', name: "access_token"}}

// New compiles the JWT rules of the RequestAuthentications that apply to a workload
// (internal/policy selects them). It fails on a rule it cannot use, naming the policy,
// the rule and the field. Keys are fetched lazily, on the first token that needs them.
func New(policies []*config.Object, opts Options) (*Authenticator, error) {
	a := &Authenticator{client: opts.HTTPClient, now: opts.Now, refresh: opts.RefreshInterval, skew: opts.ClockSkew, logger: opts.Logger}
	if a.client == nil {
		a.client = &http.Client{Transport: &http.Transport{Proxy: nil}}
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.refresh <= 0 {
		a.refresh = DefaultRefreshInterval
	}
	if a.skew <= 0 {
		a.skew = DefaultClockSkew
	}
	if a.logger == nil {
		a.logger = slog.New(slog.DiscardHandler)
	}
	shared := map[string]*keySource{} // one cache per jwksUri
	for _, o := range policies {
		spec := o.RequestAuthentication()
		if spec == nil {
			return nil, fmt.Errorf("%s %s: want a RequestAuthentication", o.Kind, o.Key())
		}
		for i, jr := range spec.GetJwtRules() {
			r, err := a.compileRule(o.Key(), i, jr, shared)
			if err != nil {
				return nil, err
			}
			a.rules = append(a.rules, r)
		}
	}
	return a, nil
}

func (a *Authenticator) compileRule(policy string, i int, jr *security.JWTRule, shared map[string]*keySource) (*rule, error) {
	field := func(f string) string {
		return fmt.Sprintf("RequestAuthentication %s: spec.jwtRules[%d].%s", policy, i, f)
	}
	r := &rule{
		policy: policy, index: i, issuer: jr.GetIssuer(), audiences: jr.GetAudiences(),
		forward: jr.GetForwardOriginalToken(), payloadHeader: jr.GetOutputPayloadToHeader(),
		claimHeaders: jr.GetOutputClaimToHeaders(), spaceDelimited: append([]string{"scope", "permission"}, jr.GetSpaceDelimitedClaims()...),
	}
	if r.issuer == "" {
		return nil, fmt.Errorf("%s: required", field("issuer"))
	}
	for _, h := range jr.GetFromHeaders() {
		if h.GetName() == "" {
			return nil, fmt.Errorf("%s: a header needs a name", field("fromHeaders"))
		}
		r.locations = append(r.locations, location{kind: 'h', name: h.GetName(), prefix: h.GetPrefix()})
	}
	for _, p := range jr.GetFromParams() {
		r.locations = append(r.locations, location{kind: 'q', name: p})
	}
	for _, c := range jr.GetFromCookies() {
		r.locations = append(r.locations, location{kind: 'c', name: c})
	}
	if len(r.locations) == 0 {
		r.locations = defaultLocations
	}
	timeout := DefaultTimeout
	if d := jr.GetTimeout(); d != nil && d.AsDuration() > 0 {
		timeout = d.AsDuration()
	}
	switch {
	case jr.GetJwks() != "" && jr.GetJwksUri() != "":
		return nil, fmt.Errorf("%s: set only one of jwks and jwksUri", field("jwks"))
	case jr.GetJwks() != "":
		set, err := parseJWKS([]byte(jr.GetJwks()), field("jwks"))
		if err != nil {
			return nil, err
		}
		r.keys = &keySource{inline: set}
	case jr.GetJwksUri() != "":
		u := jr.GetJwksUri()
		if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
			return nil, fmt.Errorf("%s: %q must be an http:// or https:// URL", field("jwksUri"), u)
		}
		if ks, ok := shared[u]; ok {
			r.keys = ks
		} else {
			r.keys = &keySource{uri: u, timeout: timeout, a: a}
			shared[u] = r.keys
		}
	default:
		d := discoveryURL(r.issuer)
		if d == "" {
			return nil, fmt.Errorf("%s: no jwks or jwksUri, and issuer %q is not a URL to discover keys from", field("jwksUri"), r.issuer)
		}
		r.keys = &keySource{discovery: d, timeout: timeout, a: a}
	}
	return r, nil
}

// Result is the outcome of a request's JWT authentication.
type Result struct {
	// Authenticated is false when the request carried no token: it goes on
	// unauthenticated and authorization decides.
	Authenticated bool
	Issuer        string
	Subject       string
	// Principal is request.auth.principal: "<iss>/<sub>".
	Principal string
	// Audiences is request.auth.audiences.
	Audiences []string
	// Presenter is request.auth.presenter (azp).
	Presenter string
	// Claims is the verified payload for request.auth.claims[…]. Space-delimited claims
	// (scope, permission, and the rule's spaceDelimitedClaims) are split into lists.
	Claims map[string]any

	rule    *rule
	found   []foundToken
	payload []byte
}

type foundToken struct {
	loc   location
	token string
}

// Authenticate finds and verifies the request's tokens. No token: a zero Result and nil.
// A token that fails: an error wrapping ErrInvalidToken or ErrJWKSUnavailable (reject
// with 401). When tokens sit in several locations every one must verify; the first gives
// the principal (Istio leaves this case undefined; meshguard fails closed).
func (a *Authenticator) Authenticate(ctx context.Context, r *http.Request) (*Result, error) {
	res := &Result{}
	if len(a.rules) == 0 {
		return res, nil
	}
	found, err := a.extract(r)
	if err != nil {
		return nil, err
	}
	for _, ft := range found {
		one, err := a.verify(ctx, ft)
		if err != nil {
			return nil, err
		}
		if !res.Authenticated {
			*res = *one
		}
	}
	res.found = found
	return res, nil
}

// extract collects every token present at a location any rule names.
func (a *Authenticator) extract(r *http.Request) ([]foundToken, error) {
	var out []foundToken
	seen := map[location]bool{}
	for _, rl := range a.rules {
		for _, loc := range rl.locations {
			if seen[loc] {
				continue
			}
			seen[loc] = true
			tok, ok, err := loc.find(r)
			if err != nil {
				return nil, fmt.Errorf("%w: %s", ErrInvalidToken, err)
			}
			if ok {
				out = append(out, foundToken{loc: loc, token: tok})
			}
		}
	}
	return out, nil
}

func (l location) find(r *http.Request) (string, bool, error) {
	switch l.kind {
	case 'h':
		v := r.Header.Get(l.name)
		if v == "" {
			return "", false, nil
		}
		if l.prefix == "" {
			return strings.TrimSpace(v), true, nil
		}
		if len(v) >= len(l.prefix) && strings.EqualFold(v[:len(l.prefix)], l.prefix) {
			return strings.TrimSpace(v[len(l.prefix):]), true, nil
		}
		if l == defaultLocations[0] {
			return "", false, nil // Authorization: Basic … is not a JWT location
		}
		return "", false, fmt.Errorf("header %s does not start with the configured prefix %q", l.name, l.prefix)
	case 'q':
		if r.URL == nil {
			return "", false, nil
		}
		v := r.URL.Query().Get(l.name)
		return v, v != "", nil
	default:
		c, err := r.Cookie(l.name)
		if err != nil || c.Value == "" {
			return "", false, nil
		}
		return c.Value, true, nil
	}
}

func (a *Authenticator) verify(ctx context.Context, ft foundToken) (*Result, error) {
	tok, err := josejwt.ParseSigned(ft.token, allowedAlgorithms)
	if err != nil {
		return nil, fmt.Errorf("%w: token in %s: %v", ErrInvalidToken, ft.loc, err)
	}
	var unverified struct {
		Issuer string `json:"iss"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, fmt.Errorf("%w: token in %s: payload: %v", ErrInvalidToken, ft.loc, err)
	}
	var rl *rule
	for _, r := range a.rules {
		if r.issuer == unverified.Issuer && slices.Contains(r.locations, ft.loc) {
			rl = r
			break
		}
	}
	if rl == nil {
		return nil, fmt.Errorf("%w: token in %s: issuer %q is not configured for that location", ErrInvalidToken, ft.loc, unverified.Issuer)
	}
	kid := tok.Headers[0].KeyID
	payload, err := a.checkSignature(ctx, tok, rl, kid)
	if err != nil {
		return nil, err
	}
	var std josejwt.Claims
	var claims map[string]any
	if err := json.Unmarshal(payload, &std); err != nil {
		return nil, fmt.Errorf("%w: %s: registered claims: %v", ErrInvalidToken, rl, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		return nil, fmt.Errorf("%w: %s: claims: %v", ErrInvalidToken, rl, err)
	}
	exp := josejwt.Expected{Issuer: rl.issuer, Time: a.now()}
	if err := std.ValidateWithLeeway(exp, a.skew); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidToken, rl, err)
	}
	if len(rl.audiences) > 0 && !slices.ContainsFunc(rl.audiences, std.Audience.Contains) {
		return nil, fmt.Errorf("%w: %s: audiences %q include none of %q", ErrInvalidToken, rl, []string(std.Audience), rl.audiences)
	}
	for _, name := range rl.spaceDelimited {
		splitClaim(claims, name)
	}
	res := &Result{
		Authenticated: true, Issuer: std.Issuer, Subject: std.Subject,
		Principal: std.Issuer + "/" + std.Subject, Audiences: std.Audience, Claims: claims,
		rule: rl, payload: payload,
	}
	if azp, ok := claims["azp"].(string); ok {
		res.Presenter = azp
	}
	return res, nil
}

// checkSignature verifies tok with the rule's keys and returns the verified payload. A
// kid the set does not hold triggers one refresh (keys rotate) before it is rejected.
func (a *Authenticator) checkSignature(ctx context.Context, tok *josejwt.JSONWebToken, rl *rule, kid string) ([]byte, error) {
	for attempt := 0; attempt < 2; attempt++ {
		set, err := rl.keys.get(ctx, attempt > 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rl, err)
		}
		cands := set.Keys
		if kid != "" {
			cands = set.Key(kid)
		}
		if len(cands) == 0 {
			if rl.keys.inline == nil && attempt == 0 {
				continue
			}
			return nil, fmt.Errorf("%w: %s: no key with kid %q", ErrInvalidToken, rl, kid)
		}
		var lastErr error
		for _, k := range cands {
			if k.Algorithm != "" && k.Algorithm != tok.Headers[0].Algorithm {
				lastErr = fmt.Errorf("key %q is for %s, token is signed with %s", k.KeyID, k.Algorithm, tok.Headers[0].Algorithm)
				continue
			}
			var raw json.RawMessage
			if err := tok.Claims(k.Key, &raw); err != nil {
				lastErr = err
				continue
			}
			return raw, nil
		}
		return nil, fmt.Errorf("%w: %s: signature: %v", ErrInvalidToken, rl, lastErr)
	}
	return nil, fmt.Errorf("%w: %s: no key with kid %q", ErrInvalidToken, rl, kid)
}

// splitClaim turns a space-delimited string claim (dotted path for nested claims) into
// a list, so that authorization can match its members one by one.
func splitClaim(claims map[string]any, name string) {
	m := claims
	parts := strings.Split(name, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			return
		}
		m = next
	}
	last := parts[len(parts)-1]
	if s, ok := m[last].(string); ok {
		var list []any
		for _, f := range strings.Fields(s) {
			list = append(list, f)
		}
		m[last] = list
	}
}

// Apply rewrites the request headers as the verifying rule says: the token is removed
// from its header unless forwardOriginalToken, the payload is written base64url-encoded
// to outputPayloadToHeader, and each outputClaimToHeaders claim of type string, number
// or bool is written to its header (nested claims by dotted path). Headers a rule
// outputs are first removed from the request, so a client cannot forge them.
func (res *Result) Apply(h http.Header) {
	if res == nil || !res.Authenticated {
		return
	}
	rl := res.rule
	if !rl.forward {
		for _, ft := range res.found {
			if ft.loc.kind == 'h' {
				h.Del(ft.loc.name)
			}
		}
	}
	if rl.payloadHeader != "" {
		h.Set(rl.payloadHeader, base64.RawURLEncoding.EncodeToString(res.payload))
	}
	for _, ch := range rl.claimHeaders {
		h.Del(ch.GetHeader())
		if v, ok := claimString(res.Claims, ch.GetClaim()); ok {
			h.Set(ch.GetHeader(), v)
		}
	}
}

func claimString(claims map[string]any, path string) (string, bool) {
	var v any = claims
	for _, p := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		if v, ok = m[p]; !ok {
			return "", false
		}
	}
	switch t := v.(type) {
	case string:
		return t, true
	case bool:
		return strconv.FormatBool(t), true
	case json.Number:
		return t.String(), true
	}
	return "", false
}

func (l location) String() string {
	switch l.kind {
	case 'h':
		return "header " + l.name
	case 'q':
		return "query parameter " + l.name
	}
	return "cookie " + l.name
}
