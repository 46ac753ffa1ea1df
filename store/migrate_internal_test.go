package store

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestMigrationLockedCountsDeadlocks: a tenant migration that another
// session's lock stopped is marked as held up by a lock whether its wait
// ran out (55P03) or PostgreSQL ended it as a deadlock (40P01: what
// meeting a concurrent index build usually gives), so that it is retried
// rather than failing a start or `gatehouse migrate`; its own errors are
// not.
func TestMigrationLockedCountsDeadlocks(t *testing.T) {
	for _, c := range []struct {
		code   string
		locked bool
	}{{"55P03", true}, {"40P01", true}, {"42P01", false}, {"23505", false}} {
		err := migrationLocked(fmt.Errorf("tenant a: migration 0009_x: %w", &pgconn.PgError{Code: c.code}))
		if errors.Is(err, ErrMigrationLocked) != c.locked || MigrationsOnlyLocked(errors.Join(err)) != c.locked || !errors.As(err, new(*pgconn.PgError)) {
			t.Errorf("SQLSTATE %s: %v; want locked %v, the PostgreSQL error kept", c.code, err, c.locked)
		}
	}
	if err := migrationLocked(nil); err != nil {
		t.Errorf("no error: %v", err)
	}
}
