package store

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ControlLaneOf is the control lane of tenant id's work now (without
// counting it as met).
func ControlLaneOf(db *DB, id string) int { return laneAmong(id, db.ctl.inUse()) }

// ControlLaneMet returns, for each control lane's connection (in lane
// order, two a lane: connection i is lane i/2's), the ids of the tenants
// it has served. While no audit work runs.
func ControlLaneMet(ctx context.Context, db *DB) ([]map[string]struct{}, error) {
	var met []map[string]struct{}
	err := db.ctl.pool.each(ctx, func(c *pgxpool.Conn) error {
		set, _ := c.Conn().PgConn().CustomData()[metTenantsKey].(map[string]struct{})
		met = append(met, set)
		return nil
	})
	return met, err
}

// HoldControlLane takes a connection of lane until release is called, as a
// chain pass on that lane would (background) or a group commit's part.
func HoldControlLane(ctx context.Context, db *DB, lane int, background bool) (release func(), err error) {
	role := callWork
	if background {
		role = backgroundWork
	}
	_, release, err = db.ctl.acquire(ctx, lane, role, "")
	return release, err
}

// OneConnPerControlLane makes the DBs opened during t have control lanes of
// one connection, for tests that follow what one connection served.
func OneConnPerControlLane(t testing.TB) {
	old := controlLaneConns
	controlLaneConns = 1
	t.Cleanup(func() { controlLaneConns = old })
}

// SetControlLaneTenants sets how many recently met tenants one control
// lane of db is meant to serve (see controlLaneTenants), so that a test
// spreads a few tenants over several lanes without bounding the tenants a
// connection serves.
func SetControlLaneTenants(db *DB, n int) {
	db.ctl.mu.Lock()
	db.ctl.laneTenants = n
	db.ctl.mu.Unlock()
}

// ControlLanePrepared returns, for each control lane connection (in lane
// order), the texts of the statements PostgreSQL holds prepared on it
// (pg_prepared_statements). While no audit work runs.
func ControlLanePrepared(ctx context.Context, db *DB) ([][]string, error) {
	var all [][]string
	err := db.ctl.pool.each(ctx, func(c *pgxpool.Conn) error {
		rows, _ := c.Query(ctx, "SELECT statement FROM pg_prepared_statements ORDER BY statement")
		sqls, err := pgx.CollectRows(rows, pgx.RowTo[string])
		all = append(all, sqls)
		return err
	})
	return all, err
}

// ControlLaneSettings returns, for each control lane connection, the
// value of setting name in its session (outside any transaction).
func ControlLaneSettings(ctx context.Context, db *DB, name string) ([]string, error) {
	var out []string
	err := db.ctl.pool.each(ctx, func(c *pgxpool.Conn) error {
		var v string
		err := c.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v)
		out = append(out, v)
		return err
	})
	return out, err
}

// EnsureIndexConcurrently is ensureIndexConcurrently, for tests with an
// index of any kind (pgvector's is not installed here).
func EnsureIndexConcurrently(ctx context.Context, db *DB, schema, table, name, using string) error {
	return db.ensureIndexConcurrently(ctx, schema, table, name, using)
}

// The reasons the index build's watchdog gives for a cancel (execLockBounded).
var (
	ErrLockWaitRanOut    = errLockWaitRanOut
	ErrLockWaitUnwatched = errLockWaitUnwatched
)

// SkipIntake has the group commit of db write calls' records straight into
// their tenants' audit logs, not into the audit intake, for d (as it does
// after the intake's INSERT ran out of its lock wait).
func SkipIntake(db *DB, d time.Duration) { db.intakeSkipUntil.Store(time.Now().Add(d).UnixNano()) }

// UseIntake has the group commit of db write calls' records into the audit
// intake again (undoing SkipIntake).
func UseIntake(db *DB) { db.intakeSkipUntil.Store(0) }
