package store

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Secret returns the instance secret called name, creating a random one
// (32 bytes) on first use. Every process sharing the database gets the same;
// each process reads it once.
func (db *DB) Secret(ctx context.Context, name string) ([]byte, error) {
	if v, ok := db.secrets.Load(name); ok {
		return v.([]byte), nil
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	var v string
	err := db.pool.QueryRow(ctx, `WITH ins AS (
			INSERT INTO gatehouse.settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING value)
		SELECT value FROM ins UNION ALL SELECT value FROM gatehouse.settings WHERE name = $1 LIMIT 1`,
		"secret:"+name, base64.StdEncoding.EncodeToString(b[:])).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		// Another process created it while this statement ran: its snapshot
		// predates their commit; a new statement sees it.
		err = db.pool.QueryRow(ctx, "SELECT value FROM gatehouse.settings WHERE name = $1", "secret:"+name).Scan(&v)
	}
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	secret, err := base64.StdEncoding.DecodeString(v)
	if err == nil {
		db.secrets.Store(name, secret)
	}
	return secret, err
}

// lockSeed seeds the ids of Gatehouse's per-object advisory locks. Anyone
// connected may take any advisory lock, a tenant's query session included;
// seeded ids cannot be computed without the instance secret, so a tenant
// cannot hold another's provisioning, membership or audit-chain lock.
func (db *DB) lockSeed(ctx context.Context) (int64, error) {
	secret, err := db.Secret(ctx, "advisory-locks")
	if err != nil {
		return 0, err
	}
	return int64(binary.BigEndian.Uint64(secret[:8])), nil
}

// SetServedURL records the public URL a server on this database started with,
// so that CLI commands run elsewhere (gatehouse token mint) can name the
// server their result is for.
func (db *DB) SetServedURL(ctx context.Context, url string) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO gatehouse.settings (name, value) VALUES ('served_url', $1)
		ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()`, url)
	return err
}

// ServedURL is the public URL the last server on this database started
// with; "" when none has.
func (db *DB) ServedURL(ctx context.Context) (string, error) {
	var v string
	err := db.pool.QueryRow(ctx, "SELECT value FROM gatehouse.settings WHERE name = 'served_url'").Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return v, err
}
