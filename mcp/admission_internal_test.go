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
	// Each admitted call reports its tenant and its release together, so
	// that the test frees the slots of the calls it saw admitted, in that
	// order. (Two channels, one for each, let the release of a call
	// admitted later arrive first, and the test then freed A's slot where
	// it meant B's: admitted [B A A A], seen once in a thousand runs
	// under load.)
	type admittedCall struct {
		tenant  string
		release func()
	}
	admitted := make(chan admittedCall, 20)
	var wg sync.WaitGroup
	enqueue := func(tenant, subject string) {
		before := a.waiting()
		wg.Go(func() {
			rel, r := a.acquire(ctx, tenant, subject)
			if r != nil {
				t.Errorf("%s refused: %+v", tenant, r)
				return
			}
			admitted <- admittedCall{tenant, rel}
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
	// Free one slot at a time and see who gets it: first the two A calls
	// that filled the server, then the calls admitted since, oldest first.
	var calls []admittedCall
	for i := range 4 {
		if i < 2 {
			running[i]()
		} else {
			calls[i-2].release()
		}
		calls = append(calls, <-admitted)
	}
	var got []string
	for _, c := range calls {
		got = append(got, c.tenant)
	}
	want := []string{"B", "A", "B", "A"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("admitted %v, want %v (round-robin across tenants)", got, want)
		}
	}
	for _, c := range calls[2:] {
		c.release()
	}
	for range 8 {
		(<-admitted).release()
	}
	wg.Wait()
	if a.inFlight() != 0 || len(a.lanes) != 0 || len(a.principals) != 0 {
		t.Errorf("after every release: %d in flight, %d lanes, %d principals", a.inFlight(), len(a.lanes), len(a.principals))
	}
}

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
