package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestCountCalls: one flush counts every tenant's calls in its hour, adds
// to what earlier flushes counted, and flushes released together over the
// same tenants (replicas) neither deadlock nor lose a call.
func TestCountCalls(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	var ids []string
	for i := range 300 {
		ids = append(ids, mustTenant(t, db, fmt.Sprintf("calls%d.example", i)).ID)
	}
	at := time.Date(2026, 11, 30, 16, 45, 0, 0, time.UTC)
	first := map[string]int64{}
	for i, id := range ids {
		first[id] = int64(i + 1)
	}
	if err := db.CountCalls(ctx, first, at); err != nil {
		t.Fatal(err)
	}
	if err := db.CountCalls(ctx, nil, at); err != nil {
		t.Fatalf("nothing to count: %v", err)
	}
	// Eight flushes at once, each over every tenant in its own order.
	const flushes = 8
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, flushes)
	for range flushes {
		wg.Go(func() {
			m := map[string]int64{}
			for _, id := range ids {
				m[id] = 2
			}
			<-start
			errs <- db.CountCalls(ctx, m, at.Add(10*time.Minute)) // the same hour
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Another hour is another row.
	if err := db.CountCalls(ctx, map[string]int64{ids[0]: 5}, at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Pool().Query(ctx, "SELECT tenant_id::text, hour, calls FROM gatehouse.tenant_calls")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]int64{}
	n := 0
	for rows.Next() {
		var id string
		var hour time.Time
		var c int64
		if err := rows.Scan(&id, &hour, &c); err != nil {
			t.Fatal(err)
		}
		got[id+" "+hour.UTC().Format(time.RFC3339)] = c
		n++
	}
	if n != len(ids)+1 {
		t.Errorf("%d rows, want %d", n, len(ids)+1)
	}
	for i, id := range ids {
		if c, want := got[id+" 2026-11-30T16:00:00Z"], int64(i+1+2*flushes); c != want {
			t.Errorf("tenant %d: %d calls, want %d", i, c, want)
		}
	}
	if c := got[ids[0]+" 2026-11-30T17:00:00Z"]; c != 5 {
		t.Errorf("next hour: %d calls, want 5", c)
	}
}
