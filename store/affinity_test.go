package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func backendOf(t *testing.T, ctx context.Context, db *store.DB, tn *tenancy.Tenant) int {
	t.Helper()
	var pid int
	if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error { return tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid) }); err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestTenantAffinity: with lanes, each tenant's calls (one at a time)
// land on the same backend, and the tenants spread over the lanes; with
// one lane they do not stay apart (the pool's most recently used
// connection serves everyone).
func TestTenantAffinity(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, storetest.ConnString(t), &store.Options{TenantConns: 8, AffinityConns: -1, TenantLanes: 8, ConnMaxUses: -1, ConnMaxTenants: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var tenants []*tenancy.Tenant
	for i := range 12 {
		tenants = append(tenants, mustTenant(t, db, fmt.Sprintf("affinity%d.example", i)))
	}
	home := map[string]int{}
	for round := range 3 {
		for _, tn := range tenants {
			pid := backendOf(t, ctx, db, tn)
			if round == 0 {
				home[tn.ID] = pid
			} else if pid != home[tn.ID] {
				t.Errorf("round %d: tenant %s on backend %d, before on %d", round, tn.Key, pid, home[tn.ID])
			}
		}
	}
	backends := map[int]bool{}
	for _, pid := range home {
		backends[pid] = true
	}
	if len(backends) < 3 {
		t.Errorf("12 tenants on %d backends of 8 lanes: want them spread", len(backends))
	}
}

// TestAffinityNeverWaitsForABusyLane: a tenant whose lanes are all busy
// (held open by another tenant's transactions) is served at once by a
// free connection of another lane; only when every connection is held
// does a call wait, and then it gets the first connection returned.
func TestAffinityNeverWaitsForABusyLane(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, storetest.ConnString(t), &store.Options{TenantConns: 4, AffinityConns: -1, TenantLanes: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a := mustTenant(t, db, "busy.example")
	var others []*tenancy.Tenant
	for i := range 8 {
		others = append(others, mustTenant(t, db, fmt.Sprintf("other%d.example", i)))
	}
	// A holds three of the four connections (its first lanes; every other
	// tenant shares some of them).
	release := make(chan struct{})
	var held sync.WaitGroup
	var ready sync.WaitGroup
	hold := func(tn *tenancy.Tenant) {
		ready.Add(1)
		held.Go(func() {
			err := db.WithTenant(ctx, tn, func(pgx.Tx) error { ready.Done(); <-release; return nil })
			if err != nil {
				t.Error(err)
			}
		})
	}
	for range 3 {
		hold(a)
	}
	ready.Wait()
	// Every other tenant, one at a time, is served by the free connection
	// while A's three stay held: none waits for A. (A call that waited
	// would never finish: the deadline only ends the test.)
	for _, o := range others {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := db.WithTenant(cctx, o, func(pgx.Tx) error { return nil })
		cancel()
		if err != nil {
			t.Fatalf("tenant %s while A holds 3 of 4 connections: %v", o.Key, err)
		}
	}
	// Now all four are held: the next call waits, and is served by the
	// first connection returned.
	hold(a)
	ready.Wait()
	served := make(chan error, 1)
	go func() { served <- db.WithTenant(ctx, others[0], func(pgx.Tx) error { return nil }) }()
	select {
	case err := <-served:
		close(release)
		held.Wait()
		t.Fatalf("served with every connection held: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	// A waiter whose context ends leaves the queue without a connection.
	cctx, cancel := context.WithCancel(ctx)
	gone := make(chan error, 1)
	go func() { gone <- db.WithTenant(cctx, others[1], func(pgx.Tx) error { return nil }) }()
	cancel()
	if err := <-gone; err == nil {
		t.Error("a cancelled waiter was served")
	}
	close(release)
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	held.Wait()
	// Every connection is free again: four held at once succeed.
	release = make(chan struct{})
	for _, o := range others[:4] {
		hold(o)
	}
	ready.Wait()
	close(release)
	held.Wait()
}

// TestConnMaxTenants: a tenant-pool connection is closed once it has
// served ConnMaxTenants different tenants, however many transactions that
// took; with the bound off it is kept.
func TestConnMaxTenants(t *testing.T) {
	ctx := context.Background()
	url := storetest.ConnString(t)
	run := func(maxTenants int, keys []string) []int {
		t.Helper()
		db, err := store.Open(ctx, url, &store.Options{TenantConns: 1, AffinityConns: -1, ConnMaxUses: -1, ConnMaxTenants: maxTenants})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var pids []int
		for _, k := range keys {
			pids = append(pids, backendOf(t, ctx, db, mustTenant(t, db, k)))
		}
		return pids
	}
	keys := []string{"a.example", "a.example", "b.example", "a.example", "c.example", "d.example", "d.example", "a.example"}
	got := run(3, keys)
	// a a b a c: three tenants, closed on c's release; d d a: the next backend.
	for i := 1; i < 5; i++ {
		if got[i] != got[0] {
			t.Errorf("call %d on backend %d, want %d (fewer than 3 tenants yet): %v", i, got[i], got[0], got)
		}
	}
	if got[5] == got[0] || got[6] != got[5] || got[7] != got[5] {
		t.Errorf("want a new backend after the third tenant, kept for the next ones: %v", got)
	}
	never := run(-1, keys)
	for _, p := range never {
		if p != never[0] {
			t.Errorf("ConnMaxTenants -1 replaced a backend: %v", never)
		}
	}
}
