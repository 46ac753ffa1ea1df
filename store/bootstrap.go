package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// bootstrapLock serialises first-start bootstrap across replicas.
const bootstrapLock = int64(0x626f6f74) // "boot"

// Bootstrap runs once per database: if there are no tenants and no
// bootstrap has happened (or the last one was undone by UndoBootstrap), it
// provisions tenant key and stores the key that newKey returns for it, all
// in one transaction. It reports whether it did; false means the database
// was not empty (or another process got there first).
func (db *DB) Bootstrap(ctx context.Context, key string, newKey func(tenantID string) *apikey.Key) (bool, error) {
	did := false
	seed, err := db.lockSeed(ctx)
	if err != nil {
		return false, err
	}
	err = beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", bootstrapLock); err != nil {
			return err
		}
		var empty bool
		if err := tx.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM gatehouse.settings WHERE name = 'bootstrapped_at')
			AND (NOT EXISTS (SELECT 1 FROM gatehouse.tenants)
			     OR EXISTS (SELECT 1 FROM gatehouse.settings WHERE name = 'bootstrap_unfinished'))`).Scan(&empty); err != nil || !empty {
			return err
		}
		t, _, err := ensureTenant(ctx, tx, seed, key, tenancy.Organization)
		if err != nil {
			return err
		}
		if err := createAPIKey(ctx, tx, newKey(t.ID)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO gatehouse.settings (name, value) VALUES ('bootstrapped_at', now()::text)"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM gatehouse.settings WHERE name = 'bootstrap_unfinished'"); err != nil {
			return err
		}
		did = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("bootstrap: %w", err)
	}
	return did, nil
}

// UndoBootstrap revokes the bootstrap key keyID, whose secret was never
// shown (the server stopped before it served), and lets the next Bootstrap
// issue a fresh one. Keys are stored hashed, so the secret itself cannot be
// shown later; a new key is the only way to hand one out.
func (db *DB) UndoBootstrap(ctx context.Context, keyID string) error {
	err := beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", bootstrapLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE gatehouse.api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", keyID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM gatehouse.settings WHERE name = 'bootstrapped_at'"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO gatehouse.settings (name, value) VALUES ('bootstrap_unfinished', $1)
			ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()`, keyID); err != nil {
			return err
		}
		return db.notify(ctx, tx, Invalidation{Kind: InvalidateAPIKey, ID: keyID})
	})
	if err != nil {
		return fmt.Errorf("undoing the bootstrap: %w", err)
	}
	return nil
}
