package mcp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestKeptRecords: records that cannot be stored when due (here: the
// tenant's audit log locked by another session) are kept, not dropped:
// the refusals that follow join them without waiting for the lock again,
// they are tried again only when their turn comes (heldRetry), and once
// the audit log takes them every one is stored, counted and chained. Only
// the last flush of a stopping process, or a record kept for heldFor,
// loses them, and says so. Before, each flush's aggregates and each call's
// record that could not be stored were lost at once.
func TestKeptRecords(t *testing.T) {
	db := storetest.MustOpenDB(t)
	key := store.NewAuditKey([]byte("test audit key"))
	ctx := context.Background()
	tns := chainFixture(t, db, "kept.example", "free.example")
	var logs lockedBuffer
	a := newAuditor(db, key, slog.New(slog.NewTextHandler(io.Discard, nil)), slog.New(slog.NewTextHandler(&logs, nil)))
	a.stopWait = 2 * heldWait // a flush's bound: room for one tenant's try beside the lock, and the other's
	caller := func(tn *tenancy.Tenant) *Caller {
		return &Caller{Tenant: tn, Principal: &identity.Principal{Subject: "svc", Provider: "apikey"}, ClientIP: "192.0.2.7"}
	}
	type tally struct{ limited, failed, calls int }
	stored := func(tn *tenancy.Tenant) (n tally) {
		t.Helper()
		if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT coalesce(sum(count) FILTER (WHERE decision = $1), 0), coalesce(sum(count) FILTER (WHERE decision = $2 AND request_id = ''), 0),
				count(*) FILTER (WHERE request_id LIKE 'kept-call-%')
				FROM audit_log`, store.RateLimited, store.Failed).Scan(&n.limited, &n.failed, &n.calls)
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	kept := func(tn *tenancy.Tenant) (aggs, recs int) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if h := a.held[tn.ID]; h != nil {
			for _, agg := range h.aggs {
				aggs += agg.rec.Count
			}
			recs = len(h.recs)
		}
		return aggs, recs
	}

	release := storetest.LockTable(t, db, tns[0].Schema, "audit_log")
	for range 3 {
		a.rateLimited(caller(tns[0]), "add_todo", "tenant rate")
	}
	a.rateLimited(caller(tns[1]), "add_todo", "tenant rate")
	a.flush(ctx, false)
	if aggs, _ := kept(tns[0]); aggs != 3 {
		t.Fatalf("after a flush beside the lock: %d refusals kept, want 3", aggs)
	}
	if n := stored(tns[1]); n.limited != 1 {
		t.Errorf("the other tenant's refusal: %+v stored, want it stored at once", n)
	}
	// More refusals (another decision among them), and a call's record:
	// they join the kept ones, untried until their turn.
	a.rateLimited(caller(tns[0]), "add_todo", "tenant rate")
	a.refused(caller(tns[0]), "initialize", store.Failed, "unavailable: a test", "")
	if !a.hold(tns[0], &store.AuditRecord{RequestID: "kept-call-1", Decision: store.Failed, Tool: "list_todos", Subject: "svc", Reason: "unavailable"}) {
		t.Fatal("a call's record was not kept")
	}
	began := time.Now()
	a.flush(ctx, false)
	if took := time.Since(began); took >= a.stopWait {
		t.Errorf("a flush before the kept records' turn waited %v for the lock", took)
	}
	if aggs, recs := kept(tns[0]); aggs != 5 || recs != 1 {
		t.Fatalf("kept: %d refusals and %d calls' records, want 5 and 1", aggs, recs)
	}
	// Their turn, the audit log still locked: tried within heldWait, and
	// kept again.
	a.mu.Lock()
	a.held[tns[0].ID].next = time.Time{}
	a.mu.Unlock()
	a.flush(ctx, false)
	if aggs, recs := kept(tns[0]); aggs != 5 || recs != 1 {
		t.Fatalf("kept after a try beside the lock: %d refusals and %d calls' records, want 5 and 1", aggs, recs)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	a.flush(ctx, false) // not their turn yet
	if n := stored(tns[0]); n != (tally{}) {
		t.Errorf("stored before their turn: %+v", n)
	}
	a.flush(ctx, true) // FlushAudit: every kept record now
	if n := stored(tns[0]); n != (tally{limited: 4, failed: 1, calls: 1}) {
		t.Errorf("stored once the lock went: %+v, want 4 rate-limited, 1 refused, 1 call", n)
	}
	if aggs, recs := kept(tns[0]); aggs+recs != 0 {
		t.Errorf("still kept after they were stored: %d, %d", aggs, recs)
	}
	if rep, err := db.VerifyAudit(ctx, tns[0], key); err != nil || !rep.OK() || rep.Pending != 0 {
		t.Errorf("the chain: %+v, %v", rep, err)
	}
	if out := logs.String(); !strings.Contains(out, "kept, and tried again shortly") || !strings.Contains(out, "are stored now") || strings.Contains(out, "lost") {
		t.Errorf("log:\n%s", out)
	}

	// Kept for heldFor: lost, and logged as lost.
	logs.Reset()
	release = storetest.LockTable(t, db, tns[0].Schema, "audit_log")
	a.hold(tns[0], &store.AuditRecord{RequestID: "kept-call-2", Decision: store.Failed, Subject: "svc", Reason: "unavailable"})
	a.mu.Lock()
	a.held[tns[0].ID].since = time.Now().Add(-heldFor)
	a.held[tns[0].ID].next = time.Time{}
	a.mu.Unlock()
	a.flush(ctx, false)
	if _, recs := kept(tns[0]); recs != 0 || !strings.Contains(logs.String(), "are lost") {
		t.Errorf("a record kept for %v: %d still kept; log:\n%s", heldFor, recs, logs.String())
	}

	// The last flush of a stopping process tries what is kept once, and
	// says what it loses.
	logs.Reset()
	a.hold(tns[0], &store.AuditRecord{RequestID: "kept-call-3", Decision: store.Failed, Subject: "svc", Reason: "unavailable"})
	a.rateLimited(caller(tns[0]), "add_todo", "tenant rate")
	a.stopping.Store(true)
	a.flush(ctx, true)
	if aggs, recs := kept(tns[0]); aggs+recs != 0 || !strings.Contains(logs.String(), "are lost") || !strings.Contains(logs.String(), "stopping=true") {
		t.Errorf("the last flush: %d, %d still kept; log:\n%s", aggs, recs, logs.String())
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if n := stored(tns[0]); n.calls != 1 {
		t.Errorf("%d calls' records stored, want only the first", n.calls)
	}
}

// TestWriteTurn: within one flush, a database found unreachable, or the
// flush's bound reached, leaves the tenants not yet tried to the next
// flush; a lock on one tenant's audit log does not; the last flush tries
// every tenant.
func TestWriteTurn(t *testing.T) {
	down := fmt.Errorf("storing an audit record: %w", store.ErrUnavailable)
	locked := fmt.Errorf("tenant a: %w", store.ErrAuditLogBusy)
	for _, tt := range []struct {
		name  string
		final bool
		bound time.Duration
		errs  []error
		skip  bool
	}{
		{"nothing tried yet", false, time.Minute, nil, false},
		{"a tenant stored", false, time.Minute, []error{nil}, false},
		{"a tenant's audit log locked", false, time.Minute, []error{locked, nil}, false},
		{"a lock wait cut short", false, time.Minute, []error{context.DeadlineExceeded}, false},
		{"the database unreachable", false, time.Minute, []error{nil, down}, true},
		{"the flush's bound reached", false, 0, nil, true},
		{"the last flush, the database unreachable", true, time.Minute, []error{down}, false},
		{"the last flush, past its bound", true, 0, nil, false},
	} {
		w := newWriteTurn(tt.final, tt.bound)
		for _, err := range tt.errs {
			w.tried(err)
		}
		if got := w.skip(); got != tt.skip {
			t.Errorf("%s: skip %v, want %v", tt.name, got, tt.skip)
		}
	}
}
