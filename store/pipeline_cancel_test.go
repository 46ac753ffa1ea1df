package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestInTenantWriteFinalCancelled: a write whose final statement
// (store.Final) waits for a lock when its context ends must not commit
// behind its caller's back. The statement, its record and COMMIT travel
// in one message; a client that merely stops reading leaves PostgreSQL to
// run them all once the lock is released, so the caller would be told
// the call failed (and mcp would record a failure) while the effect and
// an ALLOWED record commit. Either InTenantWrite reports success and both
// exist, or it fails and neither ever appears. Members: add_todo's INSERT
// waiting on its project row (foreign key), create_project's INSERT
// waiting on the unique name of an uncommitted project.
func TestInTenantWriteFinalCancelled(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "final-cancel.example")
	var projectID string
	if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		p, err := store.CreateProject(store.Final(ctx), tx, "locked", "", "s")
		if err == nil {
			projectID = p.ID
		}
		return err
	}, &store.AuditRecord{RequestID: "setup", Decision: store.Allowed, Tool: "create_project", Subject: "s", Count: 1}); err != nil {
		t.Fatal(err)
	}
	q := func(table string) string { return pgx.Identifier{tn.Schema, table}.Sanitize() }
	count := func(sql string, args ...any) int {
		t.Helper()
		var n int
		if err := db.Pool().QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	for _, c := range []struct {
		name  string
		lock  string // run in the holder's transaction
		write func(ctx context.Context, tx pgx.Tx) error
		done  string // counts the write's effect
	}{{
		name: "add_todo",
		lock: fmt.Sprintf("SELECT 1 FROM %s WHERE id = '%s' FOR UPDATE", q("projects"), projectID),
		write: func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.CreateTodo(store.Final(ctx), tx, store.NewTodo{Title: "blocked todo", ProjectID: &projectID, CreatedBy: "s"})
			return err
		},
		done: "SELECT count(*) FROM " + q("todos") + " WHERE title = 'blocked todo'",
	}, {
		name: "create_project",
		lock: fmt.Sprintf("INSERT INTO %s (name, created_by) VALUES ('contended', 'holder')", q("projects")),
		write: func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.CreateProject(store.Final(ctx), tx, "contended", "", "s")
			return err
		},
		done: "SELECT count(*) FROM " + q("projects") + " WHERE name = 'contended'",
	}} {
		t.Run(c.name, func(t *testing.T) {
			holder, err := db.Pool().Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := holder.Exec(ctx, c.lock); err != nil {
				t.Fatal(err)
			}
			reqID := "cancelled-" + c.name
			wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			werr := db.InTenantWrite(wctx, tn, c.write,
				&store.AuditRecord{RequestID: reqID, Decision: store.Allowed, Tool: c.name, Subject: "s", Count: 1})
			cancel()
			// The holder gives way: a write still queued in PostgreSQL
			// would now run and commit.
			if err := holder.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			var effect, records int
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				effect = count(c.done)
				records = count("SELECT count(*) FROM "+q("audit_log")+" WHERE request_id = $1", reqID)
				if effect+records > 0 {
					break
				}
			}
			switch {
			case werr == nil && (effect != 1 || records != 1):
				t.Errorf("reported committed, but %d effects and %d records", effect, records)
			case werr != nil && (effect != 0 || records != 0):
				t.Errorf("reported failed (%v), but %d effects and %d records committed", werr, effect, records)
			case werr != nil && !errors.Is(werr, context.DeadlineExceeded):
				t.Errorf("a write stopped by its deadline: %v, want an error matching context.DeadlineExceeded", werr)
			}
			// The connection serves the next write.
			if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
				_, err := store.AddTodo(store.Final(ctx), tx, "after "+c.name, "", "s")
				return err
			}, &store.AuditRecord{RequestID: "after", Decision: store.Allowed, Tool: "add_todo", Subject: "s", Count: 1}); err != nil {
				t.Fatalf("the next write: %v", err)
			}
		})
	}
}

// TestPreparationCutShortByItsContext: preparing a tool's statement takes
// the locks its tables need, so a migration holding one (ALTER TABLE's
// ACCESS EXCLUSIVE) holds the preparation up. When the call's time runs
// out there, pgx closes the connection; the call must then fail as a
// call whose time ran out (context.DeadlineExceeded), never as a
// database that cannot be reached (store.Unavailable: mcp would answer
// 503 and report an outage). Members: a read, a write's first statement
// (prepared in a transaction of its own), a write's later statement
// (prepared inside the write), a write's record (prepared with COMMIT).
func TestPreparationCutShortByItsContext(t *testing.T) {
	db := storetest.MustOpenDB(t) // PrepareAfter 1: every statement is prepared on first use
	ctx := context.Background()
	tn := mustTenant(t, db, "prepare-cut-short.example")
	rec := func() *store.AuditRecord {
		return &store.AuditRecord{RequestID: "cut-short", Decision: store.Allowed, Tool: "t", Subject: "s", Count: 1}
	}
	for _, c := range []struct {
		name, table string
		call        func(ctx context.Context) error
	}{{
		name: "read", table: "todos",
		call: func(ctx context.Context) error {
			return db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
				var n int
				return tx.QueryRow(ctx, "SELECT count(*) FROM todos WHERE title <> 'read'").Scan(&n)
			})
		},
	}, {
		name: "write's first statement", table: "todos",
		call: func(ctx context.Context) error {
			return db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "UPDATE todos SET done = done WHERE title = 'first'")
				return err
			}, rec())
		},
	}, {
		name: "write's later statement", table: "projects",
		call: func(ctx context.Context) error {
			return db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, "UPDATE projects SET name = name WHERE name = 'later'")
				return err
			}, rec())
		},
	}, {
		name: "write's record", table: "audit_log",
		call: func(ctx context.Context) error {
			return db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "SELECT 2")
				return err
			}, rec())
		},
	}} {
		t.Run(c.name, func(t *testing.T) {
			holder, err := db.Pool().Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = holder.Rollback(ctx) }()
			if _, err := holder.Exec(ctx, "LOCK TABLE "+pgx.Identifier{tn.Schema, c.table}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
				t.Fatal(err)
			}
			cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			err = c.call(cctx)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) || store.Unavailable(err) {
				t.Errorf("held up past its time: %v (unavailable: %v), want context.DeadlineExceeded", err, store.Unavailable(err))
			}
			if err := holder.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.call(ctx); err != nil {
				t.Errorf("once the lock is gone: %v", err)
			}
		})
	}
}

// TestInTenantWriteDeadlinesConsistent: writers released together, each
// with a deadline somewhere in its own run (final writes, some after a
// first statement, some whose final statement waits for a lock other
// writers hold until their COMMIT; writes whose record and COMMIT follow
// in a message of their own): whatever
// InTenantWrite answers must be what committed: success with its effect
// and one record, or failure with neither (-race).
func TestInTenantWriteDeadlinesConsistent(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, storetest.ConnString(t), &store.Options{TenantConns: 4, AffinityConns: -1, PrepareAfter: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tn := mustTenant(t, db, "deadlines.example")
	const writers, rounds = 8, 12
	errs := make([][]error, writers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		errs[w] = make([]error, rounds)
		wg.Go(func() {
			<-start
			for r := range rounds {
				title := fmt.Sprintf("w%d-r%d", w, r)
				wctx, cancel := context.WithTimeout(ctx, time.Duration(2+(w*rounds+r)*7%80)*time.Millisecond)
				errs[w][r] = db.InTenantWrite(wctx, tn, func(ctx context.Context, tx pgx.Tx) error {
					if r%3 == 0 {
						var n int
						if err := tx.QueryRow(ctx, "SELECT count(*) FROM todos").Scan(&n); err != nil {
							return err
						}
					}
					if r%2 == 1 {
						// The final statement waits for a lock that every
						// such writer holds until its COMMIT.
						_, err := tx.Exec(store.Final(ctx), "INSERT INTO todos (title, created_by) SELECT $1, 's' FROM pg_advisory_xact_lock(42)", title)
						return err
					}
					if r%4 == 2 {
						// Not final: the record and COMMIT follow in a
						// message of their own.
						_, err := store.AddTodo(ctx, tx, title, "", "s")
						return err
					}
					_, err := store.AddTodo(store.Final(ctx), tx, title, "", "s")
					return err
				}, &store.AuditRecord{RequestID: title, Decision: store.Allowed, Tool: "add_todo", Subject: "s", Count: 1})
				cancel()
			}
		})
	}
	close(start)
	wg.Wait()
	time.Sleep(500 * time.Millisecond) // anything still queued in PostgreSQL has run by now
	q := func(table string) string { return pgx.Identifier{tn.Schema, table}.Sanitize() }
	ok := 0
	for w := range writers {
		for r := range rounds {
			title := fmt.Sprintf("w%d-r%d", w, r)
			var todos, records int
			if err := db.Pool().QueryRow(ctx, fmt.Sprintf("SELECT (SELECT count(*) FROM %s WHERE title = $1), (SELECT count(*) FROM %s WHERE request_id = $1)",
				q("todos"), q("audit_log")), title).Scan(&todos, &records); err != nil {
				t.Fatal(err)
			}
			err := errs[w][r]
			switch {
			case err == nil && (todos != 1 || records != 1):
				t.Errorf("%s succeeded with %d todos and %d records", title, todos, records)
			case err != nil && (todos != 0 || records != 0):
				t.Errorf("%s failed (%v) with %d todos and %d records", title, err, todos, records)
			case err == nil:
				ok++
			}
		}
	}
	t.Logf("%d of %d writes committed before their deadline", ok, writers*rounds)
}

// TestInsertAuditBatchCancelled: a group commit of records (one message
// ending in its Sync, which commits) whose context ends while PostgreSQL
// still runs it must not commit behind its caller's back: the caller,
// told it failed, answers its calls with an error and records their
// failures (a second record per call). Either it succeeds and the
// records exist, or it fails and they never appear.
func TestInsertAuditBatchCancelled(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "batch-cancel.example")
	// Every control connection has the batch's statement prepared (its
	// preparation would wait for the lock too).
	var warm sync.WaitGroup
	for i := range 8 {
		warm.Go(func() {
			if err := db.InsertAuditBatch(ctx, []store.AuditEntry{{Tenant: tn, Rec: &store.AuditRecord{
				RequestID: fmt.Sprint("warm-", i), Decision: store.Allowed, Tool: "whoami", Subject: "s", Count: 1}}}); err != nil {
				t.Error(err)
			}
		})
	}
	warm.Wait()
	holder, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(ctx) }()
	if _, err := holder.Exec(ctx, "LOCK TABLE "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+" IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	var entries []store.AuditEntry
	for i := range 3 {
		entries = append(entries, store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{
			RequestID: fmt.Sprint("batch-cancel-", i), Decision: store.Allowed, Tool: "whoami", Subject: "s", Count: 1}})
	}
	// Shorter than the batch's own wait for a lock (lock_timeout 200 ms,
	// audit_busy.go), so that the deadline stops it.
	bctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	berr := db.InsertAuditBatch(bctx, entries)
	cancel()
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // a batch still queued in PostgreSQL has committed by now
	var n int
	if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+
		" WHERE request_id LIKE 'batch-cancel-%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	switch {
	case berr == nil && n != 3:
		t.Errorf("the batch succeeded with %d of 3 records", n)
	case berr != nil && n != 0:
		t.Errorf("the batch failed (%v), but %d records committed", berr, n)
	case berr != nil && !errors.Is(berr, context.DeadlineExceeded):
		t.Errorf("a batch stopped by its deadline: %v, want an error matching context.DeadlineExceeded", berr)
	}
}
