package mcp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestChainDue: a tenant's records are chained at the next flush once
// there are chainEager of them, when they were marked to be chained now
// (another replica's, the sweep's, a failed pass's, alerts), or
// chainDelay after the first; a quiet tenant's wait otherwise.
func TestChainDue(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		name string
		d    dirtyTenant
		due  bool
	}{
		{"one record, just written", dirtyTenant{records: 1, since: now}, false},
		{"a few, just under the delay", dirtyTenant{records: chainEager - 1, since: now.Add(-chainDelay + time.Millisecond)}, false},
		{"enough records", dirtyTenant{records: chainEager, since: now}, true},
		{"one record, at the delay", dirtyTenant{records: 1, since: now.Add(-chainDelay)}, true},
		{"marked now (sweep, failure, alerts)", dirtyTenant{records: 0}, true},
	} {
		if got := chainDue(&tt.d, now); got != tt.due {
			t.Errorf("%s: due %v, want %v", tt.name, got, tt.due)
		}
	}
}

// TestMarkDirty: marks add up, and a mark to chain now sticks until the
// tenant is chained.
func TestMarkDirty(t *testing.T) {
	a := newAuditor(nil, store.AuditKey{}, slog.New(slog.NewTextHandler(io.Discard, nil)), slog.New(slog.NewTextHandler(io.Discard, nil)))
	tn := &tenancy.Tenant{ID: "t1", Key: "t1.example"}
	a.markDirty(tn, 1, false)
	a.markDirty(tn, 2, false)
	if d := a.dirty["t1"]; d.records != 3 || d.since.IsZero() || chainDue(d, time.Now()) {
		t.Fatalf("after 3 records: %+v", d)
	}
	a.markDirty(tn, 0, true)
	a.markDirty(tn, 1, false)
	if d := a.dirty["t1"]; d.records != 4 || !chainDue(d, time.Now()) {
		t.Fatalf("marked to chain now: %+v", d)
	}
	a.chain(context.Background(), nil) // nothing to chain: no database needed
}

// TestChainBrokenTenantAlone: a tenant whose chaining fails is kept for
// the next flush and chained alone from then on, the others of its group
// are chained, and once repaired it is chained and grouped again.
func TestChainBrokenTenantAlone(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	key := store.NewAuditKey([]byte("test audit key"))
	var ts []*tenancy.Tenant
	for _, k := range []string{"a.example", "b.example", "broken.example"} {
		tn, _, err := db.EnsureTenant(ctx, k, tenancy.Organization)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tn)
	}
	write := func(tn *tenancy.Tenant) {
		t.Helper()
		if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: store.Allowed, Tool: "whoami", Subject: "s"})
		}); err != nil {
			t.Fatal(err)
		}
	}
	rename := func(from, to string) {
		t.Helper()
		if _, err := db.Pool().Exec(ctx, "ALTER TABLE "+pgx.Identifier{ts[2].Schema, from}.Sanitize()+" RENAME TO "+to); err != nil {
			t.Fatal(err)
		}
	}
	verified := func(tn *tenancy.Tenant, want int) {
		t.Helper()
		if rep, err := db.VerifyAudit(ctx, tn, key); err != nil || !rep.OK() || rep.Verified != want || rep.Pending != 0 {
			t.Fatalf("%s: %+v, %v; want %d chained", tn.Key, rep, err, want)
		}
	}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := newAuditor(db, key, discard, discard)
	for _, tn := range ts {
		write(tn)
	}
	rename("audit_log", "audit_log_away")
	a.chain(ctx, ts)
	if !a.failing[ts[2].ID] || len(a.failing) != 1 || a.dirty[ts[2].ID] == nil || !chainDue(a.dirty[ts[2].ID], time.Now()) {
		t.Fatalf("after a failed pass: failing %v, dirty %v", a.failing, a.dirty)
	}
	verified(ts[0], 1)
	verified(ts[1], 1)
	// Still broken: chained alone, the others again in a group.
	write(ts[0])
	a.chain(ctx, ts)
	verified(ts[0], 2)
	if !a.failing[ts[2].ID] {
		t.Fatal("the broken tenant is no longer remembered as failing")
	}
	rename("audit_log_away", "audit_log")
	a.chain(ctx, ts)
	if len(a.failing) != 0 {
		t.Fatalf("failing after the repair: %v", a.failing)
	}
	verified(ts[2], 1)
}

// chainFixture provisions tenants named keys, each with one audit record.
func chainFixture(t *testing.T, db *store.DB, keys ...string) []*tenancy.Tenant {
	t.Helper()
	ctx := context.Background()
	var ts []*tenancy.Tenant
	for _, k := range keys {
		tn, _, err := db.EnsureTenant(ctx, k, tenancy.Organization)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: store.Allowed, Tool: "whoami", Subject: "s"})
		}); err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tn)
	}
	return ts
}

// TestChainInterrupted: a pass whose context ends (the process stopping)
// logs no failure and marks no tenant as failing: what it did not chain
// is kept, due, for the last flush, which chains it. Its context ended
// before the pass, by a deadline, and while the pass runs.
func TestChainInterrupted(t *testing.T) {
	db := storetest.MustOpenDB(t)
	key := store.NewAuditKey([]byte("test audit key"))
	cancelled := func() (context.Context, func()) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx, func() {}
	}
	expired := func() (context.Context, func()) {
		return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	}
	midway := func() (context.Context, func()) {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(time.Duration(rand.Int64N(int64(20 * time.Millisecond))))
			cancel()
		}()
		return ctx, cancel
	}
	for i, tc := range []struct {
		name    string
		tenants int
		ctx     func() (context.Context, func())
	}{
		{"cancelled before the pass", 3, cancelled},
		{"deadline passed", 3, expired},
		{"cancelled during the pass", 40, midway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var keys []string
			for j := range tc.tenants {
				keys = append(keys, fmt.Sprintf("t%d-%d.interrupted.example", i, j))
			}
			ts := chainFixture(t, db, keys...)
			var logs bytes.Buffer
			a := newAuditor(db, key, slog.New(slog.NewTextHandler(io.Discard, nil)), slog.New(slog.NewTextHandler(&logs, nil)))
			ctx, cancel := tc.ctx()
			defer cancel()
			a.chain(ctx, ts)
			if strings.Contains(logs.String(), "level=ERROR") || len(a.failing) != 0 {
				t.Fatalf("an interrupted pass reported failures: failing %v, log:\n%s", a.failing, logs.String())
			}
			left := 0
			for _, tn := range ts {
				var pending int
				if err := db.WithTenant(context.Background(), tn, func(tx pgx.Tx) error {
					return tx.QueryRow(context.Background(), "SELECT count(*) FROM audit_log WHERE chain_seq IS NULL").Scan(&pending)
				}); err != nil {
					t.Fatal(err)
				}
				if pending == 0 {
					continue
				}
				left++
				if d := a.dirty[tn.ID]; d == nil || !chainDue(d, time.Now()) {
					t.Fatalf("%s: left unchained and not due for the next flush (%+v)", tn.Key, d)
				}
			}
			if left > 0 && !strings.Contains(logs.String(), "chaining interrupted") {
				t.Fatalf("%d tenants left, nothing said:\n%s", left, logs.String())
			}
			if tc.tenants == 3 && left != 3 {
				t.Fatalf("a pass with an ended context chained %d tenants", 3-left)
			}
			a.flush(context.Background(), true) // the last flush
			for _, tn := range ts {
				if rep, err := db.VerifyAudit(context.Background(), tn, key); err != nil || !rep.OK() || rep.Verified != 1 || rep.Pending != 0 {
					t.Fatalf("%s after the last flush: %+v, %v", tn.Key, rep, err)
				}
			}
			if strings.Contains(logs.String(), "level=ERROR") {
				t.Fatalf("log:\n%s", logs.String())
			}
		})
	}
}

// TestFlushStoppingKeepsAggregates: a flush whose context has ended (the
// process stopping) still writes the refused calls' aggregated records it
// took out of the auditor, which the last flush would not see.
func TestFlushStoppingKeepsAggregates(t *testing.T) {
	db := storetest.MustOpenDB(t)
	key := store.NewAuditKey([]byte("test audit key"))
	tn := chainFixture(t, db, "aggregates.stopping.example")[0]
	a := newAuditor(db, key, slog.New(slog.NewTextHandler(io.Discard, nil)), slog.New(slog.NewTextHandler(io.Discard, nil)))
	c := &Caller{Tenant: tn, Principal: &identity.Principal{Subject: "svc", Provider: "apikey"}, ClientIP: "192.0.2.7"}
	for range 3 {
		a.rateLimited(c, "add_todo", "tenant rate")
	}
	a.networkDenied(c, "add_todo", "key not allowed from this network")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a.flush(ctx, false)
	a.flush(context.Background(), true) // the last flush: nothing of the above left to write
	var limited, denied int
	if err := db.WithTenant(context.Background(), tn, func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), `SELECT coalesce(sum(count) FILTER (WHERE decision = $1), 0), coalesce(sum(count) FILTER (WHERE decision = $2), 0) FROM audit_log`,
			store.RateLimited, store.Denied).Scan(&limited, &denied)
	}); err != nil {
		t.Fatal(err)
	}
	if limited != 3 || denied != 1 {
		t.Fatalf("stored: %d rate-limited and %d denied calls, want 3 and 1", limited, denied)
	}
	if rep, err := db.VerifyAudit(context.Background(), tn, key); err != nil || !rep.OK() || rep.Verified != 3 {
		t.Fatalf("%+v, %v", rep, err)
	}
}

// TestLastFlushBounded: a stopping process whose database hangs (here: the
// tenant's audit log held in ACCESS EXCLUSIVE mode by another session)
// is not held up by its last flush beyond stopWait, and says what it could
// not store; once the database answers again, nothing is left half
// written and the chain verifies.
func TestLastFlushBounded(t *testing.T) {
	db := storetest.MustOpenDB(t)
	key := store.NewAuditKey([]byte("test audit key"))
	ctx := context.Background()
	tns := chainFixture(t, db, "hung.stopping.example", "other.stopping.example")
	var logs lockedBuffer
	a := newAuditor(db, key, slog.New(slog.NewTextHandler(io.Discard, nil)), slog.New(slog.NewTextHandler(&logs, nil)))
	a.stopWait = 300 * time.Millisecond
	c := &Caller{Tenant: tns[0], Principal: &identity.Principal{Subject: "svc", Provider: "apikey"}, ClientIP: "192.0.2.7"}
	a.rateLimited(c, "add_todo", "tenant rate")
	a.mu.Lock()
	for _, tn := range tns {
		a.markDirty(tn, 0, true)
	}
	a.mu.Unlock()

	holder, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	if _, err := holder.Exec(ctx, "LOCK TABLE "+pgx.Identifier{tns[0].Schema, "audit_log"}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	stop, cancel := context.WithCancel(ctx)
	cancel()
	done := make(chan struct{})
	go func() { a.run(stop, time.Hour); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the last flush did not end while the database hung")
	}
	out := logs.String()
	for _, want := range []string{"records lost: they could not be stored", "the last flush ran out of time"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	a.flush(ctx, true) // the next start's sweep, in effect
	for _, tn := range tns {
		if rep, err := db.VerifyAudit(ctx, tn, key); err != nil || !rep.OK() {
			t.Errorf("%s: %+v, %v", tn.Key, rep, err)
		}
	}
}

// TestChainPassBesideLockedAuditLog: while another session holds one
// tenant's audit log locked (as a migration's ALTER TABLE or VACUUM FULL
// does), a chain pass over it and two other tenants still ends, with the
// others chained; the locked tenant is kept, chained alone at the next
// passes (each ending too), logged once as locked, and chained once the
// lock is gone. Without a bound on the pass's lock waits it waited for as
// long as the lock was held, and every other tenant's chaining with it.
func TestChainPassBesideLockedAuditLog(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	key := store.NewAuditKey([]byte("test audit key"))
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	a := newAuditor(db, key, slog.New(slog.NewTextHandler(io.Discard, nil)), log)
	ts := chainFixture(t, db, "a.example", "b.example", "locked.example")
	release := storetest.LockTable(t, db, ts[2].Schema, "audit_log")
	pass := func() {
		t.Helper()
		done := make(chan struct{})
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		go func() { a.chain(pctx, ts); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the chain pass waits for the locked audit log")
		}
		if pctx.Err() != nil {
			t.Fatal("the chain pass ran until its context ended")
		}
	}
	verified := func(tn *tenancy.Tenant, want int) {
		t.Helper()
		if rep, err := db.VerifyAudit(ctx, tn, key); err != nil || !rep.OK() || rep.Verified != want || rep.Pending != 0 {
			t.Fatalf("%s: %+v, %v; want %d chained", tn.Key, rep, err, want)
		}
	}
	for range 3 {
		pass()
		verified(ts[0], 1)
		verified(ts[1], 1)
		a.mu.Lock()
		failing, dirty := a.failing[ts[2].ID], a.dirty[ts[2].ID] != nil
		a.mu.Unlock()
		if !failing || !dirty {
			t.Fatalf("the locked tenant is not kept for the next pass: failing %v, dirty %v", failing, dirty)
		}
	}
	if n := strings.Count(logs.String(), `msg="audit: the tenant's audit log is locked`); n != 1 {
		t.Errorf("the lock was logged %d times over three passes, want once:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a lock logged as an error:\n%s", logs.String())
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	pass()
	verified(ts[2], 1)
	if a.failing[ts[2].ID] || a.locked[ts[2].ID] || !strings.Contains(logs.String(), "free again") {
		t.Fatalf("after the lock: failing %v, locked %v; log:\n%s", a.failing, a.locked, logs.String())
	}
}
