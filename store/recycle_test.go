package store_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestConnMaxUses: a tenant-pool connection is closed after its
// ConnMaxUses-th transaction and the next one gets a new backend; a
// negative bound never recycles.
func TestConnMaxUses(t *testing.T) {
	ctx := context.Background()
	url := storetest.ConnString(t)
	pids := func(maxUses, n int) []int {
		t.Helper()
		db, err := store.Open(ctx, url, &store.Options{TenantConns: 1, AffinityConns: -1, ConnMaxUses: maxUses})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		tn := mustTenant(t, db, "acme.com")
		var out []int
		for range n {
			var pid int
			if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error { return tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid) }); err != nil {
				t.Fatal(err)
			}
			out = append(out, pid)
		}
		return out
	}
	got := pids(3, 7)
	for i := range got {
		if same := got[i] == got[i/3*3]; !same {
			t.Errorf("use %d on backend %d, want the backend of use %d (%d): %v", i, got[i], i/3*3, got[i/3*3], got)
		}
	}
	if got[0] == got[3] || got[3] == got[6] {
		t.Errorf("backends not replaced after 3 uses: %v", got)
	}
	never := pids(-1, 5)
	for _, p := range never {
		if p != never[0] {
			t.Errorf("ConnMaxUses -1 replaced a backend: %v", never)
		}
	}
}

// TestControlConnMaxUses: a control-pool connection (which writes and
// chains audit records in every active tenant's schema) is closed after
// ControlConnMaxUses uses; a negative bound never recycles.
func TestControlConnMaxUses(t *testing.T) {
	ctx := context.Background()
	url := storetest.ConnString(t)
	pids := func(maxUses, n int) []int {
		t.Helper()
		db, err := store.Open(ctx, url, &store.Options{ControlConns: 1, ControlConnMaxUses: maxUses})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var out []int
		for range n {
			var pid int
			if err := db.Pool().QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			out = append(out, pid)
		}
		return out
	}
	got := pids(3, 7)
	if got[0] == got[3] || got[3] == got[6] || got[1] != got[0] || got[4] != got[3] {
		t.Errorf("want a new backend every 3 uses: %v", got)
	}
	never := pids(-1, 5)
	for _, p := range never {
		if p != never[0] {
			t.Errorf("ControlConnMaxUses -1 replaced a backend: %v", never)
		}
	}
}
