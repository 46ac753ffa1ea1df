package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
//     other's invalid index as a leftover, and two concurrent builds on
//     one table wait for each other's snapshots until PostgreSQL ends one
//     as a deadlock (40P01). A build holds a session advisory lock per
//     index; an invalid index is not dropped while any index build is in
//     progress on its table (pg_stat_progress_create_index: an operator's
//     too); and a build ended as a deadlock is another's: each returns
//     [ErrIndexBuilding], to be tried again later.
//
// Behind a transaction pooler (Options.TransactionPooler) nothing lasts
// from one statement to the next on a connection, so there is neither the
// advisory lock nor the lock_timeout: the progress view and the deadlock
// rule keep builds apart (a build that finished between the check and a
// DROP can still be dropped, and is built again; so it is during a rolling
// deploy from a release without the lock), and a watchdog bounds the lock
// waits instead (see [DB.execLockBounded]).
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
		if building, err := db.dropAbandoned(ctx, conn.Conn(), schema, table, name); err != nil {
			return err
		} else if building {
			return fmt.Errorf("%s: %w", qualified, ErrIndexBuilding)
		}
	}
	err = db.execLockBounded(ctx, conn.Conn(), "CREATE INDEX CONCURRENTLY IF NOT EXISTS "+pgx.Identifier{name}.Sanitize()+" ON "+
		pgx.Identifier{schema, table}.Sanitize()+" "+using)
	if err != nil {
		if deadlocked(err) {
			// Another build on the table, or a migration's ALTER, waited
			// for this one while it waited for them: PostgreSQL ended one
			// of them. If a build goes on, it is the other's turn; if not,
			// this one was ended, and what it left is dropped below. Either
			// way the next try builds it, without a back-off.
			if building, berr := indexBuilding(ctx, conn.Conn(), schema, table); berr == nil && building {
				return fmt.Errorf("%s: %w (%w)", qualified, ErrIndexBuilding, err)
			}
			defer func() { err = fmt.Errorf("%s: %w (%w)", qualified, ErrIndexBuilding, err) }()
		}
		if ctx.Err() == nil {
			// What the failed build left, dropped now if its locks allow
			// (else before the next build).
			if v, verr := indexValid(ctx, conn.Conn(), schema, name); verr == nil && v != nil && !*v {
				_, _ = db.dropAbandoned(ctx, conn.Conn(), schema, table, name)
			}
		}
		return fmt.Errorf("building the index %s: %w", qualified, lockedAs(ErrIndexBuildLocked, err))
	}
	if valid, err = indexValid(ctx, conn.Conn(), schema, name); err != nil {
		return err
	}
	if valid != nil && !*valid {
		// IF NOT EXISTS found another session's index: its build is under
		// way, or it ended unfinished (PostgreSQL ended it as a deadlock
		// with this one), and what it left is dropped for the next try.
		if _, err := db.dropAbandoned(ctx, conn.Conn(), schema, table, name); err != nil {
			return err
		}
		return fmt.Errorf("%s: %w", qualified, ErrIndexBuilding)
	}
	if valid == nil {
		// Built, then dropped by another session before this look: a
		// builder behind a transaction pooler that took it for a leftover
		// of its own failed build (see dropAbandoned), or an operator.
		return fmt.Errorf("building the index %s: another session dropped it after it was built: %w", qualified, ErrIndexBuilding)
	}
	return nil
}

// dropAbandoned drops schema's invalid index name (DROP INDEX
// CONCURRENTLY) unless an index build is running on its table (then it
// drops nothing and reports building) or the index is, by now, valid or
// gone (then it drops nothing). A drop that ran out of its lock wait is
// an error wrapping [ErrIndexBuildLocked].
func (db *DB) dropAbandoned(ctx context.Context, conn *pgx.Conn, schema, table, name string) (building bool, err error) {
	if building, err = indexBuilding(ctx, conn, schema, table); err != nil || building {
		return building, err
	}
	// A build that was running when the index was found invalid may have
	// finished since (behind a transaction pooler no advisory lock keeps
	// builders apart): looked at again, a valid index is left alone. A
	// build that finishes between this look and the DROP is still lost,
	// and built again later (PostgreSQL has no conditional DROP).
	if valid, err := indexValid(ctx, conn, schema, name); err != nil || valid == nil || *valid {
		return false, err
	}
	qualified := pgx.Identifier{schema, name}.Sanitize()
	if err := db.execLockBounded(ctx, conn, "DROP INDEX CONCURRENTLY IF EXISTS "+qualified); err != nil {
		return false, fmt.Errorf("dropping the invalid index %s: %w", qualified, lockedAs(ErrIndexBuildLocked, err))
	}
	return false, nil
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

// indexBuilding reports whether a CREATE INDEX (or REINDEX) is building an
// index on schema's table now, in another session
// (pg_stat_progress_create_index). It matches the table, not the index:
// the view names the index only once the build has made it visible.
func indexBuilding(ctx context.Context, conn *pgx.Conn, schema, table string) (bool, error) {
	var building bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_progress_create_index
		WHERE relid = $1::regclass AND pid <> pg_backend_pid())`, pgx.Identifier{schema, table}.Sanitize()).Scan(&building)
	return building, err
}

// The watchdog of [DB.execLockBounded]: how often it looks at its
// statement's backend, how long one look may take (a pooler whose server
// connections are all taken queues it) and connecting its connection, and
// how long it may go without seeing the statement before it cancels it,
// unable to bound its waits.
const (
	lockWaitPoll     = 100 * time.Millisecond
	lockWaitPollWait = 500 * time.Millisecond
	lockWaitConnect  = 5 * time.Second
	lockWaitBlind    = 4 * indexLockWait
)

// errLockWaitRanOut is the error of a statement that [DB.execLockBounded]
// cancelled because one of its lock waits lasted longer than
// indexLockWait, and errLockWaitUnwatched of one it cancelled because it
// could not see it for lockWaitBlind: [LockTimedOut] reports both as it
// reports lock_timeout's 55P03 (try again later).
var (
	errLockWaitRanOut    = fmt.Errorf("the statement waited longer than %v for a lock held by another session, and was cancelled", indexLockWait)
	errLockWaitUnwatched = fmt.Errorf("the statement's lock waits could not be watched for %v (no free connection behind the transaction pooler), and it was cancelled", lockWaitBlind)
)

// execLockBounded runs sql on conn: a statement that cannot run inside a
// transaction block (CREATE or DROP INDEX CONCURRENTLY), each of whose
// lock waits must last at most indexLockWait. On a direct connection
// lock_timeout, set for the session by ensureIndexConcurrently, does
// that. Behind a transaction pooler no session setting reaches the
// statement (the pooler may run it on any of its server connections;
// PgBouncer documentation, "Feature matrix for pooling modes"), and a SET
// in the same message would make it a transaction block, which such a
// statement refuses. There a watchdog bounds the waits instead:
//
//   - It runs on a connection of its own, opened for the statement
//     (through the pooler too, so it reaches PostgreSQL as the same role),
//     and looks every lockWaitPoll for the statement's backend in
//     pg_stat_activity, by a comment unique to this run that begins the
//     statement's text.
//   - A wait is the backend waiting for one lock (wait_event_type 'Lock';
//     the lock it has not been granted, from pg_locks: a relation,
//     another transaction, a virtual transaction): a wait for another
//     lock is a new wait, as it is for lock_timeout, however close behind
//     the previous one.
//   - Once it has seen one wait last indexLockWait, it cancels the
//     statement through the statement's own connection: a cancel request
//     with its key, which PgBouncer (1.18 and later, which holds a server
//     connection back until a cancel sent for it is done) forwards to the
//     server connection the statement runs on, never to another client's
//     statement. The statement's error then wraps errLockWaitRanOut and
//     the query_canceled error. A wait that ends just as the cancel is
//     sent still cancels the statement, as lock_timeout's race does. The
//     watch goes on until the statement returns, and the cancel is sent
//     again every indexLockWait: a pooler drops one for a client still
//     queued for a server connection.
//   - A look that fails or takes over lockWaitPollWait (the pooler has no
//     free server connection) is retried. After lockWaitBlind without a
//     look, a statement last seen waiting for a lock, or never seen, is
//     cancelled (errLockWaitUnwatched): its waits cannot be bounded, and
//     it is not left to wait for as long as another session holds it up.
//     One last seen working is left to work (a long build is not thrown
//     away because the pooler is busy), though a wait it begins unseen is
//     unbounded. The first failed look is logged.
//
// Where pg_stat_activity does not show the statement's text to the
// watchdog's role, or track_activities is off, the watchdog never finds
// the statement waiting, and its waits are bounded by ctx alone, as
// before (the embedding worker's has no deadline).
func (db *DB) execLockBounded(ctx context.Context, conn *pgx.Conn, sql string) error {
	if !db.pooled {
		_, err := conn.Exec(ctx, sql)
		return err
	}
	var token [12]byte
	if _, err := rand.Read(token[:]); err != nil {
		return err
	}
	mark := "/* gatehouse lock-bounded " + hex.EncodeToString(token[:]) + " */ "
	wctx, stop := context.WithCancel(ctx)
	var why error // the watchdog's reason for a cancel; read after done
	done := make(chan struct{})
	go func() {
		defer close(done)
		why = db.watchLockWaits(wctx, conn.PgConn(), mark, indexLockWait)
	}()
	_, err := conn.Exec(ctx, mark+sql)
	stop()
	<-done
	var pgErr *pgconn.PgError
	if err != nil && why != nil && errors.As(err, &pgErr) && pgErr.Code == "57014" { // query_canceled
		return fmt.Errorf("%w (%w)", why, err)
	}
	return err
}

// watchedWaitSQL finds the backend running the statement whose text begins
// with $1 while it waits for a lock, and names the lock it waits for.
const watchedWaitSQL = `SELECT coalesce((SELECT string_agg(concat_ws(' ', l.locktype, l.database, l.relation, l.page, l.tuple,
		l.virtualxid, l.transactionid, l.classid, l.objid, l.objsubid, l.mode), ',')
	FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted), '')
	FROM pg_stat_activity a WHERE a.state = 'active' AND a.wait_event_type = 'Lock' AND starts_with(a.query, $1)
		AND a.leader_pid IS NULL LIMIT 1`

// watchLockWaits watches, on a connection of its own, the backend running
// build's statement, whose text begins with mark (see
// [DB.execLockBounded]), until ctx ends, and cancels it once one of its
// lock waits has lasted bound, or once it has gone lockWaitBlind without
// a look (unless last seen working). It returns why it last sent a cancel
// (errLockWaitRanOut, errLockWaitUnwatched), or nil.
func (db *DB) watchLockWaits(ctx context.Context, build *pgconn.PgConn, mark string, bound time.Duration) (why error) {
	var watch *pgx.Conn // opened at the first look, again after it broke
	defer func() {
		if watch != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = watch.Close(cctx)
			cancel()
		}
	}()
	tick := time.NewTicker(lockWaitPoll)
	defer tick.Stop()
	seen := time.Now()  // when a look last succeeded
	running := false    // that look found the statement not waiting for a lock
	var since time.Time // when the current wait was first seen
	var waitingFor string
	var sent time.Time // when a cancel was last sent
	logged := false
	cancelFor := func(reason error, now time.Time) {
		// Sent again every bound while the statement goes on: a pooler
		// drops a cancel request for a client still queued for a server
		// connection (PgBouncer: "cancel request for idle client").
		if (why == nil || now.Sub(sent) >= bound) && cancelBuild(ctx, build) {
			why, sent = reason, now
		}
	}
	for {
		select {
		case <-ctx.Done():
			return why
		case <-tick.C:
		}
		var lock string
		var err error
		if watch == nil || watch.IsClosed() {
			cctx, cancel := context.WithTimeout(ctx, lockWaitConnect)
			if watch, err = pgx.ConnectConfig(cctx, db.pool.Config().ConnConfig.Copy()); err != nil {
				watch = nil
			}
			cancel()
		}
		if watch != nil {
			pctx, cancel := context.WithTimeout(ctx, lockWaitPollWait)
			err = watch.QueryRow(pctx, watchedWaitSQL, mark).Scan(&lock)
			cancel()
		}
		now := time.Now()
		switch {
		case ctx.Err() != nil:
			return why
		case errors.Is(err, pgx.ErrNoRows): // running, not waiting for a lock (or not started, or done)
			seen, running, since = now, true, time.Time{}
			continue
		case err != nil:
			if !logged && db.log != nil {
				logged = true
				db.log.Warn("index build: watching its lock waits failed; trying again", "error", err)
			}
			// Blind: a statement last seen working is left to work (a
			// long build is not thrown away because the pooler is busy);
			// one last seen waiting, or never seen, is cancelled.
			if !running && now.Sub(seen) >= lockWaitBlind {
				cancelFor(errLockWaitUnwatched, now)
			}
			continue
		}
		seen, running = now, false
		if since.IsZero() || lock != waitingFor {
			since, waitingFor = now, lock
			continue
		}
		if now.Sub(since) >= bound {
			cancelFor(errLockWaitRanOut, now)
		}
	}
}

// cancelBuild sends build's connection a cancel request for the statement
// it runs, and reports whether it was sent.
func cancelBuild(ctx context.Context, build *pgconn.PgConn) bool {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return build.CancelRequest(cctx) == nil
}
