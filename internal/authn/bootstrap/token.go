package bootstrap

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/pki"
)

const (
	// Audience is the audience Istio's agents request for CA tokens.
	Audience = "istio-ca"
	// Issuer marks tokens minted by meshguard.
	Issuer = "meshguard-bootstrap"
	// KeyFile is the signing key's name in the data directory.
	KeyFile = "token-signing-key.pem"
	// Method is the authn.Caller method for this authenticator.
	Method = "bootstrap-token"
	// subjectPrefix follows Kubernetes service-account tokens.
	subjectPrefix = "system:serviceaccount:"
	// leeway tolerates small clock differences between minting and verifying hosts.
	leeway = 30 * time.Second
)

// LoadOrCreateKey returns the token signing key in dataDir, creating an ECDSA P-256 key
// (0600) when there is none. Creation is race-free: the control plane and `ctl token
// create` may both start on an empty directory and still agree on one key.
func LoadOrCreateKey(dataDir string) (crypto.Signer, error) {
	path := filepath.Join(dataDir, KeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createKey(dataDir, path); err != nil {
			return nil, err
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read token signing key: %w", err)
	}
	key, err := pki.ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("token signing key %s: %w", path, err)
	}
	return key, nil
}

func createKey(dataDir, path string) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	key, err := pki.GenerateKey(pki.KeyECP256)
	if err != nil {
		return err
	}
	b, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	suffix := make([]byte, 8)
	if _, err := rand.Read(suffix); err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.%x.new", path, suffix)
	if err := pki.WriteFileAtomic(tmp, b, 0o600); err != nil {
		return err
	}
	defer os.Remove(tmp)
	// Link fails if another process created the key first; theirs wins and we use it.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("install token signing key %s: %w", path, err)
	}
	return nil
}

// keyID is the base64url SHA-256 of the public key, so that verifiers can tell which key
// signed a token after a key change.
func keyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode token public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:16]), nil
}

// Mint returns a token for id's namespace and service account, valid from now for ttl.
// The trust domain is not in the token: the verifying CA issues in its own.
func Mint(key crypto.Signer, id identity.Identity, ttl time.Duration, now time.Time) (string, error) {
	if err := validNames(id.Namespace, id.ServiceAccount); err != nil {
		return "", err
	}
	if ttl <= 0 {
		return "", fmt.Errorf("token TTL %v: must be positive", ttl)
	}
	kid, err := keyID(key.Public())
	if err != nil {
		return "", err
	}
	alg, err := algorithm(key.Public())
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return "", fmt.Errorf("token signer: %w", err)
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims := jwt.Claims{
		Issuer:    Issuer,
		Subject:   subjectPrefix + id.Namespace + ":" + id.ServiceAccount,
		Audience:  jwt.Audience{Audience},
		Expiry:    jwt.NewNumericDate(now.Add(ttl)),
		NotBefore: jwt.NewNumericDate(now),
		IssuedAt:  jwt.NewNumericDate(now),
		ID:        base64.RawURLEncoding.EncodeToString(jti),
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

func algorithm(pub crypto.PublicKey) (jose.SignatureAlgorithm, error) {
	switch pki.DescribePublicKey(pub) {
	case "ECDSA P-256":
		return jose.ES256, nil
	case "ECDSA P-384":
		return jose.ES384, nil
	}
	return "", fmt.Errorf("token signing key %s: want ECDSA P-256 or P-384", pki.DescribePublicKey(pub))
}

func validNames(ns, sa string) error {
	// Validate with a placeholder trust domain: the names must fit in a SPIFFE ID.
	if _, err := identity.New("x", ns, sa); err != nil {
		return fmt.Errorf("token subject: %w", err)
	}
	return nil
}

// Authenticator verifies bootstrap tokens. Build it with NewAuthenticator.
type Authenticator struct {
	pub         crypto.PublicKey
	alg         jose.SignatureAlgorithm
	trustDomain string
	now         func() time.Time

	// Verified tokens are remembered by hash until they expire, so that a client retrying
	// with the same token costs no signature check. Only successes are cached.
	mu       sync.Mutex
	verified map[[sha256.Size]byte]verifiedToken
}

type verifiedToken struct {
	id     identity.Identity
	expiry time.Time
}

// maxCached bounds the cache; when full it is emptied (tokens are re-verified, never
// wrongly accepted).
const maxCached = 4096

var _ authn.Authenticator = (*Authenticator)(nil)

// NewAuthenticator returns an authenticator for tokens signed by pub that yields
// identities in trustDomain. now defaults to time.Now.
func NewAuthenticator(pub crypto.PublicKey, trustDomain string, now func() time.Time) (*Authenticator, error) {
	alg, err := algorithm(pub)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Authenticator{pub: pub, alg: alg, trustDomain: trustDomain, now: now, verified: map[[sha256.Size]byte]verifiedToken{}}, nil
}

// Authenticate implements authn.Authenticator. Only the configured algorithm is accepted
// (no "none", no algorithm switching); the token must carry audience istio-ca, our
// issuer, an expiry in the future and a system:serviceaccount:<ns>:<sa> subject.
func (a *Authenticator) Authenticate(_ context.Context, cred authn.Credentials) (authn.Caller, error) {
	if cred.BearerToken == "" {
		return authn.Caller{}, authn.ErrNoCredentials
	}
	sum := sha256.Sum256([]byte(cred.BearerToken))
	now := a.now()
	a.mu.Lock()
	v, ok := a.verified[sum]
	if ok && !now.Before(v.expiry.Add(leeway)) {
		delete(a.verified, sum)
		ok = false
	}
	a.mu.Unlock()
	if ok {
		return authn.Caller{Identity: v.id, Method: Method}, nil
	}
	id, expiry, err := a.verify(cred.BearerToken, now)
	if err != nil {
		return authn.Caller{}, fmt.Errorf("bootstrap token refused: %w", err)
	}
	a.mu.Lock()
	if len(a.verified) >= maxCached {
		clear(a.verified)
	}
	a.verified[sum] = verifiedToken{id: id, expiry: expiry}
	a.mu.Unlock()
	return authn.Caller{Identity: id, Method: Method}, nil
}

func (a *Authenticator) verify(token string, now time.Time) (identity.Identity, time.Time, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{a.alg})
	if err != nil {
		return identity.Identity{}, time.Time{}, fmt.Errorf("not a %s-signed JWT: %w", a.alg, err)
	}
	var c jwt.Claims
	if err := tok.Claims(a.pub, &c); err != nil {
		return identity.Identity{}, time.Time{}, errors.New("signature does not verify with this control plane's token key: mint a new token with `meshguard ctl token create` against this data directory")
	}
	if c.Expiry == nil {
		return identity.Identity{}, time.Time{}, errors.New("token has no expiry (exp)")
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: Issuer, AnyAudience: jwt.Audience{Audience}, Time: now}, leeway); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return identity.Identity{}, time.Time{}, fmt.Errorf("token expired at %s: mint a new one", c.Expiry.Time().UTC().Format(time.RFC3339))
		case errors.Is(err, jwt.ErrInvalidAudience):
			return identity.Identity{}, time.Time{}, fmt.Errorf("token audience %q, want %q", []string(c.Audience), Audience)
		case errors.Is(err, jwt.ErrInvalidIssuer):
			return identity.Identity{}, time.Time{}, fmt.Errorf("token issuer %q, want %q", c.Issuer, Issuer)
		}
		return identity.Identity{}, time.Time{}, fmt.Errorf("token claims: %w", err)
	}
	rest, ok := strings.CutPrefix(c.Subject, subjectPrefix)
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		return identity.Identity{}, time.Time{}, fmt.Errorf("token subject %q is not %s<namespace>:<service-account>", c.Subject, subjectPrefix)
	}
	id, err := identity.New(a.trustDomain, ns, sa)
	if err != nil {
		return identity.Identity{}, time.Time{}, fmt.Errorf("token subject %q: %w", c.Subject, err)
	}
	return id, c.Expiry.Time(), nil
}
