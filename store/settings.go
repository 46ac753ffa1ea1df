package store

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
)

// Secret returns the instance secret called name, creating a random one
// (32 bytes) on first use. Every process sharing the database gets the same.
func (db *DB) Secret(ctx context.Context, name string) ([]byte, error) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	var v string
	err := db.pool.QueryRow(ctx, `WITH ins AS (
			INSERT INTO gatehouse.settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING value)
		SELECT value FROM ins UNION ALL SELECT value FROM gatehouse.settings WHERE name = $1 LIMIT 1`,
		"secret:"+name, base64.StdEncoding.EncodeToString(b[:])).Scan(&v)
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return base64.StdEncoding.DecodeString(v)
}
