// Package apikey is the Gatehouse API key provider: secrets of the form
// gk_<id>_<secret>, stored only as SHA-256, looked up by id and compared in
// constant time. A key belongs to one tenant and carries a role ceiling and
// scopes.
//
// apikey imports only identity; persistence is behind the small [Store]
// interface, which the store package implements.
package apikey

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// Prefix starts every Gatehouse API key.
const Prefix = "gk_"

const idLen = 16 // base32 characters: 80 random bits, public

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ErrNotFound is returned by [Store] for an unknown key id.
var ErrNotFound = errors.New("api key not found")

// Key is a stored API key. The secret itself is never stored.
type Key struct {
	ID         string
	TenantID   string
	TenantKey  string // the tenant's human key, for display
	Name       string
	Role       string
	Scopes     []string
	CreatedBy  string
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never expires
	LastUsedAt time.Time // zero: never used
	RevokedAt  time.Time // zero: not revoked
	SecretHash []byte    // SHA-256 of the whole secret
	// AllowedNetworks are where the key may be used from (canonical, see
	// identity.ParseNetworks); empty: anywhere.
	AllowedNetworks identity.Networks
}

// Store reads keys for the [Verifier].
type Store interface {
	FindAPIKeyByID(ctx context.Context, id string) (*Key, error)
	// FindAPIKeysByID returns those of the keys with these ids that
	// exist, in any order, in one statement.
	FindAPIKeysByID(ctx context.Context, ids []string) ([]*Key, error)
	TouchAPIKey(ctx context.Context, id string, at time.Time) error
	// TouchAPIKeys records a use of each key at at, in one statement,
	// never moving a key's last use backwards. It may skip a key another
	// transaction holds locked (the caller touches it again later) rather
	// than wait for it.
	TouchAPIKeys(ctx context.Context, ids []string, at time.Time) error
}

// New returns a new key for a tenant and its secret, which is shown to the
// user once: 256 random bits after the public id.
func New(tenantID, role string, scopes []string, name, createdBy string, expiresAt time.Time) (secret string, k *Key) {
	var idb [10]byte
	var sb [32]byte
	_, _ = rand.Read(idb[:]) // crypto/rand.Read never fails
	_, _ = rand.Read(sb[:])
	id := idEncoding.EncodeToString(idb[:])
	secret = Prefix + id + "_" + base64.RawURLEncoding.EncodeToString(sb[:])
	sum := sha256.Sum256([]byte(secret))
	return secret, &Key{
		ID: id, TenantID: tenantID, Name: name, Role: role, Scopes: scopes,
		CreatedBy: createdBy, ExpiresAt: expiresAt, SecretHash: sum[:],
	}
}

// ParseID returns the public id inside a secret.
func ParseID(secret string) (string, bool) {
	rest, ok := strings.CutPrefix(secret, Prefix)
	if !ok || len(rest) != idLen+1+43 || rest[idLen] != '_' {
		return "", false
	}
	id := rest[:idLen]
	if _, err := idEncoding.DecodeString(id); err != nil {
		return "", false
	}
	return id, true
}

// Verifier validates API keys against a [Store].
type Verifier struct {
	store Store
	log   *slog.Logger
	now   func() time.Time
}

// NewVerifier returns a Verifier; log may be nil.
func NewVerifier(store Store, log *slog.Logger) *Verifier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Verifier{store: store, log: log, now: time.Now}
}

var _ identity.Rechecker = (*Verifier)(nil)

// Verify implements [identity.Verifier].
func (v *Verifier) Verify(ctx context.Context, secret string) (*identity.Principal, error) {
	id, ok := ParseID(secret)
	if !ok {
		return nil, identity.Invalid("the API key is malformed")
	}
	k, err := v.store.FindAPIKeyByID(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, identity.Invalid("unknown API key")
	}
	if err != nil {
		return nil, fmt.Errorf("%w: looking up API key: %w", identity.ErrUnavailable, err)
	}
	sum := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(sum[:], k.SecretHash) != 1 {
		return nil, identity.Invalid("unknown API key")
	}
	now := v.now()
	switch {
	case !k.RevokedAt.IsZero():
		return nil, identity.Invalid("the API key has been revoked")
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		return nil, identity.Invalid("the API key has expired")
	}
	if stale(k, now) {
		// Written lazily, off the request path: at most once a minute per key
		// and replica, since validations are cached (and then by Recheck).
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := v.store.TouchAPIKey(ctx, k.ID, now); err != nil {
				v.log.Warn("recording API key use failed", "api_key_id", k.ID, "error", err)
			}
		}()
	}
	return principal(k), nil
}

// stale: k's recorded last use is over a minute before now.
func stale(k *Key, now time.Time) bool {
	return k.LastUsedAt.IsZero() || now.Sub(k.LastUsedAt) > time.Minute
}

// Recheck implements [identity.Rechecker]: it reads the keys again in one
// statement and confirms each credential as Verify would (the same secret
// hash, compared in constant time; not revoked; not expired), returning the
// key's principal as it is now, or nil. The keys whose recorded last use
// is over a minute old are touched, in one more statement: a recheck
// follows a use since the previous one (at most CacheTTL/3 ago).
func (v *Verifier) Recheck(ctx context.Context, cs []identity.Recheck) ([]*identity.Principal, error) {
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		if c.Principal != nil && c.Principal.APIKeyID != "" {
			ids = append(ids, c.Principal.APIKeyID)
		}
	}
	ks, err := v.store.FindAPIKeysByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*Key, len(ks))
	for _, k := range ks {
		byID[k.ID] = k
	}
	now := v.now()
	out := make([]*identity.Principal, len(cs))
	var touch []string
	for i, c := range cs {
		if c.Principal == nil {
			continue
		}
		k := byID[c.Principal.APIKeyID]
		if k == nil || subtle.ConstantTimeCompare(c.TokenHash[:], k.SecretHash) != 1 ||
			!k.RevokedAt.IsZero() || (!k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt)) {
			continue
		}
		out[i] = principal(k)
		if stale(k, now) {
			touch = append(touch, k.ID)
		}
	}
	if len(touch) > 0 {
		if err := v.store.TouchAPIKeys(ctx, touch, now); err != nil {
			v.log.Warn("recording API keys' use failed", "keys", len(touch), "error", err)
		}
	}
	return out, nil
}

// principal is the principal a valid key stands for.
func principal(k *Key) *identity.Principal {
	return &identity.Principal{
		Provider: "apikey",
		Subject:  "apikey:" + k.ID,
		Name:     k.Name,
		Scopes:   k.Scopes,
		Expiry:   k.ExpiresAt,
		APIKeyID: k.ID,
		TenantID: k.TenantID,
		Role:     k.Role,
		// Carried in the cached principal: the HTTP layer checks the
		// caller's address against them on every request.
		AllowedNetworks: k.AllowedNetworks,
	}
}
