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

// TestMigrationsTried: MigrateTenants' error says whether any tenant was
// tried, or all were only held back (the maintenance loop backs off only
// after tries).
func TestMigrationsTried(t *testing.T) {
	held := &MigrationLockedError{Tenant: "a", RetryAfter: CatchUpPause, err: ErrMigrationLocked}
	tried := &MigrationLockedError{Tenant: "b", RetryAfter: CatchUpPause, Tried: true, err: migrationLocked(&pgconn.PgError{Code: "55P03"})}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.Join(held), false},
		{errors.Join(held, held), false},
		{errors.Join(held, tried), true},
		{errors.Join(errors.New("tenant c: migration 0009_x: syntax error")), true},
	} {
		if got := MigrationsTried(c.err); got != c.want {
			t.Errorf("MigrationsTried(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
