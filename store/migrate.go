package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse-mcp/gatehouse/migrations"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// controlLock is the advisory lock id held while migrating the control schema.
const controlLock = int64(0x6761746568) // "gateh"

// MigrateControl brings the control schema up to date. Safe to run from
// several processes at once. A schema newer than this release is accepted:
// during a rolling deploy the previous release keeps running on the
// migrated database, which the migration rule (additive changes only; see
// docs/deploy.md) keeps safe.
func (db *DB) MigrateControl(ctx context.Context) error {
	ms := migrations.Control()
	for {
		done, err := db.controlStep(ctx, ms)
		if err != nil || done {
			return err
		}
	}
}

// controlStep applies the next pending control migration, if any.
func (db *DB) controlStep(ctx context.Context, ms []migrations.Migration) (done bool, err error) {
	err = beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", controlLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS gatehouse;
			CREATE TABLE IF NOT EXISTS gatehouse.schema_migrations (
				version integer PRIMARY KEY,
				name text NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var v int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM gatehouse.schema_migrations").Scan(&v); err != nil {
			return err
		}
		if v > len(ms) {
			db.log.Warn("the control schema is newer than this release: running as the previous release during a rolling deploy (or after a rollback)",
				"schema_version", v, "release_knows", len(ms))
			done = true
			return nil
		}
		if v == len(ms) {
			done = true
			return nil
		}
		m := ms[v]
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("control migration %04d_%s: %w", m.Version, m.Name, err)
		}
		db.log.Info("applied control migration", "version", m.Version, "name", m.Name)
		_, err := tx.Exec(ctx, "INSERT INTO gatehouse.schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name)
		return err
	})
	return done, err
}

// MigrationStatus reports whether the database is at this release's
// migrations.
type MigrationStatus struct {
	Control, ControlWant int
	TenantsBehind        int
}

// Current reports whether nothing is pending (a newer control schema, from
// the next release, counts as current).
func (s MigrationStatus) Current() bool {
	return s.Control >= s.ControlWant && s.TenantsBehind == 0
}

func (s MigrationStatus) String() string {
	return fmt.Sprintf("control schema at version %d of %d, %d tenant schema(s) behind", s.Control, s.ControlWant, s.TenantsBehind)
}

// MigrationStatus reads the applied migration versions.
func (db *DB) MigrationStatus(ctx context.Context) (MigrationStatus, error) {
	s := MigrationStatus{ControlWant: len(migrations.Control())}
	err := db.pool.QueryRow(ctx, `SELECT
			coalesce((SELECT max(version) FROM gatehouse.schema_migrations), 0),
			(SELECT count(*) FROM gatehouse.tenants WHERE schema_version < $1)`,
		len(migrations.Tenant())).Scan(&s.Control, &s.TenantsBehind)
	if err != nil {
		return s, fmt.Errorf("reading migration status: %w", err)
	}
	return s, nil
}

// MigrateTenants brings every tenant schema up to date, parallel at a time,
// calling progress (if not nil) after each tenant. It migrates every tenant
// it can and returns all failures together, except that once
// migrationLockedMax tenants have been held up by locks it tries no more
// (the rest fail with ErrMigrationLocked too, untried): a lock on every
// tenant's tables (a pg_dump) would otherwise cost a lock wait per tenant,
// an hour at 10,000 tenants, each wait holding up that tenant's calls. A
// tenant held back after a recent try met a lock (see migrateTenant) fails
// with a [*MigrationLockedError] without a try, and does not count.
func (db *DB) MigrateTenants(ctx context.Context, parallel int, progress func(done, total int)) error {
	rows, _ := db.pool.Query(ctx, "SELECT id FROM gatehouse.tenants WHERE schema_version < $1 ORDER BY created_at", len(migrations.Tenant()))
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("listing tenants to migrate: %w", err)
	}
	var (
		mu      sync.Mutex
		errs    []error
		done    int
		locked  int
		skipped int
		wg      sync.WaitGroup
		work    = make(chan string)
	)
	for range max(1, parallel) {
		wg.Go(func() {
			for id := range work {
				mu.Lock()
				stop := locked >= migrationLockedMax
				mu.Unlock()
				var err error
				if !stop {
					err = db.migrateTenant(ctx, id, migrationLockWait)
				}
				mu.Lock()
				switch {
				case stop:
					skipped++
				case errors.Is(err, ErrMigrationLocked):
					if migrationTried(err) { // a tenant held back costs no lock wait
						locked++
					}
					errs = append(errs, err)
				case err != nil:
					errs = append(errs, err)
				}
				done++
				if progress != nil {
					progress(done, len(ids))
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	if skipped > 0 {
		errs = append(errs, fmt.Errorf("%d more tenant schema(s) not tried after %d held up by locks: %w", skipped, locked, ErrMigrationsStopped))
	}
	return errors.Join(errs...)
}

// migrationLockedMax is how many tenants held up by locks MigrateTenants
// takes before it stops trying the others.
const migrationLockedMax = 16

// ErrMigrationsStopped is [DB.MigrateTenants]' error for the tenants it did
// not try after migrationLockedMax were held up by locks: something locks
// many tenants' tables (a pg_dump), not one tenant's maintenance. It wraps
// [ErrMigrationLocked].
var ErrMigrationsStopped = fmt.Errorf("%w; the others were not tried", ErrMigrationLocked)

// TenantSchemaVersion is the tenant schema version this release works with.
// Every request compares against it: read the embedded files once.
func TenantSchemaVersion() int { return tenantSchemaVersion() }

var tenantSchemaVersion = sync.OnceValue(func() int { return len(migrations.Tenant()) })

// CatchUpTenant migrates one tenant's schema to this release's version (a
// tenant the previous release created during a rolling deploy), before a
// call of that tenant: each of its lock waits lasts at most
// catchUpLockWait, shorter than a migration run's (the caller waits, and
// while it waits every statement on the table queues behind it). Safe to
// run from several processes at once: they take turns on the tenant's row.
// When the tenant is held back (see migrateTenant), or another process's
// try holds its row past catchUpLockWait, the error is a
// [*MigrationLockedError] (wrapping [ErrMigrationLocked]) that says for
// how long not to try again.
func (db *DB) CatchUpTenant(ctx context.Context, id string) error {
	return db.migrateTenant(ctx, id, catchUpLockWait)
}

// catchUpLockWait bounds each lock wait of CatchUpTenant.
const catchUpLockWait = 500 * time.Millisecond

// CatchUpPause is how long a tenant whose migration met a lock is held
// back from the next try, by every process (see migrateTenant).
const CatchUpPause = 5 * time.Second

// MigrationLockedError is a tenant migration's error when it is held up by
// a lock: Tried, this try met it; else a try (by any process) met it less
// than [CatchUpPause] ago, or another process is trying now, and none was
// made. Either way none is made for RetryAfter (by the database's clock).
// It wraps [ErrMigrationLocked].
type MigrationLockedError struct {
	Tenant     string // the tenant's id
	RetryAfter time.Duration
	Tried      bool
	err        error
}

func (e *MigrationLockedError) Error() string {
	if e.Tried {
		return e.err.Error()
	}
	return fmt.Sprintf("tenant %s: %v; not tried again for %v", e.Tenant, e.err, e.RetryAfter.Round(time.Millisecond))
}

func (e *MigrationLockedError) Unwrap() error { return e.err }

// migrateTenant brings tenant id's schema up to date, each lock wait
// bounded by lockWait, the tenant's row (which another process's try
// holds while it tries) included. A try held up by a lock holds the tenant
// back for CatchUpPause, for every process on the database
// (gatehouse.migration_holds, written in the try's own transaction, which
// other tries wait for on the tenant's row and then read): tries before
// then, by calls, the maintenance loop, a start or `gatehouse migrate`,
// return a [*MigrationLockedError] at once, without queuing a lock request
// that would hold up every statement on the table. (With each process
// pausing on its own, a few replicas kept a locked tenant's table held up
// most of the time its calls came.) The hold's times are read from
// clock_timestamp(), not now(): a try that waited for the row would read
// an old clock.
func (db *DB) migrateTenant(ctx context.Context, id string, lockWait time.Duration) error {
	var held *MigrationLockedError
	err := beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", lockWait.String()); err != nil {
			return err
		}
		// FOR NO KEY UPDATE: tries take turns on the row, while the
		// inserts whose foreign keys name the tenant (FOR KEY SHARE) go on.
		t, err := scanTenant(tx.QueryRow(ctx, selectTenant+" WHERE id = $1 FOR NO KEY UPDATE", id))
		if lockTimedOut(err) {
			// Another process is trying this tenant now.
			return &MigrationLockedError{Tenant: id, RetryAfter: lockWait, err: migrationLocked(err)}
		}
		if err != nil {
			return fmt.Errorf("tenant %s: %w", id, err)
		}
		if t.SchemaVersion >= len(migrations.Tenant()) {
			return nil // brought up to date by another process meanwhile
		}
		var left float64 // seconds
		err = tx.QueryRow(ctx, `SELECT extract(epoch FROM retry_at - clock_timestamp())::float8 FROM gatehouse.migration_holds
			WHERE tenant_id = $1 AND retry_at > clock_timestamp()`, id).Scan(&left)
		switch {
		case err == nil:
			return &MigrationLockedError{Tenant: id, RetryAfter: time.Duration(left * float64(time.Second)), err: ErrMigrationLocked}
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		// A savepoint, so that a try that met a lock can still record the
		// hold in this transaction.
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		if err := migrateTenantTx(ctx, sp, t, lockWait); err != nil {
			if !lockTimedOut(err) && !deadlocked(err) {
				return err
			}
			if rerr := sp.Rollback(ctx); rerr != nil {
				return errors.Join(err, rerr)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO gatehouse.migration_holds (tenant_id, retry_at)
				VALUES ($1, clock_timestamp() + make_interval(secs => $2))
				ON CONFLICT (tenant_id) DO UPDATE SET retry_at = excluded.retry_at`,
				id, CatchUpPause.Seconds()); err != nil {
				return err
			}
			held = &MigrationLockedError{Tenant: id, RetryAfter: CatchUpPause, Tried: true, err: migrationLocked(err)}
			return nil // commit the hold
		}
		if err := sp.Commit(ctx); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "DELETE FROM gatehouse.migration_holds WHERE tenant_id = $1", id)
		return err
	})
	switch {
	case err == nil && held != nil:
		return held
	case errors.As(err, &held):
		return held
	}
	return migrationLocked(err)
}

// migrationLocked is err, a tenant migration's, marked with
// ErrMigrationLocked when another session's lock stopped it: a lock wait
// that ran out (55P03), or a deadlock (40P01) PostgreSQL ended it with,
// which is what meeting a concurrent index build usually gives (the
// build waits for the migration's snapshot while the migration's ALTER
// waits for the build's lock, and PostgreSQL's check after
// deadlock_timeout, 1 s by default, comes before migrationLockWait runs
// out).
func migrationLocked(err error) error {
	if deadlocked(err) {
		return fmt.Errorf("%w: %w", ErrMigrationLocked, err)
	}
	return lockedAs(ErrMigrationLocked, err)
}

// deadlocked reports whether err is PostgreSQL's deadlock_detected (40P01).
func deadlocked(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40P01"
}

// migrationTried reports whether err, a tenant migration's, comes from a
// try: anything but a [*MigrationLockedError] that made none.
func migrationTried(err error) bool {
	var held *MigrationLockedError
	return !errors.As(err, &held) || held.Tried
}

// MigrationsTried reports whether err, from [DB.MigrateTenants], includes a
// tenant that was tried, rather than only tenants held back without a try
// (a recent try met a lock, or another process was trying them).
func MigrationsTried(err error) bool {
	return slices.ContainsFunc(tenantErrors(err), migrationTried)
}

// tenantErrors splits err, from [DB.MigrateTenants] (errors.Join of the
// tenants' errors), into those errors; nil for nil.
func tenantErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// migrationLockWait bounds each lock wait of a tenant migration
// (lock_timeout). A migration's ALTER TABLE waits for its table's ACCESS
// EXCLUSIVE lock, and while it waits every other statement on that table
// queues behind it: behind a long reader (a pg_dump, a slow query) the
// tenant's calls stalled for as long as the reader ran, and so did the
// start of a replica migrating at start-up (serve), or a call that brought
// its tenant up to date (CatchUpTenant). Past it the tenant's migration
// fails with ErrMigrationLocked, its transaction rolled back, and is tried
// again: by the maintenance loop every 30 s, by the tenant's next call, or
// by the next `gatehouse migrate`. (PostgreSQL documentation, "ALTER
// TABLE" and "Explicit Locking"; lock_timeout in "Client Connection
// Defaults".)
const migrationLockWait = 2 * time.Second

// ErrMigrationLocked is a tenant migration's error when a table it changes
// stayed locked by another session for migrationLockWait: transient (it
// wraps [ErrUnavailable]); the tenant stays at its schema version.
var ErrMigrationLocked = fmt.Errorf("%w: the tenant's tables are locked by another session (a long query, a dump, maintenance); its schema is brought up to date later", ErrUnavailable)

// MigrationsOnlyLocked reports whether err, from [DB.MigrateTenants], is
// made only of [ErrMigrationLocked] failures: every tenant it could not
// migrate was held up by a lock (or not tried after too many were), none
// by its migration's own error.
func MigrationsOnlyLocked(err error) bool {
	errs := tenantErrors(err)
	for _, e := range errs {
		if !errors.Is(e, ErrMigrationLocked) {
			return false
		}
	}
	return len(errs) > 0
}

// MigrationsHeldBack reports whether err, from [DB.MigrateTenants], says
// that it stopped trying tenants because too many were held up by locks:
// something locks many tenants' tables (a pg_dump), not one tenant's
// maintenance.
func MigrationsHeldBack(err error) bool { return errors.Is(err, ErrMigrationsStopped) }

// migrateTenantTx applies the tenant migrations t lacks, inside tx, each
// lock wait of the rest of tx bounded by lockWait, and records the new
// version on t.
func migrateTenantTx(ctx context.Context, tx pgx.Tx, t *tenancy.Tenant, lockWait time.Duration) error {
	ms := migrations.Tenant()
	if t.SchemaVersion >= len(ms) {
		return nil
	}
	if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true), set_config('lock_timeout', $2, true)",
		pgx.Identifier{t.Schema}.Sanitize(), lockWait.String()); err != nil {
		return err
	}
	role := "CURRENT_USER" // no tenant role (roles cannot be created here): grants to ourselves change nothing
	if t.DBRole != "" {
		role = pgx.Identifier{t.DBRole}.Sanitize()
	}
	for _, m := range ms[t.SchemaVersion:] {
		sql := strings.NewReplacer("{{tenant_role}}", role, "{{tenant_tag}}", strings.TrimPrefix(t.Schema, "t_")).Replace(m.SQL)
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("tenant %s: migration %04d_%s: %w", t.Key, m.Version, m.Name, err)
		}
	}
	if _, err := tx.Exec(ctx, "UPDATE gatehouse.tenants SET schema_version = $2 WHERE id = $1", t.ID, len(ms)); err != nil {
		return err
	}
	t.SchemaVersion = len(ms)
	return grantQueryRole(ctx, tx, t)
}

// queryHidden are tenant tables the query tool must not read.
var queryHidden = []string{"audit_log"}

// queryTables are the tenant tables the query tool may read: every table
// the tenant migrations create except queryHidden and document_chunks
// (semantic search's vectors, never granted to the query role). A migration that adds a
// table adds its name here (TestQueryRoleSeesEveryTableButTheHidden fails
// until it does).
//
// They are granted by name because GRANT ... ON ALL TABLES IN SCHEMA scans
// all of pg_class for the schema's tables: measured on this machine, 10 ms
// at 1,000 relations and 53 ms at 45,000 (1,500 tenants), against about
// 1 ms for the named grant at either size. No default privileges either:
// a table a later migration creates is never readable until named here.
var queryTables = []string{"todos", "projects", "documents"}

// grantQueryRole gives the tenant's query role (creating it for tenants
// provisioned before query roles existed) SELECT on queryTables and
// nothing on queryHidden (revoked by name, in case an older release
// granted it). Its cost does not depend on the number of tenants.
func grantQueryRole(ctx context.Context, tx pgx.Tx, t *tenancy.Tenant) error {
	if t.QueryRole == "" {
		if t.DBRole == "" || !canCreateRoles(ctx, tx) {
			return nil
		}
		t.QueryRole = "gatehouse_q_" + strings.TrimPrefix(t.Schema, "t_")
		r := pgx.Identifier{t.QueryRole}.Sanitize()
		if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE ROLE %[1]s NOLOGIN NOINHERIT; GRANT %[1]s TO CURRENT_USER; GRANT USAGE ON SCHEMA %[2]s TO %[1]s",
			r, pgx.Identifier{t.Schema}.Sanitize())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE gatehouse.tenants SET query_role = $2 WHERE id = $1", t.ID, t.QueryRole); err != nil {
			return err
		}
	}
	r := pgx.Identifier{t.QueryRole}.Sanitize()
	named := func(tables []string) string {
		q := make([]string, len(tables))
		for i, table := range tables {
			q[i] = pgx.Identifier{t.Schema, table}.Sanitize()
		}
		return strings.Join(q, ", ")
	}
	sql := fmt.Sprintf("GRANT SELECT ON %s TO %s; REVOKE ALL ON %s FROM %s", named(queryTables), r, named(queryHidden), r)
	_, err := tx.Exec(ctx, sql)
	return err
}
