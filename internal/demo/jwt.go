package demo

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// issuer is the demo's own end-user token issuer: it serves its public key as a JWKS
// (what RequestAuthentication's jwksUri points at) and mints tokens. It also holds a
// second key that the JWKS does not publish, to forge a token that must be refused.
type issuer struct {
	iss    string
	key    *ecdsa.PrivateKey
	forger *ecdsa.PrivateKey
	jwks   []byte
	lis    net.Listener
	srv    *http.Server
	now    func() time.Time
}

const jwtKeyID = "demo-1"

func newIssuer(iss string, lis net.Listener, now func() time.Time, log *slog.Logger) (*issuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("demo JWT issuer: key: %w", err)
	}
	forger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("demo JWT issuer: key: %w", err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: jwtKeyID, Algorithm: string(jose.ES256), Use: "sig"}}}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("demo JWT issuer: JWKS: %w", err)
	}
	is := &issuer{iss: iss, key: key, forger: forger, jwks: jwks, lis: lis, now: now}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(is.jwks)
	})
	is.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return is, nil
}

// JWKSURI is where RequestAuthentication fetches the keys.
func (is *issuer) JWKSURI() string { return "http://" + is.lis.Addr().String() + "/jwks.json" }

func (is *issuer) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- is.srv.Serve(is.lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("demo JWKS server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := is.srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("demo JWKS server: shutdown: %w", err)
	}
	return nil
}

// token mints an ES256 token for subject, valid for ttl. forged signs it with the key
// the JWKS does not publish (same kid), which a sidecar must refuse.
func (is *issuer) token(subject string, ttl time.Duration, forged bool) (string, error) {
	key := is.key
	if forged {
		key = is.forger
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: jwtKeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("demo JWT issuer: signer: %w", err)
	}
	now := is.now()
	claims := josejwt.Claims{
		Issuer: is.iss, Subject: subject,
		IssuedAt: josejwt.NewNumericDate(now), NotBefore: josejwt.NewNumericDate(now.Add(-time.Minute)),
		Expiry: josejwt.NewNumericDate(now.Add(ttl)),
	}
	tok, err := josejwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("demo JWT issuer: sign: %w", err)
	}
	return tok, nil
}
