package store

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// invalidationChannel carries cache invalidations between Gatehouse processes.
const invalidationChannel = "gatehouse_invalidate"

// Invalidation kinds.
const (
	InvalidateAPIKey = "apikey" // ID is an API key id
	InvalidateTenant = "tenant" // ID is a tenant id
	InvalidateFamily = "family" // ID is a sign-in's refresh-token family (authserver)
)

// Invalidation tells caches to forget an object that changed.
type Invalidation struct {
	Kind string
	ID   string
}

// Any database user can NOTIFY any channel (a tenant's query session too),
// so invalidations are signed: kind:id:mac, with an HMAC keyed by an
// instance secret. Unsigned or forged ones are ignored.

// notify queues inv for delivery when tx commits.
func (db *DB) notify(ctx context.Context, tx pgx.Tx, inv Invalidation) error {
	mac, err := db.invalidationMAC(ctx, inv)
	if err != nil {
		return err
	}
	// NOTIFY for listeners, a row for pollers (behind a transaction
	// pooler), in one statement.
	_, err = tx.Exec(ctx, "INSERT INTO gatehouse.invalidations (payload) SELECT $2::text FROM pg_notify($1, $2)",
		invalidationChannel, inv.Kind+":"+inv.ID+":"+mac)
	return err
}

// invalidationSecret names the instance secret (see [DB.Secret]) that
// signs invalidations.
const invalidationSecret = "invalidations"

func (db *DB) invalidationMAC(ctx context.Context, inv Invalidation) (string, error) {
	secret, err := db.Secret(ctx, invalidationSecret)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(inv.Kind + ":" + inv.ID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16]), nil
}

// parseInvalidation checks a notification's signature.
func (db *DB) parseInvalidation(ctx context.Context, payload string) (Invalidation, bool) {
	i := strings.LastIndexByte(payload, ':')
	kind, id, ok := strings.Cut(payload[:max(i, 0)], ":")
	if i < 0 || !ok {
		return Invalidation{}, false
	}
	inv := Invalidation{Kind: kind, ID: id}
	mac, err := db.invalidationMAC(ctx, inv)
	return inv, err == nil && hmac.Equal([]byte(mac), []byte(payload[i+1:]))
}

// Listen delivers invalidations committed by any process until ctx ends,
// reconnecting after failures. Because a notification sent while the
// listener was disconnected is lost, handle is also called with
// Invalidation{Kind: "*"} after every (re)connect: drop everything then.
func (db *DB) Listen(ctx context.Context, handle func(Invalidation)) {
	const initial = 100 * time.Millisecond
	backoff := initial
	once := db.listenOnce
	if db.pooled {
		once = db.pollOnce
	}
	for ctx.Err() == nil {
		connected, err := once(ctx, handle)
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = initial
		}
		db.log.Warn("invalidation listener disconnected; retrying", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (db *DB) listenOnce(ctx context.Context, handle func(Invalidation)) (connected bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, db.pool.Config().ConnConfig)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+invalidationChannel); err != nil {
		return false, err
	}
	handle(Invalidation{Kind: "*"})
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		inv, ok := db.parseInvalidation(ctx, n.Payload)
		if !ok {
			db.log.Warn("ignoring an unsigned or forged invalidation", "payload", truncate(n.Payload, 100))
			continue
		}
		handle(inv)
	}
}

// pollInterval bounds how late a polling replica learns of a change.
const pollInterval = 200 * time.Millisecond

// pollOnce reads new invalidations every pollInterval until an error. Rows
// are read by time rather than by id, over a window wider than any
// transaction that writes one, because ids commit out of order; the ids
// seen in the window are remembered so each is handled once.
func (db *DB) pollOnce(ctx context.Context, handle func(Invalidation)) (connected bool, err error) {
	var since time.Time // the database's clock, not ours
	if err := db.pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&since); err != nil {
		return false, err
	}
	handle(Invalidation{Kind: "*"})
	seen := map[int64]time.Time{}
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-t.C:
		}
		var ids []int64
		var payloads []string
		var ats []time.Time
		err := db.pool.QueryRow(ctx, `SELECT clock_timestamp(), array_agg(id ORDER BY id), array_agg(payload ORDER BY id), array_agg(at ORDER BY id)
			FROM gatehouse.invalidations WHERE at > $1::timestamptz - interval '10 seconds'`, since).Scan(&since, &ids, &payloads, &ats)
		if err != nil {
			return true, err
		}
		for i, id := range ids {
			if _, dup := seen[id]; dup {
				continue
			}
			seen[id] = ats[i]
			if inv, ok := db.parseInvalidation(ctx, payloads[i]); ok {
				handle(inv)
			} else {
				db.log.Warn("ignoring an unsigned or forged invalidation", "payload", truncate(payloads[i], 100))
			}
		}
		for id, at := range seen {
			if at.Before(since.Add(-time.Minute)) {
				delete(seen, id)
			}
		}
	}
}

// ForgetInvalidations drops invalidation rows every poller has read.
func (db *DB) ForgetInvalidations(ctx context.Context) error {
	_, err := db.pool.Exec(ctx, "DELETE FROM gatehouse.invalidations WHERE at < clock_timestamp() - interval '1 minute'")
	return err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
