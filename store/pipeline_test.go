package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestInTenantWrite: the effect and its audit record commit together in
// the pipelined write transaction, and neither survives when either fails
// (a tool error after its statement, a record the table refuses, a first
// statement that fails). The transaction is confined to the tenant, and
// the connection is usable afterwards (concurrent callers, -race).
func TestInTenantWrite(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "pipeline.example")
	other := mustTenant(t, db, "other-pipeline.example")
	count := func(sql string) int { return countIn(t, db, tn, sql) }
	rec := writeRecord

	ok := rec("ok")
	err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		_, err := store.AddTodo(ctx, tx, "pipelined", "", "s")
		return err
	}, ok)
	if err != nil || ok.ID == 0 || ok.At.IsZero() {
		t.Fatalf("InTenantWrite: %v (record %+v)", err, ok)
	}
	if count("SELECT count(*) FROM todos WHERE title = 'pipelined'") != 1 || count("SELECT count(*) FROM audit_log WHERE request_id = 'ok'") != 1 {
		t.Fatal("effect or record missing after a successful write")
	}

	boom := errors.New("tool failed")
	if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := store.AddTodo(ctx, tx, "rolled back", "", "s"); err != nil {
			return err
		}
		return boom
	}, rec("tool-error")); !errors.Is(err, boom) {
		t.Fatalf("tool error: %v", err)
	}
	bad := rec("bad-record")
	bad.Decision = "NOT A DECISION" // refused by the table's CHECK
	if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		_, err := store.AddTodo(ctx, tx, "rolled back", "", "s")
		return err
	}, bad); err == nil {
		t.Fatal("a record the table refuses was accepted")
	}
	if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "SELECT * FROM "+pgx.Identifier{other.Schema, "todos"}.Sanitize())
		return err
	}, rec("other-tenant")); err == nil {
		t.Fatal("the pipelined transaction read another tenant's table")
	}
	if n := count("SELECT count(*) FROM todos WHERE title = 'rolled back'"); n != 0 {
		t.Errorf("%d effects of failed writes survived", n)
	}
	if n := count("SELECT count(*) FROM audit_log WHERE request_id IN ('tool-error', 'bad-record', 'other-tenant')"); n != 0 {
		t.Errorf("%d records of failed writes survived", n)
	}

	// Many at once through the pool, after the failures above.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
				rows, _ := tx.Query(ctx, "SELECT id::text FROM todos")
				if _, err := pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
					return err
				}
				_, err := store.AddTodo(ctx, tx, "concurrent", "", "s")
				return err
			}, rec("concurrent"))
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if a, b := count("SELECT count(*) FROM todos WHERE title = 'concurrent'"), count("SELECT count(*) FROM audit_log WHERE request_id = 'concurrent'"); a != 20 || b != 20 {
		t.Errorf("20 concurrent writes: %d todos, %d records", a, b)
	}
}

// TestEveryAuditPathStoresEveryField: the three ways a record reaches a
// tenant's audit log (in the tool's transaction, pipelined with a write,
// group-committed in a batch) store every field the record carries,
// including the surface it came through (via), and read back equal.
func TestEveryAuditPathStoresEveryField(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "fields.example")
	rec := func(reqID string) *store.AuditRecord {
		return &store.AuditRecord{RequestID: reqID, Decision: store.Allowed, Tool: "list_my_api_keys", Subject: "corp:ada",
			Email: "ada@fields.example", Provider: "corp", APIKeyID: "k1", ClientIP: "203.0.113.9", UserAgent: "ua/1",
			Reason: "why", ArgsDigest: "d1", Count: 1, Via: "console"}
	}
	if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error { return store.InsertAudit(ctx, tx, rec("in-tx")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.InTenantWrite(ctx, tn, func(context.Context, pgx.Tx) error { return nil }, rec("pipelined")); err != nil {
		t.Fatal(err)
	}
	if err := db.InsertAuditBatch(ctx, []store.AuditEntry{{Tenant: tn, Rec: rec("batched")}}); err != nil {
		t.Fatal(err)
	}
	var got []*store.AuditRecord
	if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
		var err error
		got, _, err = store.FindAudit(ctx, tx, store.AuditFilter{Limit: 10})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d records, want 3", len(got))
	}
	for _, r := range got {
		want := rec(r.RequestID)
		want.ID, want.At, want.ChainSeq = r.ID, r.At, r.ChainSeq
		if *r != *want {
			t.Errorf("%s stored as\n%+v\nwant\n%+v", r.RequestID, *r, *want)
		}
	}
}

// countIn runs sql, a count, in tenant tn's schema.
func countIn(t *testing.T, db *store.DB, tn *tenancy.Tenant, sql string) int {
	t.Helper()
	var n int
	ctx := context.Background()
	if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error { return tx.QueryRow(ctx, sql).Scan(&n) }); err != nil {
		t.Fatal(err)
	}
	return n
}

// writeRecord is the audit record of an allowed add_todo call with
// request id reqID.
func writeRecord(reqID string) *store.AuditRecord {
	return &store.AuditRecord{RequestID: reqID, Decision: store.Allowed, Tool: "add_todo", Subject: "s", Count: 1}
}
