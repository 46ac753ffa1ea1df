package store

import (
	"context"
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
)

// Invalidation tells caches to forget an object that changed.
type Invalidation struct {
	Kind string
	ID   string
}

// notify queues inv for delivery when tx commits.
func notify(ctx context.Context, tx pgx.Tx, inv Invalidation) error {
	_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", invalidationChannel, inv.Kind+":"+inv.ID)
	return err
}

// Listen delivers invalidations committed by any process until ctx ends,
// reconnecting after failures. Because a notification sent while the
// listener was disconnected is lost, handle is also called with
// Invalidation{Kind: "*"} after every (re)connect: drop everything then.
func (db *DB) Listen(ctx context.Context, handle func(Invalidation)) {
	const initial = 100 * time.Millisecond
	backoff := initial
	for ctx.Err() == nil {
		connected, err := db.listenOnce(ctx, handle)
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
		kind, id, ok := strings.Cut(n.Payload, ":")
		if !ok {
			db.log.Warn("ignoring malformed invalidation", "payload", n.Payload)
			continue
		}
		handle(Invalidation{Kind: kind, ID: id})
	}
}
