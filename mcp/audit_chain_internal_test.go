package mcp

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store"
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
