package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestInTenantReadOnlyConfined: every statement of a pipelined read runs
// as the tenant's role in its schema and read-only, including statements
// after one that tries to leave the role (RESET ROLE, set_config('role',
// 'none', true)), to write, or to read another tenant; and no connection
// of the pool keeps any of it afterwards (many reads at once, -race).
func TestInTenantReadOnlyConfined(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "read-pipeline.example")
	other := mustTenant(t, db, "other-read-pipeline.example")
	if tn.DBRole == "" {
		t.Skip("this database cannot create roles")
	}
	if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		_, err := store.AddTodo(ctx, tx, "visible", "", "s")
		return err
	}, &store.AuditRecord{RequestID: "seed", Decision: store.Allowed, Subject: "s", Count: 1}); err != nil {
		t.Fatal(err)
	}
	schema := pgx.Identifier{tn.Schema}.Sanitize()
	whoami := func(ctx context.Context, tx pgx.Tx) (user, path, ro string) {
		t.Helper()
		if err := tx.QueryRow(ctx, "SELECT current_user, current_setting('search_path'), current_setting('transaction_read_only')").Scan(&user, &path, &ro); err != nil {
			t.Fatal(err)
		}
		return
	}
	err := db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		check := func(when string) {
			if user, path, ro := whoami(ctx, tx); user != tn.DBRole || path != schema || ro != "on" {
				t.Errorf("%s: user %q, search_path %q, read only %q", when, user, path, ro)
			}
		}
		check("first statement")
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM todos WHERE title = 'visible'").Scan(&n); err != nil || n != 1 {
			t.Errorf("reading the tenant's todos: %d, %v", n, err)
		}
		var pgErr *pgconn.PgError
		if _, err := tx.Exec(ctx, "INSERT INTO todos (title, created_by) VALUES ('written', 's')"); !errors.As(err, &pgErr) || pgErr.Code != "25006" {
			t.Errorf("a write in a read: %v, want SQLSTATE 25006", err)
		}
		check("after a refused write")
		for _, escape := range []string{"RESET ROLE", "SET ROLE NONE", "SELECT set_config('role', 'none', true)", "SET search_path = public", "SET SESSION AUTHORIZATION DEFAULT"} {
			_, _ = tx.Exec(ctx, escape)
			check("after " + escape)
		}
		if _, err := tx.Exec(ctx, "SELECT * FROM "+pgx.Identifier{other.Schema, "todos"}.Sanitize()); err == nil {
			t.Error("a read reached another tenant's table")
		}
		b := &pgx.Batch{}
		b.Queue("SELECT current_user")
		var user string
		if err := tx.SendBatch(ctx, b).QueryRow().Scan(&user); err != nil || user != tn.DBRole {
			t.Errorf("a batch ran as %q (%v)", user, err)
		}
		if tx.Conn() != nil || tx.Commit(ctx) == nil {
			t.Error("the read's Tx exposes its connection or commits")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			_ = db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
				whoami(ctx, tx)
				_, _ = tx.Exec(ctx, "SELECT set_config('role', 'none', false)") // a session-level attempt
				return nil
			})
		})
	}
	wg.Wait()
	// Every connection of the tenant-work pool is back to the session user.
	err = db.EachTenantConn(ctx, func(c *pgxpool.Conn) error {
		var user, path, ro string
		if err := c.QueryRow(ctx, "SELECT current_user, current_setting('search_path'), current_setting('transaction_read_only')").Scan(&user, &path, &ro); err != nil {
			return err
		}
		if user == tn.DBRole || path == schema || ro != "off" {
			t.Errorf("a pooled connection kept the read's settings: user %q, search_path %q, read only %q", user, path, ro)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
