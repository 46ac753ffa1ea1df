package mcp

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
