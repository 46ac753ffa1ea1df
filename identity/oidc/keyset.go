package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// keySet is an issuer's JWKS, cached. It implements go-oidc's KeySet.
//
// A token whose kid is unknown triggers a refetch, at most once per
// minRefresh: a flood of tokens with random kids costs the issuer one
// request per interval, not one per token. Keys older than maxAge are
// refreshed on use; if that fails the cached keys keep working, so an
// issuer outage does not break tokens signed with keys we know.
type keySet struct {
	url        func(ctx context.Context) (string, error) // resolved lazily (discovery)
	client     *http.Client
	algs       []jose.SignatureAlgorithm
	minRefresh time.Duration
	maxAge     time.Duration

	mu          sync.RWMutex
	keys        []jose.JSONWebKey
	fetched     time.Time // last successful fetch
	lastAttempt time.Time
	lastErr     error

	group   singleflight.Group
	fetches atomic.Int64
}

var (
	errUnknownKey   = errors.New("the token is signed with a key the issuer does not publish")
	errBadSignature = errors.New("signature mismatch")
)

// outcome lets VerifySignature tell its caller, through go-oidc (which
// flattens errors), that the issuer could not be reached.
type outcome struct{ unavailable error }

type outcomeKey struct{}

func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(jwt, k.algs)
	if err != nil || len(jws.Signatures) != 1 {
		return nil, errors.New("malformed jwt")
	}
	kid := jws.Signatures[0].Header.KeyID
	k.mu.RLock()
	keys, fetched, lastAttempt, lastErr := k.keys, k.fetched, k.lastAttempt, k.lastErr
	k.mu.RUnlock()

	if !fetched.IsZero() && time.Since(fetched) < k.maxAge {
		payload, err := verifyWith(keys, jws, kid)
		if !errors.Is(err, errUnknownKey) {
			return payload, err // verified, or a bad signature by a key we know: no refetch
		}
	}
	if time.Since(lastAttempt) < k.minRefresh {
		// Refetched a moment ago: use what we have.
		payload, err := verifyWith(keys, jws, kid)
		if errors.Is(err, errUnknownKey) && lastErr != nil {
			return nil, k.unavailable(ctx, lastErr)
		}
		return payload, err
	}
	keys, ferr := k.refresh(ctx)
	payload, err := verifyWith(keys, jws, kid)
	if errors.Is(err, errUnknownKey) && ferr != nil {
		return nil, k.unavailable(ctx, ferr)
	}
	return payload, err
}

func (k *keySet) unavailable(ctx context.Context, err error) error {
	if o, ok := ctx.Value(outcomeKey{}).(*outcome); ok {
		o.unavailable = err
	}
	return err
}

// verifyWith checks the signature with the key named by kid (every key when
// the token names none): errUnknownKey when no such key is cached,
// errBadSignature when the named key does not verify it.
func verifyWith(keys []jose.JSONWebKey, jws *jose.JSONWebSignature, kid string) ([]byte, error) {
	err := errUnknownKey
	for _, key := range keys {
		if (kid != "" && key.KeyID != kid) || (key.Use != "" && key.Use != "sig") {
			continue
		}
		payload, verr := jws.Verify(key.Key)
		if verr == nil {
			return payload, nil
		}
		err = errBadSignature
	}
	return nil, err
}

// refresh fetches the JWKS (one request for all concurrent callers) and
// returns the keys to use: the new ones, or the old ones if it failed.
func (k *keySet) refresh(ctx context.Context) ([]jose.JSONWebKey, error) {
	v, err, _ := k.group.Do("", func() (any, error) {
		keys, err := k.fetch(context.WithoutCancel(ctx))
		k.mu.Lock()
		defer k.mu.Unlock()
		// Recorded when the fetch ends: callers arriving while it runs join it
		// (singleflight) instead of being refused for want of keys.
		k.lastAttempt, k.lastErr = time.Now(), err
		if err != nil {
			return k.keys, err
		}
		k.keys, k.fetched = keys, time.Now()
		return keys, nil
	})
	return v.([]jose.JSONWebKey), err
}

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	url, err := k.url(ctx)
	if err != nil {
		return nil, err
	}
	k.fetches.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := identity.DoJSON(k.client, req, &doc); err != nil {
		if !errors.Is(err, identity.ErrUnavailable) {
			err = fmt.Errorf("%w: JWKS: %w", identity.ErrUnavailable, err)
		}
		return nil, err
	}
	keys := make([]jose.JSONWebKey, 0, len(doc.Keys))
	for _, raw := range doc.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(raw); err != nil || !key.Valid() || !key.IsPublic() {
			continue // unsupported key types, or a private key published by mistake
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: JWKS at %s has no usable signing keys", identity.ErrUnavailable, url)
	}
	return keys, nil
}
