package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestAuditWritesBesideALockedAuditLog: while another session holds one
// tenant's audit log locked (as a migration's ALTER TABLE or VACUUM FULL
// does), group commits with that tenant's records among others', from
// several writers released together, end while the lock is still held:
// the others' records are stored, the locked tenant's fail with
// ErrAuditLogBusy (a transient error), and so do its records for a moment
// after, without waiting. Once the lock is gone its records are stored
// again, and nothing was written twice.
func TestAuditWritesBesideALockedAuditLog(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	locked, b, c := mustTenant(t, db, "locked.example"), mustTenant(t, db, "b.example"), mustTenant(t, db, "c.example")
	rec := func(tag string) *store.AuditRecord {
		return &store.AuditRecord{Decision: store.Allowed, Tool: "whoami", Subject: "s", RequestID: tag}
	}
	if errs, _ := db.WriteAuditEntries(ctx, []store.AuditEntry{{Tenant: locked, Rec: rec("warm")}, {Tenant: b, Rec: rec("warm")}, {Tenant: c, Rec: rec("warm")}}); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}
	holder, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	if _, err := holder.Exec(ctx, "LOCK TABLE "+pgx.Identifier{locked.Schema, "audit_log"}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}

	const writers = 4
	type result struct {
		tenants []*tenancy.Tenant
		errs    []error
	}
	results := make(chan result, writers)
	start := make(chan struct{})
	for w := range writers {
		go func() {
			<-start
			ts := []*tenancy.Tenant{b, locked, c, locked}
			entries := make([]store.AuditEntry, len(ts))
			for i, tn := range ts {
				entries[i] = store.AuditEntry{Tenant: tn, Rec: rec(fmt.Sprint("w", w, "-", i))}
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			errs, _ := db.WriteAuditEntries(wctx, entries)
			results <- result{ts, errs}
		}()
	}
	close(start)
	for range writers {
		select {
		case r := <-results:
			for i, err := range r.errs {
				switch {
				case r.tenants[i] == locked && (!errors.Is(err, store.ErrAuditLogBusy) || !store.Unavailable(err)):
					t.Errorf("the locked tenant's record: %v; want ErrAuditLogBusy, transient", err)
				case r.tenants[i] != locked && err != nil:
					t.Errorf("%s's record beside a locked audit log: %v", r.tenants[i].Key, err)
				}
			}
		case <-time.After(8 * time.Second):
			t.Fatal("a group commit waited for another tenant's locked audit log")
		}
	}
	if _, err := db.InsertAuditRecord(ctx, locked, rec("alone")); !errors.Is(err, store.ErrAuditLogBusy) {
		t.Errorf("a record alone while the audit log is locked: %v; want ErrAuditLogBusy", err)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// Refused for a moment after, then stored again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := db.InsertAuditRecord(ctx, locked, rec("after"))
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrAuditLogBusy) || time.Now().After(deadline) {
			t.Fatalf("after the lock: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for tn, want := range map[*tenancy.Tenant]int{locked: 2, b: 1 + writers, c: 1 + writers} {
		var n int
		if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, "SELECT count(*) FROM audit_log").Scan(&n)
		}); err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("%s: %d records, want %d", tn.Key, n, want)
		}
	}
}
