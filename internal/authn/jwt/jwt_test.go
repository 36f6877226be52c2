package jwt_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/meshguard/meshguard/internal/authn/jwt"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/meshtest"
)

func policies(tb testing.TB, src string) []*config.Object {
	tb.Helper()
	var out []*config.Object
	for _, o := range meshtest.IstioObjects(tb, src) {
		out = append(out, &config.Object{Kind: config.Kind(o.Kind), Meta: config.Meta{Namespace: o.Namespace, Name: o.Name}, Spec: o.Spec})
	}
	return out
}

// fakeClock is a settable clock for cache ages, exp and nbf.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func request(tb testing.TB, target string, headers ...string) *http.Request {
	tb.Helper()
	r := httptest.NewRequest(http.MethodGet, "http://app.foo"+target, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	return r
}

func newAuth(t *testing.T, yaml string, opts jwt.Options) *jwt.Authenticator {
	t.Helper()
	a, err := jwt.New(policies(t, yaml), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func TestAuthenticate(t *testing.T) {
	srv := meshtest.NewJWKSServer(t)
	now := time.Now()
	uriPolicy := `
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: "` + srv.Issuer() + `"
    jwksUri: "` + srv.JWKSURI() + `"
    audiences: ["bookstore_android.apps.example.com", "bookstore_web.apps.example.com"]
`
	a := newAuth(t, uriPolicy, jwt.Options{})
	hs := meshtest.MintToken(t, jose.HS256, []byte("shared-secret-shared-secret-0123"), "rsa-1", meshtest.Claims{"iss": srv.Issuer(), "sub": "x", "aud": "bookstore_web.apps.example.com"})
	foreign, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	valid := meshtest.Claims{"sub": "alice", "aud": "bookstore_web.apps.example.com", "azp": "web", "groups": []string{"dev"}, "scope": "read write"}
	with := func(extra meshtest.Claims) meshtest.Claims {
		c := meshtest.Claims{}
		for k, v := range valid {
			c[k] = v
		}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	good := srv.Mint(valid)
	parts := strings.Split(good, ".")
	tests := []struct {
		name    string
		req     *http.Request
		authed  bool
		wantErr error
	}{
		{"valid RS256", request(t, "/", "Authorization", "Bearer "+good), true, nil},
		{"valid ES256", request(t, "/", "Authorization", "Bearer "+srv.MintWith("ec-1", valid)), true, nil},
		{"bearer scheme is case-insensitive", request(t, "/", "Authorization", "bearer "+good), true, nil},
		{"access_token parameter", request(t, "/?access_token="+good), true, nil},
		{"no token", request(t, "/"), false, nil},
		{"basic auth is not a token", request(t, "/", "Authorization", "Basic dXNlcjpwYXNz"), false, nil},
		{"garbage", request(t, "/", "Authorization", "Bearer not.a.jwt"), false, jwt.ErrInvalidToken},
		{"alg none", request(t, "/", "Authorization", "Bearer "+noneToken(srv.Issuer())), false, jwt.ErrInvalidToken},
		{"HMAC", request(t, "/", "Authorization", "Bearer "+hs), false, jwt.ErrInvalidToken},
		{"tampered payload", request(t, "/", "Authorization", "Bearer "+parts[0]+"."+base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+srv.Issuer()+`","sub":"root","aud":"bookstore_web.apps.example.com"}`))+"."+parts[2]), false, jwt.ErrInvalidToken},
		{"signed by an unknown key", request(t, "/", "Authorization", "Bearer "+meshtest.MintToken(t, jose.ES256, foreign, "ec-1", meshtest.Claims{"iss": srv.Issuer(), "sub": "x", "aud": "bookstore_web.apps.example.com"})), false, jwt.ErrInvalidToken},
		{"unknown kid", request(t, "/", "Authorization", "Bearer "+meshtest.MintToken(t, jose.ES256, foreign, "nope", meshtest.Claims{"iss": srv.Issuer(), "sub": "x"})), false, jwt.ErrInvalidToken},
		{"expired", request(t, "/", "Authorization", "Bearer "+srv.Mint(with(meshtest.Claims{"exp": now.Add(-5 * time.Minute).Unix()}))), false, jwt.ErrInvalidToken},
		{"expired within clock skew", request(t, "/", "Authorization", "Bearer "+srv.Mint(with(meshtest.Claims{"exp": now.Add(-10 * time.Second).Unix()}))), true, nil},
		{"not yet valid", request(t, "/", "Authorization", "Bearer "+srv.Mint(with(meshtest.Claims{"nbf": now.Add(10 * time.Minute).Unix()}))), false, jwt.ErrInvalidToken},
		{"wrong issuer", request(t, "/", "Authorization", "Bearer "+srv.Mint(with(meshtest.Claims{"iss": "https://other.example"}))), false, jwt.ErrInvalidToken},
		{"wrong audience", request(t, "/", "Authorization", "Bearer "+srv.Mint(with(meshtest.Claims{"aud": "someone-else"}))), false, jwt.ErrInvalidToken},
		{"one of several audiences", request(t, "/", "Authorization", "Bearer "+srv.Mint(with(meshtest.Claims{"aud": []string{"x", "bookstore_android.apps.example.com"}}))), true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := a.Authenticate(context.Background(), tc.req)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || res != nil {
					t.Fatalf("Authenticate = %+v, %v; want nil, %v", res, err, tc.wantErr)
				}
				return
			}
			if err != nil || res.Authenticated != tc.authed {
				t.Fatalf("Authenticate = %+v, %v; want authenticated=%v", res, err, tc.authed)
			}
			if !tc.authed {
				return
			}
			if res.Principal != srv.Issuer()+"/alice" || res.Presenter != "web" || len(res.Audiences) == 0 {
				t.Errorf("Authenticate principal %q presenter %q audiences %v", res.Principal, res.Presenter, res.Audiences)
			}
			if g, ok := res.Claims["groups"].([]any); !ok || len(g) != 1 || g[0] != "dev" {
				t.Errorf("claims[groups] = %#v, want [dev]", res.Claims["groups"])
			}
			if s, ok := res.Claims["scope"].([]any); !ok || len(s) != 2 || s[1] != "write" {
				t.Errorf("claims[scope] = %#v, want the space-delimited scope split", res.Claims["scope"])
			}
		})
	}
}

func noneToken(iss string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(`{"iss":"`+iss+`","sub":"admin"}`)) + "."
}

func TestJWKSFetching(t *testing.T) {
	t.Run("cached, refreshed, stale on failure", func(t *testing.T) {
		srv := meshtest.NewJWKSServer(t)
		clk := &fakeClock{t: time.Now()}
		a := newAuth(t, "kind: RequestAuthentication\nmetadata: {name: r}\nspec: {jwtRules: [{issuer: \""+srv.Issuer()+"\", jwksUri: \""+srv.JWKSURI()+"\"}]}", jwt.Options{Now: clk.Now, RefreshInterval: time.Minute})
		tok := srv.MintWith("ec-1", meshtest.Claims{"sub": "a", "exp": clk.Now().Add(time.Hour).Unix()})
		auth := func() error {
			_, err := a.Authenticate(context.Background(), request(t, "/", "Authorization", "Bearer "+tok))
			return err
		}
		for range 3 {
			if err := auth(); err != nil {
				t.Fatal(err)
			}
		}
		if srv.Fetches() != 1 {
			t.Fatalf("fetches = %d after 3 requests, want 1 (cached)", srv.Fetches())
		}
		clk.Add(2 * time.Minute)
		if err := auth(); err != nil || srv.Fetches() != 2 {
			t.Fatalf("after the refresh interval: err %v, fetches %d; want a refetch", err, srv.Fetches())
		}
		srv.SetDown(true)
		clk.Add(2 * time.Minute)
		if err := auth(); err != nil {
			t.Fatalf("refresh failed with keys cached: %v; want the last good keys used", err)
		}
	})
	t.Run("unreachable: fail closed", func(t *testing.T) {
		srv := meshtest.NewJWKSServer(t)
		srv.SetDown(true)
		a := newAuth(t, "kind: RequestAuthentication\nmetadata: {name: r}\nspec: {jwtRules: [{issuer: \""+srv.Issuer()+"\", jwksUri: \""+srv.JWKSURI()+"\"}]}", jwt.Options{})
		_, err := a.Authenticate(context.Background(), request(t, "/", "Authorization", "Bearer "+srv.Mint(meshtest.Claims{"sub": "a"})))
		if !errors.Is(err, jwt.ErrJWKSUnavailable) {
			t.Fatalf("Authenticate = %v, want ErrJWKSUnavailable", err)
		}
	})
	t.Run("timeout: fail closed, bounded", func(t *testing.T) {
		srv := meshtest.NewJWKSServer(t)
		srv.SetDelay(2 * time.Second)
		a := newAuth(t, "kind: RequestAuthentication\nmetadata: {name: r}\nspec: {jwtRules: [{issuer: \""+srv.Issuer()+"\", jwksUri: \""+srv.JWKSURI()+"\", timeout: 0.2s}]}", jwt.Options{})
		start := time.Now()
		_, err := a.Authenticate(context.Background(), request(t, "/", "Authorization", "Bearer "+srv.Mint(meshtest.Claims{"sub": "a"})))
		if !errors.Is(err, jwt.ErrJWKSUnavailable) || time.Since(start) > time.Second {
			t.Fatalf("Authenticate = %v after %v, want ErrJWKSUnavailable within the 0.2s timeout", err, time.Since(start))
		}
	})
	t.Run("key rotation: unknown kid refetches", func(t *testing.T) {
		srv := meshtest.NewJWKSServer(t)
		clk := &fakeClock{t: time.Now()}
		a := newAuth(t, "kind: RequestAuthentication\nmetadata: {name: r}\nspec: {jwtRules: [{issuer: \""+srv.Issuer()+"\", jwksUri: \""+srv.JWKSURI()+"\"}]}", jwt.Options{Now: clk.Now})
		if _, err := a.Authenticate(context.Background(), request(t, "/", "Authorization", "Bearer "+srv.Mint(meshtest.Claims{"sub": "a"}))); err != nil {
			t.Fatal(err)
		}
		srv.Rotate("rsa-2")
		rotated := srv.Mint(meshtest.Claims{"sub": "b", "exp": clk.Now().Add(time.Hour).Unix()})
		// Within the refetch-on-unknown-kid rate limit the old set is used: rejected.
		if _, err := a.Authenticate(context.Background(), request(t, "/", "Authorization", "Bearer "+rotated)); !errors.Is(err, jwt.ErrInvalidToken) || srv.Fetches() != 1 {
			t.Fatalf("unknown kid right after a fetch: %v, fetches %d; want rejected without a refetch", err, srv.Fetches())
		}
		clk.Add(2100 * time.Millisecond)
		res, err := a.Authenticate(context.Background(), request(t, "/", "Authorization", "Bearer "+rotated))
		if err != nil || !res.Authenticated {
			t.Fatalf("token signed with the rotated key: %v", err)
		}
	})
	t.Run("a cancelled caller does not fail the fetch for others", func(t *testing.T) {
		srv := meshtest.NewJWKSServer(t)
		srv.SetDelay(300 * time.Millisecond)
		a := newAuth(t, "kind: RequestAuthentication\nmetadata: {name: r}\nspec: {jwtRules: [{issuer: \""+srv.Issuer()+"\", jwksUri: \""+srv.JWKSURI()+"\"}]}", jwt.Options{})
		tok := srv.Mint(meshtest.Claims{"sub": "a"})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := a.Authenticate(ctx, request(t, "/", "Authorization", "Bearer "+tok)); !errors.Is(err, jwt.ErrJWKSUnavailable) {
			t.Fatalf("Authenticate with a cancelled context = %v, want ErrJWKSUnavailable", err)
		}
		// The next request, inside the failure back-off, must get the keys the
		// detached fetch brought, not the first caller's cancellation.
		res, err := a.Authenticate(context.Background(), request(t, "/", "Authorization", "Bearer "+tok))
		if err != nil || !res.Authenticated {
			t.Fatalf("Authenticate after a cancelled caller = %v; want the fetch to have completed for everyone", err)
		}
	})
	t.Run("OpenID discovery", func(t *testing.T) {
		srv := meshtest.NewJWKSServer(t)
		a := newAuth(t, "kind: RequestAuthentication\nmetadata: {name: r}\nspec: {jwtRules: [{issuer: \""+srv.Issuer()+"\"}]}", jwt.Options{})
		res, err := a.Authenticate(context.Background(), request(t, "/", "Authorization", "Bearer "+srv.Mint(meshtest.Claims{"sub": "a"})))
		if err != nil || !res.Authenticated || srv.Fetches() != 2 {
			t.Fatalf("Authenticate = %v, fetches %d; want success after discovery + JWKS", err, srv.Fetches())
		}
	})
}

func TestLocationsAndOutputs(t *testing.T) {
	srv := meshtest.NewJWKSServer(t)
	inline, _ := json.Marshal(srv.JWKS())
	a := newAuth(t, `
kind: RequestAuthentication
metadata: {name: locations, namespace: foo}
spec:
  jwtRules:
  - issuer: "`+srv.Issuer()+`"
    jwks: `+string(inline)+`
    fromHeaders: [{name: x-jwt-assertion, prefix: "Bearer "}]
    fromParams: [my_token]
    fromCookies: [auth-token]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders:
    - {header: x-my-company-jwt-group, claim: my-group}
    - {header: x-test-environment-flag, claim: test-flag}
    - {header: x-jwt-claim-group, claim: nested.key.group}
  - issuer: "https://second.example"
    jwks: `+string(inline)+`
    fromHeaders: [{name: x-second}]
    forwardOriginalToken: true
`, jwt.Options{})
	claims := meshtest.Claims{"sub": "bob", "my-group": "eng", "test-flag": true, "nested": map[string]any{"key": map[string]any{"group": "g1"}}}
	tok := srv.Mint(claims)
	second := srv.Mint(meshtest.Claims{"iss": "https://second.example", "sub": "carol"})
	tests := []struct {
		name      string
		req       *http.Request
		principal string
		wantErr   bool
		check     func(t *testing.T, h http.Header)
	}{
		{"header with prefix", request(t, "/", "x-jwt-assertion", "Bearer "+tok, "x-jwt-claim-group", "forged"), srv.Issuer() + "/bob", false, func(t *testing.T, h http.Header) {
			if h.Get("x-jwt-assertion") != "" {
				t.Errorf("token header kept without forwardOriginalToken")
			}
			if h.Get("x-my-company-jwt-group") != "eng" || h.Get("x-test-environment-flag") != "true" || h.Get("x-jwt-claim-group") != "g1" {
				t.Errorf("claim headers = %v", h)
			}
			p, err := base64.RawURLEncoding.DecodeString(h.Get("x-jwt-payload"))
			var m map[string]any
			if err != nil || json.Unmarshal(p, &m) != nil || m["sub"] != "bob" {
				t.Errorf("x-jwt-payload = %q: want the base64url payload", h.Get("x-jwt-payload"))
			}
		}},
		{"header missing its prefix", request(t, "/", "x-jwt-assertion", tok), "", true, nil},
		{"query parameter", request(t, "/?my_token="+tok), srv.Issuer() + "/bob", false, nil},
		{"cookie", request(t, "/", "Cookie", "a=b; auth-token="+tok), srv.Issuer() + "/bob", false, nil},
		{"default location is off when locations are set", request(t, "/", "Authorization", "Bearer "+tok), "", false, nil},
		{"second rule forwards its token", request(t, "/", "x-second", second), "https://second.example/carol", false, func(t *testing.T, h http.Header) {
			if h.Get("x-second") != second {
				t.Errorf("forwardOriginalToken: token removed")
			}
		}},
		{"issuer of another location", request(t, "/", "x-second", tok), "", true, nil},
		{"two tokens: both must verify", request(t, "/?my_token=garbage", "x-jwt-assertion", "Bearer "+tok), "", true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := a.Authenticate(context.Background(), tc.req)
			if tc.wantErr {
				if !errors.Is(err, jwt.ErrInvalidToken) {
					t.Fatalf("Authenticate = %v, want ErrInvalidToken", err)
				}
				return
			}
			if err != nil || res.Principal != tc.principal {
				t.Fatalf("Authenticate = %+v, %v; want principal %q", res, err, tc.principal)
			}
			res.Apply(tc.req.Header)
			if tc.check != nil {
				tc.check(t, tc.req.Header)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct{ name, rule, want string }{
		{"no issuer", `{jwksUri: "https://x.example/jwks"}`, "issuer: required"},
		{"both jwks and jwksUri", `{issuer: "https://x.example", jwksUri: "https://x.example/j", jwks: "{}"}`, "set only one"},
		{"bad jwksUri", `{issuer: "https://x.example", jwksUri: "file:///etc/keys"}`, "http:// or https://"},
		{"symmetric inline key", `{issuer: "x", jwks: '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}'}`, "no usable public signing key"},
		{"no keys and no URL issuer", `{issuer: "accounts-service"}`, "not a URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := jwt.New(policies(t, "kind: RequestAuthentication\nmetadata: {name: r, namespace: foo}\nspec: {jwtRules: ["+tc.rule+"]}"), jwt.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "foo/r") {
				t.Fatalf("New = %v, want an error naming foo/r and %q", err, tc.want)
			}
		})
	}
}

func FuzzAuthenticate(f *testing.F) {
	srv := meshtest.NewJWKSServer(f)
	inline, _ := json.Marshal(srv.JWKS())
	a, err := jwt.New(policies(f, "kind: RequestAuthentication\nmetadata: {name: r}\nspec: {jwtRules: [{issuer: \""+srv.Issuer()+"\", jwks: "+string(inline)+"}]}"), jwt.Options{})
	if err != nil {
		f.Fatal(err)
	}
	good := srv.Mint(meshtest.Claims{"sub": "alice", "exp": time.Now().Add(24 * time.Hour).Unix()})
	for _, s := range []string{good, srv.MintWith("ec-1", meshtest.Claims{"sub": "alice", "exp": time.Now().Add(24 * time.Hour).Unix()}), noneToken(srv.Issuer()), "a.b.c", "", "....", good + "x", strings.ToUpper(good)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		r := httptest.NewRequest(http.MethodGet, "http://app/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		res, err := a.Authenticate(context.Background(), r)
		if err != nil {
			if res != nil {
				t.Fatalf("rejected token yielded a result %+v", res)
			}
			if !errors.Is(err, jwt.ErrInvalidToken) && !errors.Is(err, jwt.ErrJWKSUnavailable) {
				t.Fatalf("error %v wraps neither sentinel", err)
			}
			return
		}
		// Only tokens the test issuer signed authenticate, and only as alice.
		if res.Authenticated && res.Principal != srv.Issuer()+"/alice" {
			t.Fatalf("forged token authenticated as %q", res.Principal)
		}
		if !res.Authenticated && strings.TrimSpace(tok) != "" {
			t.Fatalf("token %q neither rejected nor authenticated", tok)
		}
	})
}

// TestConcurrentColdCache: many requests racing on an empty cache cause one fetch.
func TestConcurrentColdCache(t *testing.T) {
	srv := meshtest.NewJWKSServer(t)
	srv.SetDelay(50 * time.Millisecond)
	a := newAuth(t, "kind: RequestAuthentication\nmetadata: {name: r}\nspec: {jwtRules: [{issuer: \""+srv.Issuer()+"\", jwksUri: \""+srv.JWKSURI()+"\"}]}", jwt.Options{})
	tok := srv.Mint(meshtest.Claims{"sub": "a"})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := a.Authenticate(context.Background(), request(t, "/", "Authorization", "Bearer "+tok))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.Fetches(); n != 1 {
		t.Errorf("fetches = %d for 16 concurrent cold requests, want 1", n)
	}
}
