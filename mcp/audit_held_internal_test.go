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

// heldFixture is an auditor (its operational log in logs) over a fresh
// database with a tenant for each of keys.
func heldFixture(t *testing.T, keys ...string) (*store.DB, store.AuditKey, []*tenancy.Tenant, *auditor, *lockedBuffer) {
	t.Helper()
	db := storetest.MustOpenDB(t)
	key := store.NewAuditKey([]byte("test audit key"))
	tns := chainFixture(t, db, keys...)
	logs := &lockedBuffer{}
	a := newAuditor(db, key, slog.New(slog.NewTextHandler(io.Discard, nil)), slog.New(slog.NewTextHandler(logs, nil)))
	return db, key, tns, a, logs
}

// TestKeptRecords: records that cannot be stored when due (here: the
// tenant's audit log locked by another session) are kept, not dropped:
// the refusals that follow join them without waiting for the lock again,
// they are tried again only when their turn comes (heldRetry), and once
// the audit log takes them every one is stored, counted and chained. Only
// the last flush of a stopping process, or a record kept for heldFor,
// loses them, and says so. Before, each flush's aggregates and each call's
// record that could not be stored were lost at once.
func TestKeptRecords(t *testing.T) {
	db, key, tns, a, logs := heldFixture(t, "kept.example", "free.example")
	ctx := context.Background()
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
	if _, recs := kept(tns[0]); recs != 0 || !strings.Contains(logs.String(), "records lost") || !strings.Contains(logs.String(), "kept for 1h0m0s") {
		t.Errorf("a record kept for %v: %d still kept; log:\n%s", heldFor, recs, logs.String())
	}

	// The last flush of a stopping process tries what is kept once, and
	// says what it loses.
	logs.Reset()
	a.hold(tns[0], &store.AuditRecord{RequestID: "kept-call-3", Decision: store.Failed, Subject: "svc", Reason: "unavailable"})
	a.rateLimited(caller(tns[0]), "add_todo", "tenant rate")
	a.stopping.Store(true)
	a.flush(ctx, true)
	if aggs, recs := kept(tns[0]); aggs+recs != 0 || !strings.Contains(logs.String(), "records lost") || !strings.Contains(logs.String(), "the process is stopping") {
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

// TestKeptRecordsDecidedByTheirWrite: whether a record was stored is its
// write's outcome, never an id it carries from an attempt that was rolled
// back: a call's record that comes with one (its call's transaction
// failed after the INSERT), and an aggregate whose INSERT returned its id
// before the COMMIT was cut short (a deferred trigger standing for
// anything between the two), are kept, and stored later. Before, both
// were taken for stored and lost without a word.
func TestKeptRecordsDecidedByTheirWrite(t *testing.T) {
	db, _, tns, a, logs := heldFixture(t, "stale-id.example", "slow-commit.example")
	ctx := context.Background()
	count := func(tn *tenancy.Tenant, where string) int {
		t.Helper()
		var n int
		if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE "+where).Scan(&n)
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}

	release := storetest.LockTable(t, db, tns[0].Schema, "audit_log")
	a.hold(tns[0], &store.AuditRecord{ID: 4242, RequestID: "stale-1", Decision: store.Failed, Subject: "svc", Reason: "unavailable"})
	a.flush(ctx, true) // tried beside the lock
	if err := release(); err != nil {
		t.Fatal(err)
	}
	a.flush(ctx, true)
	if n := count(tns[0], "request_id = 'stale-1'"); n != 1 {
		t.Errorf("a call's record with an earlier attempt's id: %d stored, want 1", n)
	}

	s := pgx.Identifier{tns[1].Schema}.Sanitize()
	for _, q := range []string{
		`CREATE FUNCTION ` + s + `.slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$`,
		`CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON ` + s + `.audit_log DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ` + s + `.slow()`,
	} {
		if _, err := db.Pool().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	a.rateLimited(&Caller{Tenant: tns[1], Principal: &identity.Principal{Subject: "svc", Provider: "apikey"}}, "add_todo", "tenant rate")
	a.flush(ctx, false) // its COMMIT cut short at heldWait
	if _, err := db.Pool().Exec(ctx, `DROP TRIGGER slow ON `+s+`.audit_log`); err != nil {
		t.Fatal(err)
	}
	a.flush(ctx, true)
	if n := count(tns[1], "decision = 'RATE_LIMITED'"); n != 1 {
		t.Errorf("an aggregate whose COMMIT was cut short: %d stored, want 1", n)
	}
	if strings.Contains(logs.String(), "records lost") {
		t.Errorf("log:\n%s", logs.String())
	}
}

// TestKeptRecordsWithinTheFlushsBound: retries of kept records beside
// locked audit logs cost a flush at most half its bound, the failed
// authentications are written whatever the locks, a database found
// unreachable costs a single failed write, and the last flush of a
// stopping process gives one locked audit log a second, not the other
// tenants' records.
func TestKeptRecordsWithinTheFlushsBound(t *testing.T) {
	db, key, tns, a, logs := heldFixture(t, "lock-1.example", "lock-2.example", "lock-3.example", "lock-4.example")
	ctx := context.Background()
	a.stopWait = 4 * heldWait
	caller := func(tn *tenancy.Tenant) *Caller {
		return &Caller{Tenant: tn, Principal: &identity.Principal{Subject: "svc", Provider: "apikey"}}
	}
	for _, tn := range tns { // warm the lanes' statements: each try then waits for its lock
		a.rateLimited(caller(tn), "warm", "warm")
	}
	a.flush(ctx, true)
	// The locks' holders on connections of their own, not the auditor's.
	holders, err := store.Open(ctx, db.Pool().Config().ConnString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(holders.Close)
	releases := map[string]func() error{}
	for _, tn := range tns {
		releases[tn.ID] = storetest.LockTable(t, holders, tn.Schema, "audit_log")
		a.hold(tn, &store.AuditRecord{RequestID: "r-" + tn.Key, Decision: store.Failed, Subject: "svc", Reason: "unavailable"})
	}
	a.authFailed("192.0.2.99", "invalid key", "test", "")
	began := time.Now()
	a.flush(ctx, true) // every kept record due
	if took := time.Since(began); took >= a.stopWait {
		t.Errorf("a flush beside %d locked audit logs took %v, its whole bound (%v)", len(tns), took, a.stopWait)
	}
	if strings.Contains(logs.String(), "writing failed authentications failed") {
		t.Errorf("the failed authentications were not written:\n%s", logs.String())
	}
	var authFailures int
	if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM gatehouse.auth_failures WHERE client_ip = '192.0.2.99'").Scan(&authFailures); err != nil {
		t.Fatal(err)
	}
	if authFailures != 1 {
		t.Errorf("%d failed authentications stored, want 1", authFailures)
	}
	a.mu.Lock()
	kept := len(a.held)
	a.mu.Unlock()
	if kept != len(tns) {
		t.Errorf("%d tenants' records kept after the flush, want %d (tried or not)", kept, len(tns))
	}

	// The last flush, one audit log still locked, new refusals for every
	// tenant: the others' records are all stored, the locked one's lost
	// (and said so).
	for _, tn := range tns[1:] {
		if err := releases[tn.ID](); err != nil {
			t.Fatal(err)
		}
	}
	for _, tn := range tns {
		a.rateLimited(caller(tn), "add_todo", "tenant rate")
	}
	logs.Reset()
	a.stopping.Store(true)
	a.flush(ctx, true)
	for _, tn := range tns[1:] {
		var n int
		if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE request_id = $1 OR (decision = 'RATE_LIMITED' AND tool = 'add_todo')", "r-"+tn.Key).Scan(&n)
		}); err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Errorf("%s, free: %d of its 2 records stored by the last flush", tn.Key, n)
		}
	}
	if out := logs.String(); strings.Count(out, "records lost") != 1 || !strings.Contains(out, tns[0].Key) {
		t.Errorf("the last flush's losses, want the locked tenant's only:\n%s", out)
	}
	a.stopping.Store(false)

	// The database unreachable (here: the auditor's pool closed): the
	// first tenant's write finds it so, the others are not tried.
	down, err := store.Open(ctx, db.Pool().Config().ConnString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	down.Close()
	logs.Reset()
	b := newAuditor(down, key, slog.New(slog.NewTextHandler(io.Discard, nil)), slog.New(slog.NewTextHandler(logs, nil)))
	for _, tn := range tns {
		b.rateLimited(&Caller{Tenant: tn, Principal: &identity.Principal{Subject: "svc", Provider: "apikey"}}, "add_todo", "tenant rate")
	}
	b.flush(ctx, false)
	out := logs.String()
	tried, notTried := 0, 0
	for line := range strings.Lines(out) {
		switch {
		case !strings.Contains(line, "kept, and tried again shortly"):
		case strings.Contains(line, "not tried"):
			notTried++
		case strings.Contains(line, "closed pool"):
			tried++
		}
	}
	if tried != 1 || notTried != len(tns)-1 {
		t.Errorf("with the database unreachable: %d tenants tried, %d not, want 1 and %d:\n%s", tried, notTried, len(tns)-1, out)
	}
	b.mu.Lock()
	kept = len(b.held)
	b.mu.Unlock()
	if kept != len(tns) {
		t.Errorf("%d tenants' refusals kept with the database unreachable, want %d", kept, len(tns))
	}
}

// TestKeptRecordsBound: at most maxHeld records are kept at once, calls'
// records and aggregates together; the newest beyond it are refused (and
// said lost), and once the kept ones are stored the room is back.
func TestKeptRecordsBound(t *testing.T) {
	db, _, tns, a, logs := heldFixture(t, "bound.example", "bound-locked.example")
	ctx := context.Background()
	for i := range maxHeld {
		if !a.hold(tns[0], &store.AuditRecord{RequestID: fmt.Sprintf("bound-%d", i), Decision: store.Failed, Subject: "svc", Reason: "unavailable"}) {
			t.Fatalf("record %d refused, under the bound", i)
		}
	}
	if a.hold(tns[0], &store.AuditRecord{RequestID: "bound-over", Decision: store.Failed, Subject: "svc", Reason: "unavailable"}) {
		t.Error("a call's record kept beyond the bound")
	}
	a.rateLimited(&Caller{Tenant: tns[0], Principal: &identity.Principal{Subject: "svc", Provider: "apikey"}}, "add_todo", "tenant rate")
	a.mu.Lock()
	limited := a.limited
	a.limited = map[limitedKey]*limitedAgg{}
	a.mu.Unlock()
	if rest := a.mergeHeld(limited, time.Now()); len(rest) != 0 || !strings.Contains(logs.String(), "too many records kept") {
		t.Errorf("an aggregate beyond the bound: %d left to write; log:\n%s", len(rest), logs.String())
	}
	// Another tenant's refusal, its audit log locked, the bound full: its
	// write fails, and it is refused (said lost), nothing else.
	logs.Reset()
	release := storetest.LockTable(t, db, tns[1].Schema, "audit_log")
	a.rateLimited(&Caller{Tenant: tns[1], Principal: &identity.Principal{Subject: "svc", Provider: "apikey"}}, "add_todo", "tenant rate")
	a.flush(ctx, false)
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); !strings.Contains(out, "too many records kept") || !strings.Contains(out, tns[1].Key) {
		t.Errorf("a refusal beyond the bound, its audit log locked; log:\n%s", out)
	}
	a.mu.Lock()
	n := a.heldN
	_, other := a.held[tns[1].ID]
	a.mu.Unlock()
	if n != maxHeld || other {
		t.Fatalf("%d kept (want %d), the other tenant kept: %v", n, maxHeld, other)
	}
	a.flush(ctx, true)
	a.mu.Lock()
	n, kept := a.heldN, len(a.held)
	a.mu.Unlock()
	if n != 0 || kept != 0 {
		t.Errorf("after they were stored: %d counted, %d tenants kept", n, kept)
	}
	var stored int
	if err := db.WithTenant(ctx, tns[0], func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE request_id LIKE 'bound-%'").Scan(&stored)
	}); err != nil {
		t.Fatal(err)
	}
	if stored != maxHeld {
		t.Errorf("%d stored, want %d", stored, maxHeld)
	}
	if !a.hold(tns[0], &store.AuditRecord{RequestID: "bound-after", Decision: store.Failed, Subject: "svc", Reason: "unavailable"}) {
		t.Error("no room after the kept records were stored")
	}
}
