package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse-mcp/gatehouse/store"
)

func migrateCmd(ctx context.Context, e *env) *cobra.Command {
	var parallel int
	var asJSON bool
	c := &cobra.Command{
		Use:   "migrate",
		Short: "Apply migrations to the control schema and every tenant schema",
		Long: `Apply the migrations to the control schema and then to every tenant schema,
several at once, with progress on stderr. Platforms run it before each release;
serve also migrates at start. A tenant migration waits at most 2 s for a lock on
a table it changes; tenants held up so are tried twice more, 6 s apart, then
reported (exit 1).`,
		Example: `  gatehouse migrate
  gatehouse migrate --parallel 8 --json`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			if parallel < 1 {
				return usagef("--parallel %d: want 1 or more", parallel)
			}
			return migrate(ctx, e, parallel, asJSON)
		},
	}
	c.Flags().IntVar(&parallel, "parallel", 4, "tenant schemas migrated at once")
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}

func migrate(ctx context.Context, e *env, parallel int, asJSON bool) error {
	return withDatabase(ctx, e, func(db *database, _ *slog.Logger) error {
		// openDatabase has brought the control schema up to date.
		// Progress once a second and at the end (10,000 schemas took
		// 30–60 s on 2 cores): a line per schema would be 10,000 lines.
		before, err := db.MigrationStatus(ctx)
		if err != nil {
			return err
		}
		start := time.Now()
		var last time.Time
		progress := func(done, total int) {
			if done == total || time.Since(last) >= time.Second {
				last = time.Now()
				fmt.Fprintf(e.stderr, "migrated %d/%d tenant schemas (%s)\n", done, total, time.Since(start).Round(100*time.Millisecond))
			}
		}
		err = migrateTenantsRetrying(ctx, db.DB, parallel, progress, e.stderr)
		if store.MigrationsOnlyLocked(err) {
			return fmt.Errorf("tenant schemas still held up by locks after %d tries (another session is reading or maintaining their tables): "+
				"run `gatehouse migrate` again once it is done: %w", migrateLockTries, err)
		}
		if err != nil {
			return err
		}
		st, err := db.MigrationStatus(ctx)
		if err != nil {
			return err
		}
		migrated := max(before.TenantsBehind-st.TenantsBehind, 0)
		if asJSON {
			return printJSON(e.stdout, map[string]int{"control_version": st.Control, "tenants_migrated": migrated, "tenants_behind": st.TenantsBehind})
		}
		_, err = fmt.Fprintf(e.stdout, "up to date: control schema at version %d, %d tenant schema(s) migrated\n", st.Control, migrated)
		return err
	})
}

// startMigrations is what serve makes of
// err, from store.DB.MigrateTenants at its start: nil to go on. A few
// tenants held up by locks (one tenant's maintenance) are left behind with
// a warning: each is brought up to date on its first call, or by the
// maintenance loop, once the lock is gone; its calls answer 503 meanwhile. Any
// other failure, or locks on so many tenants that the migration stopped
// trying (a pg_dump), stops the start: a release whose tenants cannot be
// migrated must not take over from the one serving them.
func startMigrations(err error, log *slog.Logger) error {
	switch {
	case err == nil:
		return nil
	case store.MigrationsHeldBack(err):
		return fmt.Errorf("migrating tenant schemas: many tenants' tables are locked by another session (a pg_dump or a long transaction?); "+
			"start again once it has ended: %w", err)
	case store.MigrationsOnlyLocked(err):
		log.Warn("some tenant schemas were left behind: their tables are locked by another session; each is brought up to date on its first call, or by the maintenance loop, once the lock is gone",
			"error", err)
		return nil
	}
	return fmt.Errorf("migrating tenant schemas: %w", err)
}

// migrateTenantsRetrying is db.MigrateTenants, tried again while every
// tenant it could not migrate was held up by a lock (another session
// reading or maintaining its tables: a long query, a dump), up to
// migrateLockTries times, migrateLockPause apart, saying so on w. It
// returns the last try's error.
func migrateTenantsRetrying(ctx context.Context, db *store.DB, parallel int, progress func(done, total int), w io.Writer) error {
	err := db.MigrateTenants(ctx, parallel, progress)
	for try := 1; try < migrateLockTries && store.MigrationsOnlyLocked(err); try++ {
		st, serr := db.MigrationStatus(ctx)
		if serr != nil {
			return serr
		}
		fmt.Fprintf(w, "%d tenant schema(s) still behind, held up by locks (another session is reading or maintaining their tables); trying again in %s\n",
			st.TenantsBehind, migrateLockPause)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(migrateLockPause):
		}
		err = db.MigrateTenants(ctx, parallel, progress)
	}
	return err
}

// migrateLockTries and migrateLockPause: how often `gatehouse migrate` and
// `gatehouse stdio` try the tenants held up by locks
// (store.ErrMigrationLocked), and how long they wait between tries: longer
// than the hold a try that met a lock puts on its tenant
// (store.CatchUpPause), so that each try is one. (A variable: tests
// shorten it.)
const migrateLockTries = 3

var migrateLockPause = store.CatchUpPause + time.Second

// logMigrationProgress returns a progress function for MigrateTenants that
// logs how far it is every 5 seconds and at the end (thousands of tenant
// schemas take a while; an interrupted run resumes where it stopped, since
// each schema's migration commits on its own).
func logMigrationProgress(log *slog.Logger) func(done, total int) {
	start := time.Now()
	var last time.Time
	return func(done, total int) {
		if done == total || time.Since(last) >= 5*time.Second {
			last = time.Now()
			log.Info("migrating tenant schemas", "done", done, "total", total, "elapsed", time.Since(start).Round(time.Millisecond).String())
		}
	}
}
