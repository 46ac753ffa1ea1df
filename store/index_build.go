package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// An index built on a live table is built concurrently (CREATE INDEX
// CONCURRENTLY), so that the table's writes go on meanwhile. Three things
// about such a build (PostgreSQL documentation, CREATE INDEX, "Building
// Indexes Concurrently") shape ensureIndexConcurrently:
//
//   - A build that fails or is cancelled (a lock wait that ran out, a
//     deploy that stopped the process, a crash) leaves the index behind,
//     marked INVALID: no query uses it, yet every write still updates it.
//     CREATE INDEX CONCURRENTLY IF NOT EXISTS then finds the name taken
//     and does nothing, so a retry that relied on it left the tenant
//     without its index for good, and its searches on the exact path. An
//     invalid index found before a build is dropped (DROP INDEX
//     CONCURRENTLY) and built again; one left by a build that just failed
//     is dropped at once, when its locks allow.
//   - The build waits for its table's SHARE UPDATE EXCLUSIVE lock (held by
//     a VACUUM, an ANALYZE, DDL, another such build) and then for every
//     transaction that writes the table or holds an older snapshot (a long
//     query, pg_dump). Each wait lasts at most indexLockWait
//     (lock_timeout): past it the build fails with [ErrIndexBuildLocked],
//     and the caller tries again later, instead of holding its worker for
//     as long as the other session runs.
//   - Two builds of one index (replicas' workers) would each see the
//     other's invalid index as a leftover. A build holds a session
//     advisory lock per index, and an invalid index that a build in
//     progress is working on (pg_stat_progress_create_index: an operator's
//     too) is left alone: both return [ErrIndexBuilding] at once.
//
// Behind a transaction pooler (Options.TransactionPooler) nothing lasts
// from one statement to the next on a connection, so there is neither the
// advisory lock nor the lock_timeout: the progress view alone keeps
// builds apart, and lock waits are unbounded.
const indexLockWait = 2 * time.Second

// ErrIndexBuildLocked is the error of an index build that waited longer
// than its bound for a lock: another session writes, reads or maintains
// the table. It wraps [ErrUnavailable] (and the lock_not_available error,
// so [LockTimedOut] reports it): try again later.
var ErrIndexBuildLocked = fmt.Errorf("%w: building the index waited too long for a lock held by another session (a long transaction, a dump, maintenance); it is tried again later", ErrUnavailable)

// ErrIndexBuilding is the error of an index build that another session
// (another replica) is running: nothing was done; check again later.
var ErrIndexBuilding = errors.New("store: another session is building the index")

// indexLockWaitSQL is indexLockWait for set_config('lock_timeout', …).
var indexLockWaitSQL = strconv.FormatInt(indexLockWait.Milliseconds(), 10) + "ms"

// ensureIndexConcurrently makes sure schema has a valid index named name,
// building it with "CREATE INDEX CONCURRENTLY name ON schema.table "+using
// when it is missing or invalid (see the top of this file). schema, table
// and name are quoted here; using is SQL text Gatehouse wrote (the method
// and columns, and any WHERE clause). It returns nil once the index is
// valid, [ErrIndexBuilding], an error wrapping [ErrIndexBuildLocked], or
// the build's or the connection's error.
func (db *DB) ensureIndexConcurrently(ctx context.Context, schema, table, name, using string) (err error) {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The session lock and setting below must not outlive this function
	// on a pooled connection: a connection whose reset failed is closed.
	clean := true
	defer func() {
		if !clean {
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
		conn.Release()
	}()
	qualified := pgx.Identifier{schema, name}.Sanitize()
	if !db.pooled {
		seed, err := db.lockSeed(ctx)
		if err != nil {
			return err
		}
		clean = false
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtextextended('gatehouse.index-build:' || $1, $2))",
			schema+"."+name, seed).Scan(&got); err != nil {
			return err
		}
		if !got {
			clean = true
			return fmt.Errorf("%s: %w", qualified, ErrIndexBuilding)
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_, uerr := conn.Exec(rctx, "SELECT pg_advisory_unlock_all()")
			if uerr == nil {
				_, uerr = conn.Exec(rctx, "RESET lock_timeout")
			}
			clean = uerr == nil
		}()
		if _, err := conn.Exec(ctx, "SELECT set_config('lock_timeout', $1, false)", indexLockWaitSQL); err != nil {
			return err
		}
	}
	valid, err := indexValid(ctx, conn.Conn(), schema, name)
	if err != nil {
		return err
	}
	switch {
	case valid != nil && *valid:
		return nil
	case valid != nil: // left by a build that did not finish, or one in progress
		if building, err := indexBuilding(ctx, conn.Conn(), schema, name); err != nil || building {
			return errors.Join(err, fmt.Errorf("%s: %w", qualified, ErrIndexBuilding))
		}
		if _, err := conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+qualified); err != nil {
			return fmt.Errorf("dropping the invalid index %s: %w", qualified, lockedAs(ErrIndexBuildLocked, err))
		}
	}
	_, err = conn.Exec(ctx, "CREATE INDEX CONCURRENTLY IF NOT EXISTS "+pgx.Identifier{name}.Sanitize()+" ON "+
		pgx.Identifier{schema, table}.Sanitize()+" "+using)
	if err != nil {
		if ctx.Err() == nil {
			// What the failed build left, dropped now if its locks allow
			// (else before the next build).
			if v, verr := indexValid(ctx, conn.Conn(), schema, name); verr == nil && v != nil && !*v {
				_, _ = conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+qualified)
			}
		}
		return fmt.Errorf("building the index %s: %w", qualified, lockedAs(ErrIndexBuildLocked, err))
	}
	if valid, err = indexValid(ctx, conn.Conn(), schema, name); err != nil {
		return err
	}
	if valid != nil && !*valid {
		// IF NOT EXISTS found another session's build under way.
		if building, err := indexBuilding(ctx, conn.Conn(), schema, name); err != nil || building {
			return errors.Join(err, fmt.Errorf("%s: %w", qualified, ErrIndexBuilding))
		}
	}
	if valid == nil || !*valid {
		return fmt.Errorf("building the index %s: it is not valid after the build", qualified)
	}
	return nil
}

// indexValid reports whether schema's index name is valid
// (pg_index.indisvalid); nil when there is no such index.
func indexValid(ctx context.Context, conn *pgx.Conn, schema, name string) (*bool, error) {
	var valid bool
	err := conn.QueryRow(ctx, `SELECT i.indisvalid FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, schema, name).Scan(&valid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &valid, nil
}

// indexBuilding reports whether a CREATE INDEX (or REINDEX) is building
// schema's index name now, in any session (pg_stat_progress_create_index).
func indexBuilding(ctx context.Context, conn *pgx.Conn, schema, name string) (bool, error) {
	var building bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
		JOIN pg_class c ON c.oid = p.index_relid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2)`, schema, name).Scan(&building)
	return building, err
}
