package store

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
)

const selectAPIKey = `SELECT k.id, k.tenant_id, t.key, k.name, k.role, k.scopes, k.created_by, k.created_at,
	k.expires_at, k.last_used_at, k.revoked_at, k.secret_hash, k.allowed_networks
	FROM gatehouse.api_keys k JOIN gatehouse.tenants t ON t.id = k.tenant_id`

func scanAPIKey(row pgx.Row) (*apikey.Key, error) {
	var k apikey.Key
	var expires, used, revoked *time.Time
	var nets []netip.Prefix
	err := row.Scan(&k.ID, &k.TenantID, &k.TenantKey, &k.Name, &k.Role, &k.Scopes, &k.CreatedBy, &k.CreatedAt,
		&expires, &used, &revoked, &k.SecretHash, &nets)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, apikey.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	k.ExpiresAt, k.LastUsedAt, k.RevokedAt = deref(expires), deref(used), deref(revoked)
	if len(nets) > 0 {
		k.AllowedNetworks = identity.Networks(nets)
	}
	return &k, nil
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// CreateAPIKey stores k (whose secret hash is already set) and fills in its
// creation time.
func (db *DB) CreateAPIKey(ctx context.Context, k *apikey.Key) error {
	return beginFunc(ctx, db.pool, func(tx pgx.Tx) error { return createAPIKey(ctx, tx, k) })
}

func createAPIKey(ctx context.Context, tx pgx.Tx, k *apikey.Key) error {
	return tx.QueryRow(ctx, `INSERT INTO gatehouse.api_keys (id, tenant_id, secret_hash, name, role, scopes, created_by, expires_at, allowed_networks)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		RETURNING created_at, (SELECT key FROM gatehouse.tenants WHERE id = $2)`,
		k.ID, k.TenantID, k.SecretHash, k.Name, k.Role, k.Scopes, k.CreatedBy, nullTime(k.ExpiresAt), prefixes(k.AllowedNetworks)).Scan(&k.CreatedAt, &k.TenantKey)
}

// prefixes is a key's networks as the cidr[] column takes them (never
// NULL: the column says "anywhere" with an empty array).
func prefixes(ns identity.Networks) []netip.Prefix {
	if ns == nil {
		return []netip.Prefix{}
	}
	return ns
}

// FindAPIKeyByID implements apikey.Store.
func (db *DB) FindAPIKeyByID(ctx context.Context, id string) (*apikey.Key, error) {
	return scanAPIKey(db.pool.QueryRow(ctx, selectAPIKey+" WHERE k.id = $1", id))
}

// FindAPIKeysByID implements apikey.Store: those of the keys with these
// ids that exist, in any order, in one statement.
func (db *DB) FindAPIKeysByID(ctx context.Context, ids []string) ([]*apikey.Key, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	rows, _ := db.pool.Query(ctx, selectAPIKey+" WHERE k.id = ANY($1)", ids)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*apikey.Key, error) { return scanAPIKey(r) })
}

// FindAPIKeys returns a tenant's keys, newest first.
func (db *DB) FindAPIKeys(ctx context.Context, tenantID string) ([]*apikey.Key, error) {
	rows, _ := db.pool.Query(ctx, selectAPIKey+" WHERE k.tenant_id = $1 ORDER BY k.created_at DESC, k.id", tenantID)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*apikey.Key, error) { return scanAPIKey(r) })
}

// TouchAPIKey implements apikey.Store: it records a use, never moving
// last_used_at backwards.
func (db *DB) TouchAPIKey(ctx context.Context, id string, at time.Time) error {
	_, err := db.pool.Exec(ctx, `UPDATE gatehouse.api_keys SET last_used_at = $2
		WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)`, id, at)
	return err
}

// TouchAPIKeys implements apikey.Store: TouchAPIKey for each of ids, in
// one statement, skipping any key whose row another transaction holds
// locked (FOR UPDATE SKIP LOCKED): it never waits for a row lock.
//
// It locks many tenants' keys in no fixed order, while the anomaly
// detector's grouped transactions (DetectAnomaliesTenants, with
// GATEHOUSE_ALERT_SUSPEND) revoke keys of several tenants and hold their
// locks until they commit; waiting here could close a cycle with one of
// them (a deadlock, which PostgreSQL would break by failing one side).
// A skipped key keeps its older last_used_at and is touched again by the
// next recheck that finds it stale (apikey.Verifier.Recheck): a recorded
// use is at most one recheck late.
func (db *DB) TouchAPIKeys(ctx context.Context, ids []string, at time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := db.pool.Exec(ctx, `WITH k AS (SELECT id FROM gatehouse.api_keys
			WHERE id = ANY($1) AND (last_used_at IS NULL OR last_used_at < $2)
			FOR UPDATE SKIP LOCKED)
		UPDATE gatehouse.api_keys a SET last_used_at = $2 FROM k WHERE a.id = k.id`, ids, at)
	return err
}

// RevokeAPIKey revokes a key (idempotently) and tells every Gatehouse
// process sharing this database to forget it (see [DB.Listen]).
func (db *DB) RevokeAPIKey(ctx context.Context, id string) (*apikey.Key, error) {
	var k *apikey.Key
	err := beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE gatehouse.api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", id); err != nil {
			return err
		}
		var err error
		if k, err = scanAPIKey(tx.QueryRow(ctx, selectAPIKey+" WHERE k.id = $1", id)); err != nil {
			return err
		}
		return db.notify(ctx, tx, Invalidation{Kind: InvalidateAPIKey, ID: id})
	})
	return k, err
}
