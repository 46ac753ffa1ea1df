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

// TestAuditWritesBesideLockedAuditLogs: while other sessions hold two
// tenants' audit logs locked (as a migration's ALTER TABLE or VACUUM FULL
// does), group commits mixing their records with two other tenants',
// from writers released together, each end within a few lock waits: the
// others' records are stored, the locked tenants' fail with
// ErrAuditLogBusy (transient). For a moment after, their records are
// refused without a statement; then one is handed back to be written
// alone (ErrAuditProbe) while the batches go on without it; a probe that
// still meets the lock keeps the tenant apart, one after the lock has
// gone lets it back into the batches. Aggregated records (nobody waits on
// them) wait for the lock instead and are stored. Nothing is written
// twice.
//
// That is the group commit's way when the audit intake cannot be used
// (audit_intake.go): skipped here for the test's length.
func TestAuditWritesBesideLockedAuditLogs(t *testing.T) {
	db := storetest.MustOpenDB(t)
	store.SkipIntake(db, time.Hour)
	ctx := context.Background()
	l1, l2 := mustTenant(t, db, "locked-1.example"), mustTenant(t, db, "locked-2.example")
	b, c := mustTenant(t, db, "b.example"), mustTenant(t, db, "c.example")
	isLocked := func(tn *tenancy.Tenant) bool { return tn == l1 || tn == l2 }
	seq := 0
	rec := func() *store.AuditRecord {
		seq++
		return &store.AuditRecord{Decision: store.Allowed, Tool: "whoami", Subject: "s", RequestID: fmt.Sprint("r", seq)}
	}
	stored := map[*tenancy.Tenant]int{}
	write := func(ts ...*tenancy.Tenant) []error {
		t.Helper()
		entries := make([]store.AuditEntry, len(ts))
		for i, tn := range ts {
			entries[i] = store.AuditEntry{Tenant: tn, Rec: rec()}
		}
		errs, _ := db.WriteAuditEntries(ctx, entries)
		for i, err := range errs {
			if err == nil {
				stored[ts[i]]++
			}
		}
		return errs
	}
	if errs := write(l1, l2, b, c); errors.Join(errs...) != nil { // warm: statements prepared
		t.Fatal(errors.Join(errs...))
	}
	holders := map[*tenancy.Tenant]pgx.Tx{}
	for _, tn := range []*tenancy.Tenant{l1, l2} {
		h, err := db.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Rollback(ctx)
		if _, err := h.Exec(ctx, "LOCK TABLE "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		holders[tn] = h
	}

	// Writers released together.
	const writers = 4
	type result struct {
		ts   []*tenancy.Tenant
		errs []error
		took time.Duration
	}
	results := make(chan result, writers)
	start := make(chan struct{})
	for w := range writers {
		ts := []*tenancy.Tenant{b, l1, c, l2, l1}
		entries := make([]store.AuditEntry, len(ts))
		for i, tn := range ts {
			entries[i] = store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{Decision: store.Allowed, Tool: "whoami", Subject: "s", RequestID: fmt.Sprint("w", w, "-", i)}}
		}
		go func() {
			<-start
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			s := time.Now()
			errs, _ := db.WriteAuditEntries(wctx, entries)
			results <- result{ts, errs, time.Since(s)}
		}()
	}
	close(start)
	for range writers {
		r := <-results
		// A few lock waits (200 ms each) at most; the group commit's
		// time limit (5 s) before.
		if r.took > 2*time.Second {
			t.Errorf("a group commit took %v beside two locked audit logs", r.took)
		}
		for i, err := range r.errs {
			switch {
			case isLocked(r.ts[i]) && (!errors.Is(err, store.ErrAuditLogBusy) || !store.Unavailable(err)):
				t.Errorf("%s's record: %v; want ErrAuditLogBusy, transient", r.ts[i].Key, err)
			case !isLocked(r.ts[i]) && err != nil:
				t.Errorf("%s's record beside locked audit logs: %v", r.ts[i].Key, err)
			case err == nil:
				stored[r.ts[i]]++
			}
		}
	}
	if _, err := db.InsertAuditRecord(ctx, l1, rec()); !errors.Is(err, store.ErrAuditLogBusy) {
		t.Errorf("a record alone while the audit log is locked: %v; want ErrAuditLogBusy", err)
	}

	// Aggregates wait for the lock (here l2's, released below).
	aggregated := make(chan error, 1)
	go func() {
		_, err := db.InsertAuditRecords(ctx, l2, []*store.AuditRecord{{Decision: store.RateLimited, Tool: "whoami", Subject: "s", Count: 3}})
		aggregated <- err
	}()

	// Past the moment: one record of each locked tenant is handed back to
	// be written alone, the second refused, the others written.
	time.Sleep(1100 * time.Millisecond)
	errs := write(b, l1, l1, c)
	if !errors.Is(errs[1], store.ErrAuditProbe) || !errors.Is(errs[2], store.ErrAuditLogBusy) || errs[0] != nil || errs[3] != nil {
		t.Fatalf("after the moment, while locked: %v; want nil, ErrAuditProbe, ErrAuditLogBusy, nil", errs)
	}
	if _, err := db.ProbeAuditRecord(ctx, l1, rec()); !errors.Is(err, store.ErrAuditLogBusy) {
		t.Fatalf("the probe while locked: %v; want ErrAuditLogBusy", err)
	}
	if errs := write(l1); !errors.Is(errs[0], store.ErrAuditLogBusy) {
		t.Fatalf("right after a failed probe: %v; want ErrAuditLogBusy", errs[0])
	}
	select {
	case err := <-aggregated:
		t.Fatalf("aggregated records while their audit log is locked: %v; want them waiting", err)
	default:
	}

	for _, h := range holders {
		if err := h.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-aggregated; err != nil {
		t.Errorf("aggregated records after the lock: %v", err)
	}
	time.Sleep(1100 * time.Millisecond)
	if errs := write(l1); !errors.Is(errs[0], store.ErrAuditProbe) {
		t.Fatalf("after the lock: %v; want ErrAuditProbe", errs[0])
	}
	if _, err := db.ProbeAuditRecord(ctx, l1, rec()); err != nil {
		t.Fatalf("the probe after the lock: %v", err)
	}
	stored[l1]++
	if errs := write(l1, l2, b); errs[0] != nil || !errors.Is(errs[1], store.ErrAuditProbe) || errs[2] != nil {
		t.Fatalf("after l1's probe: %v; want l1 in the batch again, l2 to probe", errs)
	}
	want := map[*tenancy.Tenant]int{l1: stored[l1], l2: stored[l2] + 1 /* the aggregate */, b: stored[b], c: stored[c]}
	for tn, n := range want {
		var got int
		if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, "SELECT count(*) FROM audit_log").Scan(&got)
		}); err != nil {
			t.Fatal(err)
		}
		if got != n {
			t.Errorf("%s: %d records stored, want %d", tn.Key, got, n)
		}
	}
}
