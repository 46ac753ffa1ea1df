package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
)

var _ authserver.Store = (*DB)(nil)

func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return authserver.ErrNotFound
	}
	return err
}

// CreateClient implements authserver.Store.
func (db *DB) CreateClient(ctx context.Context, c *authserver.Client) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO gatehouse.oauth_clients (id, kind, name, redirect_uris, secret_hash, client_uri, metadata)
		VALUES ($1, $2, $3, $4, $5, $6, coalesce($7::jsonb, '{}'))`, c.ID, c.Kind, c.Name, c.RedirectURIs, c.SecretHash, c.ClientURI, metadataArg(c.Metadata))
	return err
}

// metadataArg passes a client's metadata as jsonb text (nil: none).
func metadataArg(m []byte) *string {
	if len(m) == 0 {
		return nil
	}
	return new(string(m))
}

// SaveClient implements authserver.Store.
func (db *DB) SaveClient(ctx context.Context, c *authserver.Client) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO gatehouse.oauth_clients (id, kind, name, redirect_uris, secret_hash, client_uri, fetched_until)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, redirect_uris = excluded.redirect_uris, client_uri = excluded.client_uri,
			fetched_until = excluded.fetched_until, last_used_at = now()`,
		c.ID, c.Kind, c.Name, c.RedirectURIs, c.SecretHash, c.ClientURI, nullTime(c.FetchedUntil))
	return err
}

// FindClient implements authserver.Store.
func (db *DB) FindClient(ctx context.Context, id string) (*authserver.Client, error) {
	var c authserver.Client
	var fetched *time.Time
	var metadata string
	err := db.pool.QueryRow(ctx, `SELECT id, kind, name, redirect_uris, secret_hash, client_uri, metadata::text, fetched_until
		FROM gatehouse.oauth_clients WHERE id = $1`, id).Scan(&c.ID, &c.Kind, &c.Name, &c.RedirectURIs, &c.SecretHash, &c.ClientURI, &metadata, &fetched)
	c.Metadata = []byte(metadata)
	c.FetchedUntil = deref(fetched)
	return &c, notFound(err)
}

// TouchClient implements authserver.Store.
func (db *DB) TouchClient(ctx context.Context, id string) error {
	_, err := db.pool.Exec(ctx, "UPDATE gatehouse.oauth_clients SET last_used_at = now() WHERE id = $1", id)
	return err
}

const selectRequest = `SELECT id, client_id, redirect_uri, state, scope, resource, code_challenge, browser_hash, upstream,
	coalesce(upstream_state, ''), upstream_verifier, identity, expires_at FROM gatehouse.oauth_requests`

func scanRequest(row pgx.Row) (*authserver.Request, error) {
	var r authserver.Request
	var id []byte
	err := row.Scan(&r.ID, &r.ClientID, &r.RedirectURI, &r.State, &r.Scope, &r.Resource, &r.CodeChallenge, &r.BrowserHash,
		&r.Upstream, &r.UpstreamState, &r.UpstreamVerifier, &id, &r.ExpiresAt)
	if err != nil {
		return nil, notFound(err)
	}
	if len(id) > 0 {
		r.Identity = &authserver.Identity{}
		if err := json.Unmarshal(id, r.Identity); err != nil {
			return nil, err
		}
	}
	return &r, nil
}

// CreateRequest implements authserver.Store.
func (db *DB) CreateRequest(ctx context.Context, r *authserver.Request) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO gatehouse.oauth_requests (id, client_id, redirect_uri, state, scope, resource, code_challenge,
		browser_hash, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		r.ID, r.ClientID, r.RedirectURI, r.State, r.Scope, r.Resource, r.CodeChallenge, r.BrowserHash, r.ExpiresAt)
	return err
}

// FindRequest implements authserver.Store.
func (db *DB) FindRequest(ctx context.Context, id string) (*authserver.Request, error) {
	return scanRequest(db.pool.QueryRow(ctx, selectRequest+" WHERE id = $1", id))
}

// FindRequestByUpstreamState implements authserver.Store.
func (db *DB) FindRequestByUpstreamState(ctx context.Context, state string) (*authserver.Request, error) {
	if state == "" {
		return nil, authserver.ErrNotFound
	}
	return scanRequest(db.pool.QueryRow(ctx, selectRequest+" WHERE upstream_state = $1", state))
}

// UpdateRequest implements authserver.Store.
func (db *DB) UpdateRequest(ctx context.Context, r *authserver.Request) error {
	var id *string
	if r.Identity != nil {
		b, err := json.Marshal(r.Identity)
		if err != nil {
			return err
		}
		id = new(string(b))
	}
	_, err := db.pool.Exec(ctx, `UPDATE gatehouse.oauth_requests SET upstream = $2, upstream_state = nullif($3, ''),
		upstream_verifier = $4, identity = $5::jsonb, scope = $6 WHERE id = $1`, r.ID, r.Upstream, r.UpstreamState, r.UpstreamVerifier, id, r.Scope)
	return err
}

// DeleteRequest implements authserver.Store.
func (db *DB) DeleteRequest(ctx context.Context, id string) error {
	_, err := db.pool.Exec(ctx, "DELETE FROM gatehouse.oauth_requests WHERE id = $1", id)
	return err
}

// Consented implements authserver.Store: every scope asked was granted.
func (db *DB) Consented(ctx context.Context, subject, clientID, scope string) (bool, error) {
	var ok bool
	err := db.pool.QueryRow(ctx, `SELECT string_to_array($3, ' ') <@ string_to_array(scope, ' ')
		FROM gatehouse.oauth_consents WHERE subject = $1 AND client_id = $2`, subject, clientID, scope).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return ok, err
}

// SaveConsent implements authserver.Store: the scopes consented to now are
// added to those consented to before.
func (db *DB) SaveConsent(ctx context.Context, subject, clientID, scope string) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO gatehouse.oauth_consents (subject, client_id, scope) VALUES ($1, $2, $3)
		ON CONFLICT (subject, client_id) DO UPDATE SET granted_at = now(), scope = array_to_string(ARRAY(
			SELECT DISTINCT s FROM unnest(string_to_array(oauth_consents.scope, ' ') || string_to_array(excluded.scope, ' ')) AS s
			WHERE s <> '' ORDER BY s), ' ')`, subject, clientID, scope)
	return err
}

// CreateCode implements authserver.Store.
func (db *DB) CreateCode(ctx context.Context, c *authserver.Code) error {
	id, err := json.Marshal(c.Identity)
	if err != nil {
		return err
	}
	_, err = db.pool.Exec(ctx, `INSERT INTO gatehouse.oauth_codes (hash, client_id, redirect_uri, code_challenge, resource, scope, identity,
		family, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)`,
		c.Hash, c.ClientID, c.RedirectURI, c.CodeChallenge, c.Resource, c.Scope, string(id), c.Family, c.ExpiresAt)
	return err
}

// UseCode implements authserver.Store.
func (db *DB) UseCode(ctx context.Context, hash []byte) (*authserver.Code, error) {
	var c authserver.Code
	var used *time.Time
	err := beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var id []byte
		err := tx.QueryRow(ctx, `SELECT hash, client_id, redirect_uri, code_challenge, resource, scope, identity, family, expires_at, used_at
			FROM gatehouse.oauth_codes WHERE hash = $1 FOR UPDATE`, hash).Scan(&c.Hash, &c.ClientID, &c.RedirectURI, &c.CodeChallenge,
			&c.Resource, &c.Scope, &id, &c.Family, &c.ExpiresAt, &used)
		if err != nil {
			return notFound(err)
		}
		if err := json.Unmarshal(id, &c.Identity); err != nil {
			return err
		}
		if used != nil {
			return nil
		}
		_, err = tx.Exec(ctx, "UPDATE gatehouse.oauth_codes SET used_at = now() WHERE hash = $1", hash)
		return err
	})
	if err == nil && used != nil {
		return &c, authserver.ErrUsed
	}
	return &c, err
}

// CreateRefresh implements authserver.Store.
func (db *DB) CreateRefresh(ctx context.Context, r *authserver.Refresh) error {
	return createRefresh(ctx, db.pool, r)
}

// execer is what createRefresh needs from a pool or a transaction.
type execer interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}

func createRefresh(ctx context.Context, q execer, r *authserver.Refresh) error {
	id, err := json.Marshal(r.Identity)
	if err != nil {
		return err
	}
	_, err = q.Exec(ctx, `INSERT INTO gatehouse.oauth_refresh_tokens (hash, family, client_id, resource, scope, identity, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)`, r.Hash, r.Family, r.ClientID, r.Resource, r.Scope, string(id), r.ExpiresAt)
	return err
}

// RotateRefresh implements authserver.Store.
func (db *DB) RotateRefresh(ctx context.Context, oldHash []byte, next *authserver.Refresh, check func(*authserver.Refresh) error) (*authserver.Refresh, error) {
	var old authserver.Refresh
	reused := false
	err := beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var id []byte
		var used, revoked *time.Time
		err := tx.QueryRow(ctx, `SELECT hash, family, client_id, resource, scope, identity, expires_at, used_at, revoked_at
			FROM gatehouse.oauth_refresh_tokens WHERE hash = $1 FOR UPDATE`, oldHash).Scan(&old.Hash, &old.Family, &old.ClientID,
			&old.Resource, &old.Scope, &id, &old.ExpiresAt, &used, &revoked)
		if err != nil {
			return notFound(err)
		}
		if used != nil || revoked != nil {
			reused = true
			_, err := tx.Exec(ctx, "UPDATE gatehouse.oauth_refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE family = $1", old.Family)
			return err
		}
		if !time.Now().Before(old.ExpiresAt) {
			return authserver.ErrNotFound
		}
		if err := json.Unmarshal(id, &old.Identity); err != nil {
			return err
		}
		if err := check(&old); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE gatehouse.oauth_refresh_tokens SET used_at = now() WHERE hash = $1", oldHash); err != nil {
			return err
		}
		n := *next
		n.Family, n.ClientID, n.Resource, n.Scope, n.Identity = old.Family, old.ClientID, old.Resource, old.Scope, old.Identity
		return createRefresh(ctx, tx, &n)
	})
	if err == nil && reused {
		return &old, authserver.ErrUsed
	}
	return &old, err
}

// RevokeRefresh implements authserver.Store.
func (db *DB) RevokeRefresh(ctx context.Context, hash []byte, clientID string) error {
	var family string
	err := db.pool.QueryRow(ctx, "SELECT family FROM gatehouse.oauth_refresh_tokens WHERE hash = $1 AND client_id = $2", hash, clientID).Scan(&family)
	if err != nil {
		return notFound(err)
	}
	return db.RevokeFamily(ctx, family)
}

// RevokeFamily implements authserver.Store.
func (db *DB) RevokeFamily(ctx context.Context, family string) error {
	return beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE gatehouse.oauth_refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE family = $1", family); err != nil {
			return err
		}
		// Every replica forgets the family's access tokens it validated.
		return db.notify(ctx, tx, Invalidation{Kind: InvalidateFamily, ID: family})
	})
}

// FamilyRevoked implements authserver.Store.
func (db *DB) FamilyRevoked(ctx context.Context, family string) (bool, error) {
	var revoked bool
	err := db.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM gatehouse.oauth_refresh_tokens WHERE family = $1 AND revoked_at IS NOT NULL)", family).Scan(&revoked)
	return revoked, err
}

// SigningKeys implements authserver.Store.
func (db *DB) SigningKeys(ctx context.Context) ([]*authserver.SigningKey, error) {
	return signingKeys(ctx, db.pool)
}

func signingKeys(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) ([]*authserver.SigningKey, error) {
	rows, _ := q.Query(ctx, `SELECT kid, alg, public_jwk::text, private_enc, created_at, activate_at, retire_at, expire_at
		FROM gatehouse.signing_keys ORDER BY activate_at`)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*authserver.SigningKey, error) {
		var k authserver.SigningKey
		var jwk string
		err := r.Scan(&k.KID, &k.Alg, &jwk, &k.PrivateEnc, &k.CreatedAt, &k.ActivateAt, &k.RetireAt, &k.ExpireAt)
		k.PublicJWK = []byte(jwk)
		return &k, err
	})
}

// ReencryptSigningKey implements authserver.Store.
func (db *DB) ReencryptSigningKey(ctx context.Context, kid string, privateEnc []byte) error {
	_, err := db.pool.Exec(ctx, "UPDATE gatehouse.signing_keys SET private_enc = $2 WHERE kid = $1", kid, privateEnc)
	return err
}

// signingKeyLock serialises key creation across replicas.
const signingKeyLock = int64(0x6b657973) // "keys"

// AddSigningKey implements authserver.Store.
func (db *DB) AddSigningKey(ctx context.Context, k *authserver.SigningKey, need func([]*authserver.SigningKey) bool) error {
	return beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", signingKeyLock); err != nil {
			return err
		}
		// Read under the lock, on this transaction's connection (another
		// would wait for the pool that replicas racing here exhaust).
		existing, err := signingKeys(ctx, tx)
		if err != nil || !need(existing) {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO gatehouse.signing_keys (kid, alg, public_jwk, private_enc, activate_at, retire_at, expire_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, k.KID, k.Alg, string(k.PublicJWK), k.PrivateEnc, k.ActivateAt, k.RetireAt, k.ExpireAt)
		return err
	})
}

// DeleteExpiredOAuth implements authserver.Store: drops expired flow state,
// keys no longer published, and registered clients unused for 30 days.
func (db *DB) DeleteExpiredOAuth(ctx context.Context) error {
	_, err := db.pool.Exec(ctx, `DELETE FROM gatehouse.oauth_requests WHERE expires_at < now();
		DELETE FROM gatehouse.oauth_codes WHERE expires_at < now() - interval '1 day';
		DELETE FROM gatehouse.oauth_refresh_tokens WHERE expires_at < now() OR revoked_at < now() - interval '1 day';
		DELETE FROM gatehouse.signing_keys WHERE expire_at < now();
		DELETE FROM gatehouse.oauth_clients c WHERE c.kind = 'dcr' AND c.last_used_at < now() - interval '30 days'
			AND NOT EXISTS (SELECT 1 FROM gatehouse.oauth_refresh_tokens r WHERE r.client_id = c.id AND r.revoked_at IS NULL);
		DELETE FROM gatehouse.oauth_clients WHERE kind = 'cimd' AND fetched_until < now() - interval '7 days'`)
	return err
}
