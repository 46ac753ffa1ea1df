package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestInTenantWriteFinal: a write whose last statement is marked final
// (store.Final) commits its effect and its record together, first
// statement or not; when the final statement or the record fails,
// neither survives and the connection serves the next write; a statement
// after the final one is refused and the write reported as committed;
// Final in a read changes nothing. Many writers at once (-race).
func TestInTenantWriteFinal(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "final.example")
	count := func(sql string) int { t.Helper(); return countIn(t, db, tn, sql) }
	rec := writeRecord
	both := func(title, reqID string) (int, int) {
		t.Helper()
		return count("SELECT count(*) FROM todos WHERE title = '" + title + "'"),
			count("SELECT count(*) FROM audit_log WHERE request_id = '" + reqID + "'")
	}

	// Only statement, final: one message.
	r := rec("final-only")
	if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		_, err := store.AddTodo(store.Final(ctx), tx, "final only", "", "s")
		return err
	}, r); err != nil || r.ID == 0 || r.At.IsZero() {
		t.Fatalf("final only: %v (record %+v)", err, r)
	}
	if a, b := both("final only", "final-only"); a != 1 || b != 1 {
		t.Fatalf("final only: %d todos, %d records", a, b)
	}

	// After a first statement; Exec as the final statement.
	if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM todos").Scan(&n); err != nil {
			return err
		}
		_, err := tx.Exec(store.Final(ctx), "INSERT INTO todos (title, created_by) VALUES ('final second', 's')")
		return err
	}, rec("final-second")); err != nil {
		t.Fatal(err)
	}
	if a, b := both("final second", "final-second"); a != 1 || b != 1 {
		t.Fatalf("final second: %d todos, %d records", a, b)
	}

	// The final statement fails (the table's CHECK): nothing survives.
	long := strings.Repeat("x", 100000)
	if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := store.AddTodo(ctx, tx, "before failing final", "", "s"); err != nil {
			return err
		}
		_, err := store.AddTodo(store.Final(ctx), tx, long, "", "s")
		return err
	}, rec("final-fails")); err == nil {
		t.Fatal("a final statement the table refuses was accepted")
	}
	if a, b := both("before failing final", "final-fails"); a != 0 || b != 0 {
		t.Fatalf("failed final statement: %d todos, %d records survived", a, b)
	}

	// The record fails (a decision the table refuses): nothing survives.
	bad := rec("final-bad-record")
	bad.Decision = "NOT A DECISION"
	if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		_, err := store.AddTodo(store.Final(ctx), tx, "bad record final", "", "s")
		return err
	}, bad); err == nil {
		t.Fatal("a final write whose record the table refuses was accepted")
	}
	if a, b := both("bad record final", "final-bad-record"); a != 0 || b != 0 {
		t.Fatalf("refused record: %d todos, %d records survived", a, b)
	}

	// A statement after the final one: refused; the write has committed
	// and says so.
	err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := store.AddTodo(store.Final(ctx), tx, "final then more", "", "s"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO todos (title, created_by) VALUES ('after final', 's')")
		return err
	}, rec("final-then-more"))
	if err == nil || !strings.Contains(err.Error(), "committed") {
		t.Fatalf("a statement after the final one: %v", err)
	}
	if a, b := both("final then more", "final-then-more"); a != 1 || b != 1 {
		t.Fatalf("final then more: %d todos, %d records", a, b)
	}
	if n := count("SELECT count(*) FROM todos WHERE title = 'after final'"); n != 0 {
		t.Fatal("a statement after the final one ran")
	}

	// The tool fails after its final statement: reported, not hidden.
	boom := errors.New("tool failed late")
	if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := store.AddTodo(store.Final(ctx), tx, "late failure", "", "s"); err != nil {
			return err
		}
		return boom
	}, rec("late-failure")); !errors.Is(err, boom) || !strings.Contains(err.Error(), "committed") {
		t.Fatalf("a tool failing after its final statement: %v", err)
	}

	// Final in a read: an ordinary read.
	var n int
	if err := db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		return tx.QueryRow(store.Final(ctx), "SELECT count(*) FROM todos").Scan(&n)
	}); err != nil || n != 4 {
		t.Fatalf("Final in a read: %d todos, %v", n, err)
	}

	// Many at once, some failing, on a pool they share.
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			<-start
			title, reqID := "concurrent final", "concurrent-final"
			if i%3 == 0 {
				title, reqID = long, "concurrent-final-fails"
			}
			err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
				_, err := store.AddTodo(store.Final(ctx), tx, title, "", "s")
				return err
			}, rec(reqID))
			if (err != nil) != (i%3 == 0) {
				t.Errorf("writer %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if a, b := both("concurrent final", "concurrent-final"); a != 16 || b != 16 {
		t.Errorf("16 final writes: %d todos, %d records", a, b)
	}
	if n := count("SELECT count(*) FROM audit_log WHERE request_id = 'concurrent-final-fails'"); n != 0 {
		t.Errorf("%d records of failed final writes survived", n)
	}
}
