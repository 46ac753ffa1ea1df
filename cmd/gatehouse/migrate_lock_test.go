package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestMigrateRetriesTenantsHeldByLocks: `gatehouse migrate` meets a tenant
// whose todos another session is reading (as a dump or a long query
// does): its migration gives up after a bounded wait instead of queuing
// every statement on the table behind it, says so, tries again after a
// pause, and succeeds once the reader is gone.
func TestMigrateRetriesTenantsHeldByLocks(t *testing.T) {
	ctx := context.Background()
	url, db, tenants := behindFixture(t, "held.example")
	tn := tenants[0]
	reader, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	todos := pgx.Identifier{tn.Schema, "todos"}.Sanitize()
	if _, err := reader.Exec(ctx, "SELECT count(*) FROM "+todos); err != nil {
		_ = reader.Rollback(ctx)
		t.Fatal(err)
	}
	// Gone during the pause after the first try: once the migration's
	// lock request on the table has appeared and then gone (it gave up).
	// The transaction is used by that goroutine alone from here.
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		defer func() { _ = reader.Rollback(context.Background()) }()
		seen := false
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			var waiting bool
			if err := db.Pool().QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = $1::regclass AND NOT granted)", todos).Scan(&waiting); err != nil {
				return
			}
			if waiting {
				seen = true
			} else if seen {
				return
			}
		}
	}()
	defer func() { <-gone }()
	code, stdout, stderr := gh(t, map[string]string{"DATABASE_URL": url}, "migrate")
	if code != 0 || !strings.Contains(stderr, "1 tenant schema(s) still behind, held up by locks (another session is reading or maintaining their tables); trying again in 6s") || !strings.Contains(stdout, "up to date: control schema at version") || !strings.Contains(stdout, ", 1 tenant schema(s) migrated") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s\nwant a retry, then success", code, stdout, stderr)
	}
	if after, err := db.FindTenantByID(ctx, tn.ID); err != nil || after.SchemaVersion != store.TenantSchemaVersion() {
		t.Fatalf("tenant after migrate: %+v, %v", after, err)
	}
}

// TestStartMigrations: serve and stdio start when a few tenants were held
// up by locks (left behind with a warning), and refuse to start when a
// migration failed for a reason of its own or when so many tenants were
// locked that the migration stopped trying (a pg_dump).
func TestStartMigrations(t *testing.T) {
	locked := fmt.Errorf("tenant a: %w", store.ErrMigrationLocked)
	stopped := fmt.Errorf("8 more tenant schema(s) not tried after 16 held up by locks: %w", store.ErrMigrationsStopped)
	broken := errors.New("tenant b: migration 0009_x: syntax error")
	for _, c := range []struct {
		name  string
		err   error
		start bool
		warn  bool
	}{
		{"nothing failed", nil, true, false},
		{"a tenant locked", locked, true, true},
		{"two tenants locked", errors.Join(locked, locked), true, true},
		{"many locked: stopped", errors.Join(locked, stopped), false, false},
		{"a migration broken", broken, false, false},
		{"locked and broken", errors.Join(locked, broken), false, false},
	} {
		var logs bytes.Buffer
		err := startMigrations(c.err, slog.New(slog.NewTextHandler(&logs, nil)))
		if (err == nil) != c.start || strings.Contains(logs.String(), "left behind") != c.warn {
			t.Errorf("%s: %v, log %q; want start %v, warning %v", c.name, err, logs.String(), c.start, c.warn)
		}
	}
}

// TestMigrateGivesUpOnTenantsStillLocked: a tenant whose tables stay locked
// through every try makes `gatehouse migrate` exit 1 after its last try,
// saying why and what to do, with the tenant left at its version (and the
// other tenants migrated).
func TestMigrateGivesUpOnTenantsStillLocked(t *testing.T) {
	// Just past the hold a try that met the lock puts on the tenant, so
	// that each of the three is a try (a shorter pause would find the
	// tenant held back, untried).
	defer func(p time.Duration) { migrateLockPause = p }(migrateLockPause)
	migrateLockPause = store.CatchUpPause + 200*time.Millisecond
	ctx := context.Background()
	url, db, ts := behindFixture(t, "held.example", "free.example")
	tenants := map[string]*tenancy.Tenant{"held.example": ts[0], "free.example": ts[1]}
	release := storetest.LockTable(t, db, tenants["held.example"].Schema, "todos")
	defer release() //nolint:errcheck
	code, stdout, stderr := gh(t, map[string]string{"DATABASE_URL": url}, "migrate")
	if code != 1 || strings.Count(stderr, "still behind, held up by locks") != migrateLockTries-1 ||
		!strings.Contains(stderr, fmt.Sprintf("still held up by locks after %d tries", migrateLockTries)) ||
		!strings.Contains(stderr, "run `gatehouse migrate` again once it is done") || strings.Contains(stdout, "up to date") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s\nwant exit 1 after %d tries, saying so", code, stdout, stderr, migrateLockTries)
	}
	for k, want := range map[string]int{"held.example": 2, "free.example": store.TenantSchemaVersion()} {
		if tn, err := db.FindTenantByID(ctx, tenants[k].ID); err != nil || tn.SchemaVersion != want {
			t.Errorf("%s after migrate: %+v, %v; want schema %d", k, tn, err, want)
		}
	}
}

// behindFixture opens a new database (closed when the test ends) with a
// tenant for each key, each set back to tenant schema 2 so that a
// migration has work to do, and returns its URL, the handle and the
// tenants in the order of keys.
func behindFixture(t *testing.T, keys ...string) (string, *store.DB, []*tenancy.Tenant) {
	t.Helper()
	url := storetest.ConnString(t)
	db, err := store.Open(context.Background(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	var ts []*tenancy.Tenant
	for _, k := range keys {
		tn, _, err := db.EnsureTenant(context.Background(), k, tenancy.Organization)
		if err != nil {
			t.Fatal(err)
		}
		storetest.BackToSchema2(t, db, tn)
		ts = append(ts, tn)
	}
	return url, db, ts
}
