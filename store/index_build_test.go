package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestEnsureIndexConcurrently breaks an index build the ways a live
// database does (a build cut short, a writer that holds the table, a lock,
// a build in progress elsewhere, builders racing) and checks that each
// ends with a valid index, or a prompt error the caller retries, and never
// with an invalid index passed off as done. (EnsureVectorIndex builds its
// HNSW index through the same function; pgvector is not installed here.)
func TestEnsureIndexConcurrently(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "index-build.example")
	const name, using = "todos_title_probe", "(title)"
	table := pgx.Identifier{tn.Schema, "todos"}.Sanitize()
	if _, err := db.Pool().Exec(ctx, "INSERT INTO "+table+" (title, created_by) SELECT 'todo ' || i, 'test' FROM generate_series(1, 500) i"); err != nil {
		t.Fatal(err)
	}
	state := func() string {
		t.Helper()
		var valid bool
		err := db.Pool().QueryRow(ctx, `SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
			WHERE c.relnamespace = $1::regnamespace AND c.relname = $2`, tn.Schema, name).Scan(&valid)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return "missing"
		case err != nil:
			t.Fatal(err)
		case valid:
			return "valid"
		}
		return "invalid"
	}
	ensure := func() error { return store.EnsureIndexConcurrently(ctx, db, tn.Schema, "todos", name, using) }
	drop := func() {
		t.Helper()
		if _, err := db.Pool().Exec(ctx, "DROP INDEX IF EXISTS "+pgx.Identifier{tn.Schema, name}.Sanitize()); err != nil {
			t.Fatal(err)
		}
	}
	// writer holds the table as a transaction that wrote to it and has
	// not ended: every concurrent build waits for it.
	writer := func(t *testing.T) (release func()) {
		t.Helper()
		tx, err := db.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+table+" (title, created_by) VALUES ('held', 'test')"); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		release = func() { once.Do(func() { _ = tx.Rollback(ctx) }) }
		t.Cleanup(release)
		return release
	}
	// otherBuild starts a concurrent build in another session, without a
	// bound on its waits, and returns its outcome when it ends.
	otherBuild := func(t *testing.T, lockTimeout string) <-chan error {
		done := make(chan error, 1)
		conn, err := db.Pool().Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer conn.Release()
			_, err := conn.Exec(ctx, "SET lock_timeout = '"+lockTimeout+"'")
			if err == nil {
				_, err = conn.Exec(ctx, "CREATE INDEX CONCURRENTLY "+pgx.Identifier{name}.Sanitize()+" ON "+table+" "+using)
			}
			_, _ = conn.Exec(context.Background(), "RESET lock_timeout")
			done <- err
		}()
		return done
	}

	t.Run("missing", func(t *testing.T) {
		drop()
		if err := ensure(); err != nil {
			t.Fatal(err)
		}
		if s := state(); s != "valid" {
			t.Fatalf("after a build: %s", s)
		}
		if err := ensure(); err != nil || state() != "valid" {
			t.Fatalf("again: %v, %s", err, state())
		}
	})

	// leftInvalid leaves the index invalid, as a build that failed does,
	// beside a writer that still holds the table (release ends it).
	leftInvalid := func(t *testing.T) (release func()) {
		t.Helper()
		drop()
		release = writer(t)
		if err := <-otherBuild(t, "100ms"); !store.LockTimedOut(err) {
			t.Fatalf("the other build: %v, want a lock wait that ran out", err)
		}
		if s := state(); s != "invalid" {
			t.Fatalf("the failed build left the index %s, want invalid", s)
		}
		return release
	}

	t.Run("left invalid by a build that failed", func(t *testing.T) {
		// CREATE INDEX CONCURRENTLY IF NOT EXISTS, as the index was built
		// before, takes such a leftover for the index and does nothing.
		leftInvalid(t)()
		if err := ensure(); err != nil {
			t.Fatal(err)
		}
		if s := state(); s != "valid" {
			t.Fatalf("after ensuring: %s, want valid", s)
		}
	})

	// Each lock wait of a build is bounded: directly by lock_timeout;
	// behind a transaction pooler, where no session setting reaches the
	// build, by a watchdog that cancels it (execLockBounded). Pooled: a
	// store.DB that uses no session state, on direct connections; and the
	// same through a real PgBouncer in transaction mode.
	pooledOn := func(t *testing.T, url string) *store.DB {
		t.Helper()
		p, err := store.Open(ctx, url, &store.Options{TransactionPooler: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	lockWaits := func(t *testing.T, d *store.DB, pooled bool) {
		// ensureBounded is ensure through d, given 20 s: a build
		// whose waits nothing bounds fails the test instead of hanging it.
		ensureBounded := func(t *testing.T) error {
			t.Helper()
			bctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			t0 := time.Now()
			err := store.EnsureIndexConcurrently(bctx, d, tn.Schema, "todos", name, using)
			if took := time.Since(t0); took > 15*time.Second {
				t.Errorf("ensure took %v", took)
			}
			// Nothing of the build is left waiting in the database.
			var left int
			if qerr := db.Pool().QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND (query LIKE '%gatehouse lock-bounded%' OR query LIKE '%INDEX CONCURRENTLY%') AND pid <> pg_backend_pid()").Scan(&left); qerr != nil {
				t.Fatal(qerr)
			}
			if left != 0 {
				t.Errorf("%d statements of the build still running after it returned %v", left, err)
			}
			return err
		}

		// wantLocked checks that err is a lock wait that ran out: behind a
		// pooler, one the watchdog saw (not one it cancelled blind).
		wantLocked := func(t *testing.T, what string, err error) {
			t.Helper()
			if !errors.Is(err, store.ErrIndexBuildLocked) || !store.LockTimedOut(err) || !store.Unavailable(err) {
				t.Fatalf("ensure beside %s: %v, want ErrIndexBuildLocked", what, err)
			}
			if pooled && !errors.Is(err, store.ErrLockWaitRanOut) {
				t.Fatalf("ensure beside %s: %v, want the watchdog to have seen the wait run out", what, err)
			}
		}

		t.Run("a writer holds the table", func(t *testing.T) {
			drop()
			release := writer(t)
			wantLocked(t, "the writer", ensureBounded(t))
			release()
			if err := ensure(); err != nil {
				t.Fatal(err)
			}
			if s := state(); s != "valid" {
				t.Fatalf("after the writer: %s, want valid", s)
			}
		})

		t.Run("an old snapshot", func(t *testing.T) {
			// A long reader anywhere in the database (a pg_dump): the build
			// waits for its snapshot before it may mark the index valid.
			drop()
			reader, err := db.Pool().BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
			if err != nil {
				t.Fatal(err)
			}
			defer reader.Rollback(ctx) //nolint:errcheck
			if _, err := reader.Exec(ctx, "SELECT count(*) FROM gatehouse.tenants"); err != nil {
				t.Fatal(err)
			}
			wantLocked(t, "an old snapshot", ensureBounded(t))
			if err := reader.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if err := ensure(); err != nil || state() != "valid" {
				t.Fatalf("after the reader: %v, %s", err, state())
			}
		})

		t.Run("the table is locked", func(t *testing.T) {
			drop()
			unlock := storetest.LockTable(t, db, tn.Schema, "todos")
			wantLocked(t, "ACCESS EXCLUSIVE", ensureBounded(t))
			if err := unlock(); err != nil {
				t.Fatal(err)
			}
			if s := state(); s != "missing" {
				t.Errorf("a build that never got its lock left the index %s", s)
			}
			if err := ensure(); err != nil || state() != "valid" {
				t.Fatalf("after the lock: %v, %s", err, state())
			}
		})

		t.Run("an invalid leftover behind a writer", func(t *testing.T) {
			// Dropping what a failed build left waits for the writer too
			// (DROP INDEX CONCURRENTLY): bounded the same way.
			release := leftInvalid(t)
			wantLocked(t, "the writer, over an invalid leftover", ensureBounded(t))
			release()
			if err := ensure(); err != nil || state() != "valid" {
				t.Fatalf("after the writer: %v, %s", err, state())
			}
		})

		t.Run("two waits, each shorter than the bound", func(t *testing.T) {
			// As with lock_timeout, each wait has the bound, not their sum:
			// the table locked for 1.2 s, then a reader whose snapshot the
			// build waits for before it may mark the index valid, for 1.2 s
			// more.
			drop()
			unlock := storetest.LockTable(t, db, tn.Schema, "todos")
			reader, err := db.Pool().BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
			if err != nil {
				t.Fatal(err)
			}
			defer reader.Rollback(ctx) //nolint:errcheck
			if _, err := reader.Exec(ctx, "SELECT count(*) FROM gatehouse.tenants"); err != nil {
				t.Fatal(err)
			}
			released := make(chan error, 1)
			go func() {
				time.Sleep(1200 * time.Millisecond)
				err := unlock()
				time.Sleep(1200 * time.Millisecond)
				released <- errors.Join(err, reader.Rollback(ctx))
			}()
			if err := ensureBounded(t); err != nil {
				t.Fatalf("ensure beside two waits of 1.2 s: %v", err)
			}
			if err := <-released; err != nil {
				t.Fatal(err)
			}
			if s := state(); s != "valid" {
				t.Fatalf("after the two waits: %s, want valid", s)
			}
		})

		if !pooled {
			return
		}
		t.Run("a pooled build that waits for no lock is not cancelled", func(t *testing.T) {
			// A build that works for longer than the bound, and than the
			// watchdog's blind bound, without waiting for a lock (its index
			// expression sleeps 1.5 ms a row, over 6,000 rows): the
			// watchdog, which sees it working, leaves it alone.
			drop()
			if _, err := db.Pool().Exec(ctx, `CREATE FUNCTION public.slow_probe(text) RETURNS text IMMUTABLE LANGUAGE plpgsql
				AS $$ BEGIN PERFORM pg_sleep(0.0015); RETURN $1; END $$`); err != nil {
				t.Fatal(err)
			}
			defer db.Pool().Exec(ctx, "DROP FUNCTION public.slow_probe(text) CASCADE") //nolint:errcheck
			if _, err := db.Pool().Exec(ctx, "INSERT INTO "+table+" (title, created_by) SELECT 'slow ' || i, 'slow' FROM generate_series(1, 6000) i"); err != nil {
				t.Fatal(err)
			}
			defer db.Pool().Exec(ctx, "DELETE FROM "+table+" WHERE created_by = 'slow'") //nolint:errcheck
			t0 := time.Now()
			if err := store.EnsureIndexConcurrently(ctx, d, tn.Schema, "todos", name, "(public.slow_probe(title))"); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(t0); took < 9*time.Second {
				t.Fatalf("the build took %v: too short to show that the watchdog leaves a working build alone", took)
			}
			if s := state(); s != "valid" {
				t.Fatalf("after the long build: %s", s)
			}
		})
	}
	t.Run("through PgBouncer, with no server connection left for the watchdog", func(t *testing.T) {
		// PgBouncer's pool (20 server connections) is taken by 19
		// transactions, one of which holds the table as a writer; the
		// build takes the last. The watchdog cannot look, so it cancels
		// the build once it has been blind for its bound, rather than
		// letting it wait for as long as the writer runs.
		url, _ := storetest.PgBouncer(t, db.Pool().Config().ConnString())
		bouncer := pooledOn(t, url)
		drop()
		for i := range 19 {
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close(context.Background()) })
			if _, err := c.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			q := "SELECT 1"
			if i == 0 {
				q = "INSERT INTO " + table + " (title, created_by) VALUES ('held', 'test')"
			}
			if _, err := c.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Exec(context.Background(), "ROLLBACK") }) //nolint:errcheck
		}
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := store.EnsureIndexConcurrently(bctx, bouncer, tn.Schema, "todos", name, using)
		if !errors.Is(err, store.ErrIndexBuildLocked) || !store.LockTimedOut(err) || !errors.Is(err, store.ErrLockWaitUnwatched) {
			t.Fatalf("ensure with no connection for the watchdog: %v, want ErrIndexBuildLocked, cancelled blind", err)
		}
	})

	for _, mode := range []struct {
		name string
		open func(t *testing.T) *store.DB
	}{
		{"direct", func(*testing.T) *store.DB { return db }},
		{"pooled", func(t *testing.T) *store.DB { return pooledOn(t, db.Pool().Config().ConnString()) }},
		{"through PgBouncer", func(t *testing.T) *store.DB {
			url, _ := storetest.PgBouncer(t, db.Pool().Config().ConnString()) // skips where PgBouncer is missing
			return pooledOn(t, url)
		}},
	} {
		t.Run(mode.name, func(t *testing.T) { lockWaits(t, mode.open(t), mode.name != "direct") })
	}

	t.Run("another session is building it", func(t *testing.T) {
		// Its index is invalid until it ends: not a leftover to drop.
		drop()
		release := writer(t)
		done := otherBuild(t, "0")
		deadline := time.Now().Add(10 * time.Second)
		for state() != "invalid" {
			if time.Now().After(deadline) {
				t.Fatal("the other build never started")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := ensure(); !errors.Is(err, store.ErrIndexBuilding) {
			t.Fatalf("ensure during another build: %v, want ErrIndexBuilding", err)
		}
		release()
		if err := <-done; err != nil {
			t.Fatalf("the other build failed: %v (was its index dropped under it?)", err)
		}
		if s := state(); s != "valid" {
			t.Fatalf("after the other build: %s", s)
		}
	})

	t.Run("builders racing", func(t *testing.T) {
		drop()
		const n = 4
		start := make(chan struct{})
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = ensure()
			}()
		}
		close(start)
		wg.Wait()
		built := 0
		for i, err := range errs {
			switch {
			case err == nil:
				built++
			case !errors.Is(err, store.ErrIndexBuilding):
				t.Errorf("builder %d: %v", i, err)
			}
		}
		if built == 0 {
			t.Errorf("no builder reported the index built: %v", errs)
		}
		if s := state(); s != "valid" {
			t.Fatalf("after the race: %s", s)
		}
	})

	t.Run("builders racing behind a transaction pooler", func(t *testing.T) {
		// No advisory lock there: two builds on the table wait for each
		// other's snapshots until PostgreSQL ends one as a deadlock, after
		// deadlock_timeout: lowered here below the build's time, so that
		// the build ended may be the one doing the work.
		drop()
		var dbName string
		if err := db.Pool().QueryRow(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Pool().Exec(ctx, "ALTER DATABASE "+pgx.Identifier{dbName}.Sanitize()+" SET deadlock_timeout = '10ms'"); err != nil {
			t.Fatal(err)
		}
		defer db.Pool().Exec(ctx, "ALTER DATABASE "+pgx.Identifier{dbName}.Sanitize()+" RESET deadlock_timeout") //nolint:errcheck
		// Enough rows that a build outlasts it.
		if _, err := db.Pool().Exec(ctx, "INSERT INTO "+table+" (title, created_by) SELECT 'more ' || i, 'test' FROM generate_series(1, 100000) i"); err != nil {
			t.Fatal(err)
		}
		var pooled [2]*store.DB
		for i := range pooled {
			p, err := store.Open(ctx, db.Pool().Config().ConnString(), &store.Options{TransactionPooler: true})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			pooled[i] = p
		}
		start := make(chan struct{})
		var errs [2]error
		var wg sync.WaitGroup
		for i := range pooled {
			wg.Go(func() {
				<-start
				errs[i] = store.EnsureIndexConcurrently(ctx, pooled[i], tn.Schema, "todos", name, using)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil && !errors.Is(err, store.ErrIndexBuilding) {
				t.Errorf("pooled builder %d: %v", i, err)
			}
		}
		if err := ensure(); err != nil || state() != "valid" {
			t.Fatalf("after the race: %v, %s", err, state())
		}
	})

	// No connection keeps the build's session lock or lock bound.
	conns := db.Pool().AcquireAllIdle(ctx)
	for _, c := range conns {
		var timeout string
		var locks int
		if err := c.QueryRow(ctx, "SELECT current_setting('lock_timeout'), (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())").Scan(&timeout, &locks); err != nil {
			t.Fatal(err)
		}
		if timeout != "0" || locks != 0 {
			t.Errorf("a pooled connection kept lock_timeout %s and %d advisory locks", timeout, locks)
		}
		c.Release()
	}
}

// TestVectorIndexReady: the embedding worker's check for an index built
// elsewhere says no while there is none or only an invalid leftover of a
// failed build, and yes once a valid one exists. (A btree index under the
// HNSW index's name stands in for it: pgvector is not installed here.)
func TestVectorIndexReady(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "index-ready.example")
	v := &store.VectorIndex{Schema: "public", Dims: 8}
	ready := func() bool {
		t.Helper()
		ok, err := db.VectorIndexReady(ctx, tn.Schema, v)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if ready() {
		t.Fatal("ready without an index")
	}
	table := pgx.Identifier{tn.Schema, "document_chunks"}.Sanitize()
	// A build cut short by a lock (here: waiting for a writer's
	// transaction to end) leaves an invalid index.
	writer, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Rollback(ctx) //nolint:errcheck
	if _, err := writer.Exec(ctx, "LOCK TABLE "+table+" IN ROW EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET lock_timeout = '200ms'"); err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "CREATE INDEX CONCURRENTLY document_chunks_hnsw_8 ON "+table+" (document_id)")
	if !store.LockTimedOut(err) {
		t.Fatalf("a build beside the lock: %v", err)
	}
	if _, err := conn.Exec(ctx, "RESET lock_timeout"); err != nil {
		t.Fatal(err)
	}
	if err := writer.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if ready() {
		t.Fatal("ready with an invalid leftover")
	}
	if _, err := db.Pool().Exec(ctx, "REINDEX INDEX CONCURRENTLY "+pgx.Identifier{tn.Schema, "document_chunks_hnsw_8"}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	if !ready() {
		t.Fatal("not ready with a valid index")
	}
}
