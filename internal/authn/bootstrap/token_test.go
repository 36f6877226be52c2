package bootstrap_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/authn/bootstrap"
	"github.com/meshguard/meshguard/internal/identity"
)

var (
	t0  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	web = identity.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
)

func signRaw(t testing.TB, key crypto.Signer, alg jose.SignatureAlgorithm, claims any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func stdClaims(mut func(*jwt.Claims)) jwt.Claims {
	c := jwt.Claims{
		Issuer: bootstrap.Issuer, Subject: "system:serviceaccount:default:web", Audience: jwt.Audience{bootstrap.Audience},
		Expiry: jwt.NewNumericDate(t0.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(t0),
	}
	if mut != nil {
		mut(&c)
	}
	return c
}

func TestAuthenticate(t *testing.T) {
	dir := t.TempDir()
	key, err := bootstrap.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	a, err := bootstrap.NewAuthenticator(key.Public(), "cluster.local", func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	good, err := bootstrap.Mint(key, web, time.Hour, t0.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + strings.TrimRight(signRawPayload(t, key), "=") + "." + parts[2]

	for _, tc := range []struct {
		name    string
		token   string
		want    identity.Identity
		wantErr string
	}{
		{"valid", good, web, ""},
		{"no token", "", identity.Identity{}, "no credentials"},
		{"expired", mustMint(t, key, web, time.Minute, t0.Add(-time.Hour)), identity.Identity{}, "expired"},
		{"tampered payload", tampered, identity.Identity{}, "signature"},
		{"other key", signRaw(t, other, jose.ES256, stdClaims(nil)), identity.Identity{}, "signature"},
		{"wrong audience", signRaw(t, key, jose.ES256, stdClaims(func(c *jwt.Claims) { c.Audience = jwt.Audience{"kubernetes"} })), identity.Identity{}, "audience"},
		{"wrong issuer", signRaw(t, key, jose.ES256, stdClaims(func(c *jwt.Claims) { c.Issuer = "https://kubernetes.default.svc" })), identity.Identity{}, "issuer"},
		{"no expiry", signRaw(t, key, jose.ES256, stdClaims(func(c *jwt.Claims) { c.Expiry = nil })), identity.Identity{}, "no expiry"},
		{"not yet valid", signRaw(t, key, jose.ES256, stdClaims(func(c *jwt.Claims) { c.NotBefore = jwt.NewNumericDate(t0.Add(time.Hour)) })), identity.Identity{}, "claims"},
		{"bad subject", signRaw(t, key, jose.ES256, stdClaims(func(c *jwt.Claims) { c.Subject = "web" })), identity.Identity{}, "subject"},
		{"subject with slash", signRaw(t, key, jose.ES256, stdClaims(func(c *jwt.Claims) { c.Subject = "system:serviceaccount:default:a/b" })), identity.Identity{}, "subject"},
		{"HS256 with public key bytes", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", identity.Identity{}, "JWT"},
		{"alg none", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDp3ZWIifQ.", identity.Identity{}, "JWT"},
		{"garbage", "not-a-token", identity.Identity{}, "JWT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Authenticate(context.Background(), authn.Credentials{BearerToken: tc.token})
			if tc.wantErr == "" {
				if err != nil || got.Identity != tc.want || got.Method != bootstrap.Method {
					t.Fatalf("Authenticate = %+v, %v; want %v", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !got.Identity.IsZero() {
				t.Fatalf("Authenticate = %+v, %v; want error containing %q", got, err, tc.wantErr)
			}
			if tc.token != "" && errors.Is(err, authn.ErrNoCredentials) {
				t.Errorf("a presented but invalid token must not read as ErrNoCredentials")
			}
		})
	}
}

// signRawPayload returns a base64url payload naming another service account, to splice
// into a token signed for web.
func signRawPayload(t testing.TB, key crypto.Signer) string {
	other := signRaw(t, key, jose.ES256, stdClaims(func(c *jwt.Claims) { c.Subject = "system:serviceaccount:kube-system:admin" }))
	return strings.Split(other, ".")[1]
}

func mustMint(t testing.TB, key crypto.Signer, id identity.Identity, ttl time.Duration, now time.Time) string {
	t.Helper()
	tok, err := bootstrap.Mint(key, id, ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestMintRefuses(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name string
		id   identity.Identity
		ttl  time.Duration
	}{
		{"empty namespace", identity.Identity{ServiceAccount: "sa"}, time.Hour},
		{"colon in sa", identity.Identity{Namespace: "ns", ServiceAccount: "a:b"}, time.Hour},
		{"zero ttl", identity.Identity{Namespace: "ns", ServiceAccount: "sa"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tok, err := bootstrap.Mint(key, tc.id, tc.ttl, t0); err == nil {
				t.Fatalf("Mint = %q, want error", tok)
			}
		})
	}
}

func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	dir := t.TempDir()
	keys := make([]crypto.Signer, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := bootstrap.LoadOrCreateKey(dir)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for i, k := range keys {
		if k == nil || !k.Public().(*ecdsa.PublicKey).Equal(keys[0].Public()) {
			t.Fatalf("LoadOrCreateKey call %d returned a different key: concurrent creators must agree", i)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, bootstrap.KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("data directory holds %d files, want only the key", len(entries))
	}
}

// FuzzAuthenticate checks that no input other than a token this key signed yields an
// identity, and that every accepted identity is in the trust domain and valid.
func FuzzAuthenticate(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	a, _ := bootstrap.NewAuthenticator(key.Public(), "cluster.local", func() time.Time { return t0 })
	good, _ := bootstrap.Mint(key, web, time.Hour, t0)
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := a.Authenticate(context.Background(), authn.Credentials{BearerToken: tok})
		if err != nil {
			if !c.Identity.IsZero() {
				t.Fatalf("refused token yielded identity %v", c.Identity)
			}
			return
		}
		// The fuzzer cannot forge an ES256 signature, so the only identity it can ever
		// obtain is the one in the seed token this key signed.
		if c.Identity != web || c.Method != bootstrap.Method {
			t.Fatalf("accepted token %q yielded %+v, want only %v", tok, c, web)
		}
	})
}

// TestCacheHonoursExpiry checks that a token verified (and cached) while valid is refused
// once it expires, and that a cached success never leaks to another token.
func TestCacheHonoursExpiry(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := t0
	a, err := bootstrap.NewAuthenticator(key.Public(), "cluster.local", func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	tok := mustMint(t, key, web, time.Minute, t0)
	for i := range 2 {
		if c, err := a.Authenticate(context.Background(), authn.Credentials{BearerToken: tok}); err != nil || c.Identity != web {
			t.Fatalf("call %d: %+v, %v", i, c, err)
		}
	}
	if _, err := a.Authenticate(context.Background(), authn.Credentials{BearerToken: tok + "x"}); err == nil {
		t.Fatal("a token differing from a cached one was accepted")
	}
	now = t0.Add(2 * time.Minute)
	if _, err := a.Authenticate(context.Background(), authn.Credentials{BearerToken: tok}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("cached token after expiry: %v, want expired", err)
	}
}
