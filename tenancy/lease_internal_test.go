package tenancy

import (
	"context"
	"sync"
	"testing"
	"time"
)

// grantAll is a LeaseStore that grants whatever is asked and records it.
type grantAll struct {
	mu    sync.Mutex
	wants []int
}

func (g *grantAll) GCRA(context.Context, []string, []time.Duration, []int) (GCRAResult, error) {
	return GCRAResult{Allowed: true}, nil
}

func (g *grantAll) GCRALease(_ context.Context, keys []string, _ []time.Duration, _, wants []int) (LeaseResult, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.wants = append(g.wants, wants[0])
	r := LeaseResult{}
	for range keys {
		r.Granted, r.RetryAfter, r.Remaining = append(r.Granted, wants[0]), append(r.RetryAfter, 0), append(r.Remaining, 1000)
	}
	return r, nil
}

func (g *grantAll) GCRAReturn(context.Context, []string, []time.Duration, []int) error { return nil }

// TestLeaseSizes: a key in use leases 1, 2, 4, … requests up to the most
// one lease may hold (the larger of 50 ms of its rate and an eighth of its
// burst, at most a quarter of its burst); an occasional call leases one.
func TestLeaseSizes(t *testing.T) {
	for _, c := range []struct {
		rate Rate
		max  int
	}{
		{Rate{PerMinute: 600, Burst: 100}, 12},     // the default principal limit: an eighth of the burst
		{Rate{PerMinute: 1200, Burst: 200}, 25},    // the default tenant limit
		{Rate{PerMinute: 6000, Burst: 40}, 5},      // 100/s: 50 ms of its rate
		{Rate{PerMinute: 6, Burst: 1}, 1},          // never more than a quarter of the burst, at least 1
		{Rate{PerMinute: 60000000, Burst: 40}, 10}, // a quarter of the burst
	} {
		if got := leaseSize(c.rate); got != c.max {
			t.Errorf("leaseSize(%v) = %d, want %d", c.rate, got, c.max)
		}
	}

	store := &grantAll{}
	l := NewLimiter(store, Limits{Principal: Rate{PerMinute: 600, Burst: 100}})
	defer l.Close()
	tn := &Tenant{ID: "t", RateLimit: &Rate{}} // no tenant limit: one key
	for range 60 {
		if d, err := l.AllowRequest(context.Background(), tn, "s"); err != nil || !d.Allowed {
			t.Fatal(d, err)
		}
	}
	want := []int{1, 2, 4, 8, 12, 12, 12, 12}
	store.mu.Lock()
	got := append([]int(nil), store.wants...)
	store.mu.Unlock()
	if len(got) < len(want) {
		t.Fatalf("leases asked for %v, want %v…", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("leases asked for %v, want %v…", got, want)
		}
	}

	// Idle past its lease and leaseForget: the next call leases one again.
	time.Sleep(LeaseLife + leaseForget + 3*leaseReturnEvery)
	if _, err := l.AllowRequest(context.Background(), tn, "s"); err != nil {
		t.Fatal(err)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if last := store.wants[len(store.wants)-1]; last != 1 {
		t.Errorf("an occasional call leased %d, want 1", last)
	}
}

// budgetStore is a LeaseStore holding one key's burst: it grants what is
// left, up to what is asked, after delay (a slow database), and takes
// back what is returned.
type budgetStore struct {
	grantAll
	delay time.Duration
	left  int
}

func (b *budgetStore) GCRALease(_ context.Context, keys []string, _ []time.Duration, _, wants []int) (LeaseResult, error) {
	time.Sleep(b.delay)
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(wants[0], b.left)
	b.left -= n
	return LeaseResult{Granted: []int{n}, RetryAfter: []time.Duration{10 * time.Second}, Remaining: []int{b.left}}, nil
}

func (b *budgetStore) GCRAReturn(_ context.Context, _ []string, _ []time.Duration, counts []int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left += counts[0]
	return nil
}

// TestSlowLeaseRenewal: requests released together against a key with a
// burst of exactly their number are all admitted, however long the
// store's answer takes (here twice a lease's life, and then a tenth of
// it): a lease lives LeaseLife from its grant, not from the renewal's
// start. (Counted from the start, the slow grant arrived expired, the
// requests renewed in vain against a spent burst and all but the first
// few were refused: a limit of 30 admitted 3 of 90 calls in CI.)
func TestSlowLeaseRenewal(t *testing.T) {
	for _, delay := range []time.Duration{2 * LeaseLife, LeaseLife / 10} {
		const n = 30
		store := &budgetStore{delay: delay, left: n}
		l := NewLimiter(store, Limits{})
		tn := &Tenant{ID: "t", RateLimit: &Rate{PerMinute: 6, Burst: n}}
		var mu sync.Mutex
		got := 0
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				<-start
				d, err := l.AllowRequest(context.Background(), tn, "s")
				if err != nil {
					t.Error(err)
				}
				if d.Allowed {
					mu.Lock()
					got++
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		l.Close()
		if got != n {
			t.Errorf("renewals taking %v: %d of %d requests admitted within a burst of %d", delay, got, n, n)
		}
		// One more is over the limit: refused.
		l = NewLimiter(store, Limits{})
		if d, err := l.AllowRequest(context.Background(), tn, "s"); err != nil || d.Allowed {
			t.Errorf("renewals taking %v: a request past the burst: %+v, %v; want refused", delay, d, err)
		}
		l.Close()
	}
}
