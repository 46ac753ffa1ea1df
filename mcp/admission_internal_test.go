package mcp

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestAdmissionRoundRobin: with the server full of tenant A's calls and
// ten more of A's waiting, a call of tenant B that arrives last is admitted
// at the next free slot, before A's queue; then A's, then B's again.
func TestAdmissionRoundRobin(t *testing.T) {
	a := newAdmitter(Admission{Total: 2, Tenant: 2, Principal: 2, TenantQueue: 100, Wait: 10 * time.Second})
	ctx := context.Background()
	var running []func()
	for range 2 {
		rel, r := a.acquire(ctx, "A", "a")
		if r != nil {
			t.Fatal(r)
		}
		running = append(running, rel)
	}
	order := make(chan string, 20)
	var wg sync.WaitGroup
	enqueue := func(tenant, subject string) {
		before := a.waiting()
		wg.Go(func() {
			rel, r := a.acquire(ctx, tenant, subject)
			if r != nil {
				t.Errorf("%s refused: %+v", tenant, r)
				return
			}
			order <- tenant
			running2 <- rel
		})
		for a.waiting() == before { // queued in this order
			time.Sleep(time.Millisecond)
		}
	}
	for range 10 {
		enqueue("A", "a2")
	}
	enqueue("B", "b")
	enqueue("B", "b")
	// Free one slot at a time and see who gets it.
	var got []string
	for i := range 4 {
		if i < 2 {
			running[i]()
		} else {
			(<-running2)()
		}
		got = append(got, <-order)
	}
	want := []string{"B", "A", "B", "A"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("admitted %v, want %v (round-robin across tenants)", got, want)
		}
	}
	for range 8 {
		(<-running2)()
	}
	wg.Wait()
	for len(running2) > 0 {
		(<-running2)()
	}
	if a.inFlight() != 0 || len(a.lanes) != 0 || len(a.principals) != 0 {
		t.Errorf("after every release: %d in flight, %d lanes, %d principals", a.inFlight(), len(a.lanes), len(a.principals))
	}
}

var running2 = make(chan func(), 20)

// TestAdmissionRefusals: a call that cannot wait is refused naming the
// bound: the principal's, the tenant's (its queue is full), the server's
// (the wait ran out); other tenants' calls are unaffected.
func TestAdmissionRefusals(t *testing.T) {
	ctx := context.Background()
	a := newAdmitter(Admission{Total: 3, Tenant: 2, Principal: 1, TenantQueue: 1, Wait: 50 * time.Millisecond})
	relA, _ := a.acquire(ctx, "A", "a")
	if _, r := a.acquire(ctx, "A", "a"); r == nil || r.scope != "principal" {
		t.Errorf("second call of one principal: %+v, want principal", r)
	}
	relA2, _ := a.acquire(ctx, "A", "a2")
	if _, r := a.acquire(ctx, "A", "a3"); r == nil || r.scope != "tenant" {
		t.Errorf("third call of tenant A: %+v, want tenant", r)
	}
	relB, r := a.acquire(ctx, "B", "b")
	if r != nil {
		t.Fatalf("tenant B refused while A is at its bound: %+v", r)
	}
	if _, r := a.acquire(ctx, "C", "c"); r == nil || r.scope != "server" {
		t.Errorf("a call with the server full: %+v, want server", r)
	}
	relA()
	relA2()
	relB()
	if a.inFlight() != 0 || len(a.lanes) != 0 {
		t.Errorf("after every release: %d in flight, %d lanes", a.inFlight(), len(a.lanes))
	}
}
