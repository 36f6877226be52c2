package jwt

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
)

// keySource yields the JWKS of one rule: inline, from a URI, or discovered from the
// issuer. Fetched sets are cached for the refresh interval; a failed refresh keeps the
// last good set (Istio keeps serving the last good keys) but a source that never fetched
// fails closed.
type keySource struct {
	inline    *jose.JSONWebKeySet
	uri       string // jwksUri; "" with discovery
	discovery string // issuer's /.well-known/openid-configuration when uri is ""
	timeout   time.Duration
	a         *Authenticator

	mu       sync.Mutex // guards the fields below
	set      *jose.JSONWebKeySet
	fetched  time.Time
	failedAt time.Time
	lastErr  error
	group    singleflight.Group
}

// retryGap limits how often a source that is failing is retried, so a dead JWKS endpoint
// does not add its timeout to every request.
const retryGap = 2 * time.Second

func (ks *keySource) get(ctx context.Context, force bool) (*jose.JSONWebKeySet, error) {
	if ks.inline != nil {
		return ks.inline, nil
	}
	now := ks.a.now()
	ks.mu.Lock()
	set, fetched, failedAt, lastErr := ks.set, ks.fetched, ks.failedAt, ks.lastErr
	ks.mu.Unlock()
	fresh := set != nil && now.Sub(fetched) < ks.a.refresh
	if fresh && !force {
		return set, nil
	}
	if !failedAt.IsZero() && now.Sub(failedAt) < retryGap {
		if set != nil {
			return set, nil
		}
		return nil, lastErr
	}
	if force && set != nil && now.Sub(fetched) < retryGap {
		return set, nil // an unknown kid does not trigger a fetch storm
	}
	// The fetch is shared by every request waiting for these keys, so it must not die
	// with the request that started it: it runs detached from the caller's
	// cancellation, bounded by the rule's timeout, and each caller stops waiting when
	// its own context ends. Otherwise one client that hangs up would record a failure
	// and fail every other token for the retry gap.
	ch := ks.group.DoChan("fetch", func() (any, error) {
		s, err := ks.fetch(context.WithoutCancel(ctx))
		ks.mu.Lock()
		defer ks.mu.Unlock()
		if err != nil {
			ks.failedAt, ks.lastErr = ks.a.now(), err
			return nil, err
		}
		ks.set, ks.fetched, ks.failedAt, ks.lastErr = s, ks.a.now(), time.Time{}, nil
		return s, nil
	})
	var v any
	var err error
	select {
	case res := <-ch:
		v, err = res.Val, res.Err
	case <-ctx.Done():
		err = fmt.Errorf("%w: waiting for keys from %s: %v", ErrJWKSUnavailable, ks.source(), ctx.Err())
	}
	if err != nil {
		if set != nil {
			ks.a.logger.LogAttrs(ctx, slog.LevelWarn, "JWKS refresh failed; keeping the last good keys",
				slog.String("uri", ks.uri), slog.String("error", err.Error()))
			return set, nil
		}
		return nil, err
	}
	return v.(*jose.JSONWebKeySet), nil
}

// source names where the keys come from, for errors.
func (ks *keySource) source() string {
	if ks.uri != "" {
		return ks.uri
	}
	return ks.discovery
}

func (ks *keySource) fetch(ctx context.Context) (*jose.JSONWebKeySet, error) {
	ctx, cancel := context.WithTimeout(ctx, ks.timeout)
	defer cancel()
	uri := ks.uri
	if uri == "" {
		var doc struct {
			JWKSURI string `json:"jwks_uri"`
		}
		body, err := ks.a.getDocument(ctx, ks.discovery)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(body, &doc); err != nil || doc.JWKSURI == "" {
			return nil, fmt.Errorf("%w: OpenID discovery document %s has no jwks_uri", ErrJWKSUnavailable, ks.discovery)
		}
		uri = doc.JWKSURI
	}
	body, err := ks.a.getDocument(ctx, uri)
	if err != nil {
		return nil, err
	}
	return parseJWKS(body, uri)
}

func (a *Authenticator) getDocument(ctx context.Context, uri string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("%w: fetch %s: %v", ErrJWKSUnavailable, uri, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: fetch %s: %v", ErrJWKSUnavailable, uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: fetch %s: HTTP %d", ErrJWKSUnavailable, uri, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("%w: fetch %s: %v", ErrJWKSUnavailable, uri, err)
	}
	if len(body) > maxDocument {
		return nil, fmt.Errorf("%w: fetch %s: document larger than %d bytes", ErrJWKSUnavailable, uri, maxDocument)
	}
	return body, nil
}

const maxDocument = 1 << 20

// parseJWKS decodes a key set and keeps only public asymmetric keys: a symmetric ("oct")
// key in a JWKS would let anyone who reads the set mint tokens.
func parseJWKS(body []byte, where string) (*jose.JSONWebKeySet, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("%w: %s: not a JSON Web Key Set: %v", ErrJWKSUnavailable, where, err)
	}
	out := &jose.JSONWebKeySet{}
	for _, rk := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(rk); err != nil {
			continue // one key of a type go-jose does not know must not void the others
		}
		if !k.Valid() || !k.IsPublic() || k.Use == "enc" {
			continue
		}
		if _, sym := k.Key.([]byte); sym {
			continue
		}
		out.Keys = append(out.Keys, k.Public())
	}
	if len(out.Keys) == 0 {
		return nil, fmt.Errorf("%w: %s: no usable public signing key", ErrJWKSUnavailable, where)
	}
	return out, nil
}

func discoveryURL(issuer string) string {
	if !strings.HasPrefix(issuer, "https://") && !strings.HasPrefix(issuer, "http://") {
		return ""
	}
	return strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
}
