package meshtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// JWKSServer is a real OpenID-style token issuer on 127.0.0.1:0: it serves its public
// keys at /jwks.json and a discovery document at /.well-known/openid-configuration, and
// mints signed tokens. Its issuer is its own base URL. Tests can take it down, count
// fetches and rotate keys.
type JWKSServer struct {
	tb     testing.TB
	srv    *httptest.Server
	mu     sync.Mutex
	keys   []signingKey
	down   atomic.Bool
	delay  atomic.Int64 // nanoseconds added before each answer
	served atomic.Int64
}

type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

// NewJWKSServer starts a JWKS server with an RSA (kid "rsa-1", RS256) and an ECDSA
// (kid "ec-1", ES256) key. It is closed when the test ends.
func NewJWKSServer(tb testing.TB) *JWKSServer {
	tb.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatalf("meshtest: RSA key: %v", err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("meshtest: ECDSA key: %v", err)
	}
	s := &JWKSServer{tb: tb, keys: []signingKey{{"rsa-1", jose.RS256, rk}, {"ec-1", jose.ES256, ek}}}
	mux := http.NewServeMux()
	mux.HandleFunc("/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		if !s.gate(w, r) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(s.JWKS()))
	})
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if !s.gate(w, r) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": s.Issuer(), "jwks_uri": s.JWKSURI()})
	})
	s.srv = httptest.NewServer(mux)
	tb.Cleanup(s.srv.Close)
	return s
}

func (s *JWKSServer) gate(w http.ResponseWriter, r *http.Request) bool {
	s.served.Add(1)
	if d := time.Duration(s.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return false
		}
	}
	if s.down.Load() {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return false
	}
	return true
}

// Issuer is the iss of minted tokens: the server's base URL.
func (s *JWKSServer) Issuer() string { return s.srv.URL }

// JWKSURI is where the public keys are served.
func (s *JWKSServer) JWKSURI() string { return s.srv.URL + "/jwks.json" }

// Fetches counts requests answered (or refused) so far.
func (s *JWKSServer) Fetches() int { return int(s.served.Load()) }

// SetDown makes every endpoint answer 503 (true) or work again (false).
func (s *JWKSServer) SetDown(down bool) { s.down.Store(down) }

// SetDelay makes every answer wait d first, to test fetch timeouts.
func (s *JWKSServer) SetDelay(d time.Duration) { s.delay.Store(int64(d)) }

// JWKS returns the public key set as JSON, for inline `jwks` rules.
func (s *JWKSServer) JWKS() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var set jose.JSONWebKeySet
	for _, k := range s.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		s.tb.Fatalf("meshtest: marshal JWKS: %v", err)
	}
	return string(b)
}

// Rotate adds a new RSA key with kid and makes it the first (default) signing key.
func (s *JWKSServer) Rotate(kid string) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		s.tb.Fatalf("meshtest: RSA key: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append([]signingKey{{kid, jose.RS256, rk}}, s.keys...)
}

// Claims are a token's payload. Mint fills iss (the server's issuer), iat and exp (one
// hour) when absent; set them explicitly to test bad values, or to nil to omit them.
type Claims map[string]any

// Mint signs claims with the first key (RS256, kid "rsa-1" until Rotate).
func (s *JWKSServer) Mint(c Claims) string {
	s.mu.Lock()
	k := s.keys[0]
	s.mu.Unlock()
	return s.MintWith(k.kid, c)
}

// MintWith signs claims with the key named kid ("rsa-1", "ec-1", or a rotated one).
func (s *JWKSServer) MintWith(kid string, c Claims) string {
	s.tb.Helper()
	s.mu.Lock()
	var key *signingKey
	for i := range s.keys {
		if s.keys[i].kid == kid {
			key = &s.keys[i]
		}
	}
	s.mu.Unlock()
	if key == nil {
		s.tb.Fatalf("meshtest: no signing key %q", kid)
	}
	return MintToken(s.tb, key.alg, key.priv, kid, s.withDefaults(c))
}

func (s *JWKSServer) withDefaults(c Claims) Claims {
	out := Claims{"iss": s.Issuer(), "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range c {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

// MintToken signs claims with any key and algorithm, including ones a verifier must
// refuse (HS256 with a []byte key), for negative tests. kid may be "".
func MintToken(tb testing.TB, alg jose.SignatureAlgorithm, key any, kid string, c Claims) string {
	tb.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		tb.Fatalf("meshtest: signer: %v", err)
	}
	tok, err := josejwt.Signed(sig).Claims(map[string]any(c)).Serialize()
	if err != nil {
		tb.Fatalf("meshtest: sign token: %v", err)
	}
	return tok
}
