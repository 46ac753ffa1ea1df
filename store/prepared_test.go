package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// openOneConn opens a database whose tenant work runs on one connection,
// so that every tenant's statements meet on the same backend.
func openOneConn(t *testing.T, prepared int) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), storetest.ConnString(t), &store.Options{
		TenantConns: 1, AffinityConns: -1, ConnMaxTenants: -1, PreparedStatements: prepared, PrepareAfter: 1,
		Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// titles reads the titles of tn's todos with sql, in a read.
func titles(t *testing.T, db *store.DB, tn *tenancy.Tenant, sql string) []string {
	t.Helper()
	var got []string
	err := db.InTenantReadOnly(context.Background(), tn, func(ctx context.Context, tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, sql)
		var err error
		got, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", tn.Key, err)
	}
	slices.Sort(got)
	return got
}

// preparedNames lists the tools' statements prepared on the tenant
// connection, as seen from a read of tn.
func preparedNames(t *testing.T, db *store.DB, tn *tenancy.Tenant) map[string]string {
	t.Helper()
	names := map[string]string{}
	err := db.InTenantReadOnly(context.Background(), tn, func(ctx context.Context, tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, "SELECT name, statement FROM pg_prepared_statements WHERE name LIKE 'gh\\_%'")
		var name, stmt string
		_, err := pgx.ForEachRow(rows, []any{&name, &stmt}, func() error { names[name] = stmt; return nil })
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestPreparedStatementsStayInTheirTenant tries to make one tenant's
// prepared statement serve another: the same SQL, reads and writes, from
// tenants taking turns on one connection, must each see and change only
// their own tables; and a statement prepared for one tenant, run by its
// name in another tenant's read, reads that other tenant's tables
// (PostgreSQL re-analyses it under the current search_path), never the
// tenant it was prepared for.
func TestPreparedStatementsStayInTheirTenant(t *testing.T) {
	db := openOneConn(t, 0)
	ctx := context.Background()
	a := mustTenant(t, db, "prepared-a.example")
	b := mustTenant(t, db, "prepared-b.example")
	if a.DBRole == "" {
		t.Skip("this database cannot create roles")
	}
	const list = "SELECT title FROM todos"
	for round := range 3 {
		for _, tn := range []*tenancy.Tenant{a, b} {
			rec := &store.AuditRecord{RequestID: "prep", Decision: store.Allowed, Tool: "add_todo", Subject: "s", Count: 1}
			if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
				_, err := store.AddTodo(ctx, tx, fmt.Sprintf("%s-%d", tn.Key, round), "", "s")
				return err
			}, rec); err != nil {
				t.Fatal(err)
			}
			got := titles(t, db, tn, list)
			want := []string{}
			for r := range round + 1 {
				want = append(want, fmt.Sprintf("%s-%d", tn.Key, r))
			}
			if !slices.Equal(got, want) {
				t.Fatalf("round %d, %s read %v, want %v", round, tn.Key, got, want)
			}
		}
	}
	names := preparedNames(t, db, a)
	var listNames []string
	for name, stmt := range names {
		if stmt == list {
			listNames = append(listNames, name)
		}
	}
	if len(listNames) != 2 {
		t.Fatalf("the read was prepared as %d statements (%v), want one per tenant", len(listNames), names)
	}
	// Each of the two, run by name in b's read, reads b's todos.
	for _, name := range listNames {
		got := titles(t, db, b, name)
		if len(got) != 3 || !strings.HasPrefix(got[0], b.Key) {
			t.Errorf("statement %s run in %s's read returned %v", name, b.Key, got)
		}
	}
}

// TestPreparedStatementsBounded: a connection keeps at most its bound of
// the tools' statements prepared, however many different ones it runs,
// and each still returns its own result.
func TestPreparedStatementsBounded(t *testing.T) {
	const bound = 4
	db := openOneConn(t, bound)
	tn := mustTenant(t, db, "prepared-bound.example")
	for round := range 2 {
		for i := range 3 * bound {
			var got int
			err := db.InTenantReadOnly(context.Background(), tn, func(ctx context.Context, tx pgx.Tx) error {
				return tx.QueryRow(ctx, fmt.Sprintf("SELECT %d + count(*)::int FROM todos", i)).Scan(&got)
			})
			if err != nil || got != i {
				t.Fatalf("round %d, statement %d: %d, %v", round, i, got, err)
			}
		}
	}
	// preparedNames' own statement is one of them.
	if n := len(preparedNames(t, db, tn)); n > bound {
		t.Errorf("%d statements prepared on the connection, bound %d", n, bound)
	} else if n < 2 {
		t.Errorf("only %d statements prepared: preparing is not on", n)
	}
}

// TestPreparedStatementsKeepTheMostUsed: a connection meeting more
// statements than its bound (a backend serving more busy tenants than it
// has slots) keeps its most used statements prepared instead of trading
// them for each newcomer, which a least-recently-used order did: a stream
// of statements seen once, interleaved with a few used often, never
// displaces those; a statement that comes to be used more than one
// prepared gets its place; and the bound holds throughout.
func TestPreparedStatementsKeepTheMostUsed(t *testing.T) {
	const bound = 4
	db := openOneConn(t, bound)
	tn := mustTenant(t, db, "prepared-most-used.example")
	sql := func(i int) string { return fmt.Sprintf("SELECT %d + count(*)::int FROM todos", i) }
	run := func(i int) {
		t.Helper()
		var got int
		err := db.InTenantReadOnly(context.Background(), tn, func(ctx context.Context, tx pgx.Tx) error {
			return tx.QueryRow(ctx, sql(i)).Scan(&got)
		})
		if err != nil || got != i {
			t.Fatalf("statement %d: %d, %v", i, got, err)
		}
	}
	prepared := func() map[string]bool {
		t.Helper()
		on := map[string]bool{}
		for _, stmt := range preparedNames(t, db, tn) {
			on[stmt] = true
		}
		if len(on) > bound {
			t.Fatalf("%d statements prepared, bound %d: %v", len(on), bound, on)
		}
		return on
	}
	for range 6 {
		for hot := range bound {
			run(hot)
		}
	}
	for cold := 100; cold < 160; cold++ {
		run(cold)
		run(cold % bound)
		if cold%10 == 0 {
			on := prepared()
			for hot := range bound {
				if !on[sql(hot)] {
					t.Fatalf("after %d statements seen once, the often used statement %d is no longer prepared: %v", cold-99, hot, on)
				}
			}
		}
	}
	for range 50 {
		run(200)
	}
	if on := prepared(); !on[sql(200)] {
		t.Errorf("a statement used more than every prepared one was not prepared: %v", on)
	}
}

// TestPreparedStatementsAcrossMigration: a tenant migration that changes
// what a prepared read and a prepared write return (PostgreSQL: "cached
// plan must not change result type") costs no call: the read returns the
// new columns, and the write commits once, with its audit record once.
func TestPreparedStatementsAcrossMigration(t *testing.T) {
	db := openOneConn(t, 0)
	ctx := context.Background()
	tn := mustTenant(t, db, "prepared-migrate.example")
	read := func() []string {
		var cols []string
		err := db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			rows, err := tx.Query(ctx, "SELECT * FROM projects LIMIT 0")
			if err != nil {
				return err
			}
			for _, f := range rows.FieldDescriptions() {
				cols = append(cols, f.Name)
			}
			rows.Close()
			return rows.Err()
		})
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return cols
	}
	write := func(name string, final bool) []string {
		var cols []string
		rec := &store.AuditRecord{RequestID: "migrate-" + name, Decision: store.Allowed, Tool: "add_project", Subject: "s", Count: 1}
		err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			if final {
				ctx = store.Final(ctx)
			}
			rows, err := tx.Query(ctx, "INSERT INTO projects (name, created_by) VALUES ($1, 's') RETURNING *", name)
			if err != nil {
				return err
			}
			cols = nil
			for _, f := range rows.FieldDescriptions() {
				cols = append(cols, f.Name)
			}
			rows.Close()
			return rows.Err()
		}, rec)
		if err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		return cols
	}
	before := read()
	// Both prepared now, the write in two forms: its statement first and
	// its record with COMMIT, or all three final (store.Final).
	write("before", false)
	write("before final", true)
	for i, column := range []string{"colour", "shade"} {
		alter := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s text NOT NULL DEFAULT ''",
			pgx.Identifier{tn.Schema, "projects"}.Sanitize(), column)
		if _, err := db.Pool().Exec(ctx, alter); err != nil {
			t.Fatal(err)
		}
		// The write first (its prepared INSERT now returns a column
		// more), as it stands and then final.
		name := "after " + column
		if cols := write(name, i == 1); len(cols) != len(before)+i+1 {
			t.Errorf("write after adding %s returned columns %v", column, cols)
		}
		after := read()
		if len(after) != len(before)+i+1 || after[len(after)-1] != column {
			t.Errorf("read after adding %s: columns %v, before %v", column, after, before)
		}
		write(name+" again", false) // prepared again for the next round
		var projects, records int
		q := fmt.Sprintf("SELECT (SELECT count(*) FROM %s WHERE name = $1), (SELECT count(*) FROM %s WHERE request_id = $2)",
			pgx.Identifier{tn.Schema, "projects"}.Sanitize(), pgx.Identifier{tn.Schema, "audit_log"}.Sanitize())
		if err := db.Pool().QueryRow(ctx, q, name, "migrate-"+name).Scan(&projects, &records); err != nil {
			t.Fatal(err)
		}
		if projects != 1 || records != 1 {
			t.Errorf("the write across adding %s left %d projects and %d records, want 1 and 1", column, projects, records)
		}
	}
}

// TestPreparedStatementsConcurrent: many tenants' reads and writes at once
// over a small pool, every statement prepared on first use, each call
// seeing only its tenant's rows (-race).
func TestPreparedStatementsConcurrent(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, storetest.ConnString(t), &store.Options{TenantConns: 3, AffinityConns: -1, PreparedStatements: 5, PrepareAfter: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var tenants []*tenancy.Tenant
	for i := range 6 {
		tenants = append(tenants, mustTenant(t, db, fmt.Sprintf("prepared-c%d.example", i)))
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, tn := range tenants {
		for w := range 3 {
			wg.Go(func() {
				<-start
				for n := range 8 {
					title := fmt.Sprintf("%s/%d/%d", tn.Key, w, n)
					rec := &store.AuditRecord{RequestID: title, Decision: store.Allowed, Tool: "add_todo", Subject: "s", Count: 1}
					if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
						_, err := store.AddTodo(ctx, tx, title, "", "s")
						return err
					}, rec); err != nil {
						t.Error(err)
						return
					}
					var foreign int
					err := db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
						return tx.QueryRow(ctx, "SELECT count(*) FROM todos WHERE title NOT LIKE $1", tn.Key+"/%").Scan(&foreign)
					})
					if err != nil || foreign != 0 {
						t.Errorf("tenant %d read %d foreign todos (%v)", i, foreign, err)
						return
					}
				}
			})
		}
	}
	close(start)
	wg.Wait()
}

// TestNothingPreparedBehindAPooler: behind a transaction pooler the next
// transaction may run on another backend, so no tool statement is
// prepared, however often it runs.
func TestNothingPreparedBehindAPooler(t *testing.T) {
	db, err := store.Open(context.Background(), storetest.ConnString(t), &store.Options{
		TransactionPooler: true, TenantConns: 1, AffinityConns: -1, PrepareAfter: 1, Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tn := mustTenant(t, db, "prepared-pooler.example")
	ctx := context.Background()
	for i := range 3 {
		titles(t, db, tn, "SELECT title FROM todos")
		rec := func() *store.AuditRecord {
			return &store.AuditRecord{RequestID: "pooler", Decision: store.Allowed, Tool: "add_todo", Subject: "s", Count: 1}
		}
		// A write of two statements, then one of a final statement.
		if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := store.AddTodo(ctx, tx, "pooled", "", "s"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "UPDATE todos SET done = true WHERE title = $1", "nothing")
			return err
		}, rec()); err != nil {
			t.Fatal(err)
		}
		if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.AddTodo(store.Final(ctx), tx, fmt.Sprint("pooled final ", i), "", "s")
			return err
		}, rec()); err != nil {
			t.Fatal(err)
		}
		// A read's batch.
		if err := db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue("SELECT set_config('statement_timeout', '5000', true)")
			b.Queue("SELECT count(*) FROM todos")
			return tx.SendBatch(ctx, b).Close()
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing at all: neither the tools' statements nor Gatehouse's fixed
	// ones (named by their text).
	var all []string
	if err := db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, "SELECT name FROM pg_prepared_statements")
		var err error
		all, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(all) != 0 {
		t.Errorf("behind a pooler, %d statements were prepared: %v", len(all), all)
	}
}

// TestPreparedBatchAcrossMigration: a read's batch (tx.SendBatch, as the
// semantic ranking sends) whose prepared statement PostgreSQL refuses
// after a migration changed its result columns fails once, as documented,
// and the next call on the connection runs again; it must not go on
// failing for as long as the connection keeps the statement.
func TestPreparedBatchAcrossMigration(t *testing.T) {
	db := openOneConn(t, 0)
	ctx := context.Background()
	tn := mustTenant(t, db, "prepared-batch.example")
	batch := func() (int, error) {
		var cols int
		err := db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue("SELECT set_config('statement_timeout', '5000', true)")
			b.Queue("SELECT * FROM projects LIMIT 0")
			br := tx.SendBatch(ctx, b)
			defer br.Close()
			if _, err := br.Exec(); err != nil {
				return err
			}
			rows, err := br.Query()
			if err != nil {
				return err
			}
			cols = len(rows.FieldDescriptions())
			rows.Close()
			return rows.Err()
		})
		return cols, err
	}
	before, err := batch()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := batch(); err != nil { // prepared by now
		t.Fatal(err)
	}
	alter := fmt.Sprintf("ALTER TABLE %s ADD COLUMN colour text", pgx.Identifier{tn.Schema, "projects"}.Sanitize())
	if _, err := db.Pool().Exec(ctx, alter); err != nil {
		t.Fatal(err)
	}
	_, _ = batch() // may fail once: "cached plan must not change result type"
	for i := range 3 {
		cols, err := batch()
		if err != nil || cols != before+1 {
			t.Fatalf("batch %d after the migration: %d columns (before %d), %v", i, cols, before, err)
		}
	}
}

// TestPreparedStatementsSmallBound: a bound smaller than the statements of
// one message (a final write: the tool's statement and the audit record;
// a read's batch of several statements) must not deallocate a statement
// that message is about to run by name. Every bound from 1 up.
func TestPreparedStatementsSmallBound(t *testing.T) {
	ctx := context.Background()
	for _, bound := range []int{1, 2, 3} {
		db := openOneConn(t, bound)
		tn := mustTenant(t, db, fmt.Sprintf("prepared-small-%d.example", bound))
		for i := range 4 {
			title := fmt.Sprintf("small %d/%d", bound, i)
			rec := &store.AuditRecord{RequestID: title, Decision: store.Allowed, Tool: "add_todo", Subject: "s", Count: 1}
			if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
				if i%2 == 1 {
					var n int
					if err := tx.QueryRow(ctx, "SELECT count(*) FROM todos").Scan(&n); err != nil {
						return err
					}
				}
				_, err := store.AddTodo(store.Final(ctx), tx, title, "", "s")
				return err
			}, rec); err != nil {
				t.Fatalf("bound %d, final write %d: %v", bound, i, err)
			}
			err := db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
				b := &pgx.Batch{}
				for k := range 4 {
					b.Queue(fmt.Sprintf("SELECT %d + count(*)::int FROM todos", k))
				}
				br := tx.SendBatch(ctx, b)
				defer br.Close()
				for k := range 4 {
					var got int
					if err := br.QueryRow().Scan(&got); err != nil {
						return fmt.Errorf("statement %d: %w", k, err)
					}
					if got != k+i+1 {
						return fmt.Errorf("statement %d: %d, want %d", k, got, k+i+1)
					}
				}
				return br.Close()
			})
			if err != nil {
				t.Fatalf("bound %d, batch %d: %v", bound, i, err)
			}
		}
		if n := len(preparedNames(t, db, tn)); n > bound {
			t.Errorf("bound %d: %d statements prepared", bound, n)
		}
	}
}

// TestPreparedStatementFailsInAWrite: a statement of a write that cannot
// be prepared (a column this tenant's tables do not have, as during a
// rolling migration) fails with PostgreSQL's own error, not with "current
// transaction is aborted" from a failed preparation inside the
// transaction; a tool that expects such an error can tell it; and the
// connection serves the next write.
func TestPreparedStatementFailsInAWrite(t *testing.T) {
	db := openOneConn(t, 0)
	ctx := context.Background()
	tn := mustTenant(t, db, "prepared-fails.example")
	for i := range 3 {
		rec := &store.AuditRecord{RequestID: fmt.Sprintf("fails-%d", i), Decision: store.Allowed, Tool: "add_todo", Subject: "s", Count: 1}
		err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := store.AddTodo(ctx, tx, "first", "", "s"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "UPDATE todos SET no_such_column = 1")
			return err
		}, rec)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42703" {
			t.Fatalf("write %d: %v, want undefined_column (42703)", i, err)
		}
	}
	rec := &store.AuditRecord{RequestID: "after", Decision: store.Allowed, Tool: "add_todo", Subject: "s", Count: 1}
	if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		_, err := store.AddTodo(store.Final(ctx), tx, "after", "", "s")
		return err
	}, rec); err != nil {
		t.Fatal(err)
	}
}

// TestPreparedStatementsAcrossParameterTypeChange: a migration that
// changes the type of a column a statement compares with a parameter
// leaves the prepared statement's parameter with its old type, which
// PostgreSQL now refuses ("operator does not exist: text = date") though
// the same statement unprepared runs; reads and writes must still work,
// on the first call after the migration and every later one.
func TestPreparedStatementsAcrossParameterTypeChange(t *testing.T) {
	db := openOneConn(t, 0)
	ctx := context.Background()
	tn := mustTenant(t, db, "prepared-param-type.example")
	const (
		read  = "SELECT count(*) FROM todos WHERE due_on = $1"
		write = "UPDATE todos SET done = done WHERE due_on = $1"
	)
	run := func() error {
		var n int
		if err := db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			return tx.QueryRow(ctx, read, "2026-01-01").Scan(&n)
		}); err != nil {
			return fmt.Errorf("read: %w", err)
		}
		rec := &store.AuditRecord{RequestID: "param-type", Decision: store.Allowed, Tool: "update_todo", Subject: "s", Count: 1}
		if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, write, "2026-01-01"); err != nil {
				return err
			}
			_, err := tx.Exec(store.Final(ctx), write, "2026-01-02")
			return err
		}, rec); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	}
	for range 2 {
		if err := run(); err != nil {
			t.Fatal(err)
		}
	}
	alter := fmt.Sprintf("ALTER TABLE %s ALTER COLUMN due_on TYPE text", pgx.Identifier{tn.Schema, "todos"}.Sanitize())
	if _, err := db.Pool().Exec(ctx, alter); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := run(); err != nil {
			t.Fatalf("call %d after the migration: %v", i, err)
		}
	}
}

// TestPreparationRetriedAfterItFailed: a statement whose preparation
// failed (its table did not exist yet) is prepared after all once the
// cause has passed (a migration created the table), instead of running
// unprepared for the connection's whole life.
func TestPreparationRetriedAfterItFailed(t *testing.T) {
	db := openOneConn(t, 0)
	ctx := context.Background()
	tn := mustTenant(t, db, "prepared-retry.example")
	const sql = "SELECT count(*) FROM later_notes"
	count := func() error {
		return db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			var n int
			return tx.QueryRow(ctx, sql).Scan(&n)
		})
	}
	if err := count(); err == nil {
		t.Fatal("a read of a table that does not exist succeeded")
	}
	table := pgx.Identifier{tn.Schema, "later_notes"}.Sanitize()
	ddl := "CREATE TABLE " + table + " (id int)"
	if tn.DBRole != "" {
		ddl += "; GRANT SELECT ON " + table + " TO " + pgx.Identifier{tn.DBRole}.Sanitize()
	}
	if _, err := db.Pool().Exec(ctx, ddl); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := count(); err != nil {
			t.Fatalf("read %d after the table was created: %v", i, err)
		}
	}
	for _, stmt := range preparedNames(t, db, tn) {
		if stmt == sql {
			return
		}
	}
	t.Error("the statement was never prepared again after its preparation failed once")
}
