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
	TouchAPIKey(ctx context.Context, id string, at time.Time) error
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

var _ identity.Verifier = (*Verifier)(nil)

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
	if k.LastUsedAt.IsZero() || now.Sub(k.LastUsedAt) > time.Minute {
		// Written lazily, off the request path: at most once a minute per key
		// and replica, since validations are cached.
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := v.store.TouchAPIKey(ctx, k.ID, now); err != nil {
				v.log.Warn("recording API key use failed", "api_key_id", k.ID, "error", err)
			}
		}()
	}
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
	}, nil
}
