package tenancy

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// grantAll is a LeaseStore that grants whatever is asked and records it,
// answering that the key still admits left more (1,000 when 0).
type grantAll struct {
	mu    sync.Mutex
	wants []int
	left  int
}

func (g *grantAll) GCRA(context.Context, []string, []time.Duration, []int) (GCRAResult, error) {
	return GCRAResult{Allowed: true}, nil
}

func (g *grantAll) GCRALease(_ context.Context, keys []string, _ []time.Duration, _, wants []int) (LeaseResult, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.wants = append(g.wants, wants[0])
	left := g.left
	if left == 0 {
		left = 1000
	}
	r := LeaseResult{}
	for range keys {
		r.Granted, r.RetryAfter, r.Remaining = append(r.Granted, wants[0]), append(r.RetryAfter, 0), append(r.Remaining, left)
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

	// Under half the burst left: short leases only (a long one could be
	// taken for an occasional key's if the machine stalled a call).
	store := &grantAll{left: 40}
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

	// Idle past its lease and leaseForget, and the sweep after that
	// (keys are forgotten only by the sweeps, leaseSweepEvery apart): the
	// next call leases one again.
	time.Sleep(LeaseLife + leaseForget + leaseSweepEvery + 3*leaseReturnEvery)
	if _, err := l.AllowRequest(context.Background(), tn, "s"); err != nil {
		t.Fatal(err)
	}
	store.mu.Lock()
	if last := store.wants[len(store.wants)-1]; last != 1 {
		t.Errorf("an occasional call leased %d, want 1", last)
	}
	store.mu.Unlock()

	// With plenty left its first leases are long ones, yet a busy key's
	// leases still grow to leaseSize, past idleLeaseMax.
	plenty := &grantAll{}
	lp := NewLimiter(plenty, Limits{Principal: Rate{PerMinute: 600, Burst: 100}})
	defer lp.Close()
	for range 60 {
		if d, err := lp.AllowRequest(context.Background(), tn, "s"); err != nil || !d.Allowed {
			t.Fatal(d, err)
		}
	}
	plenty.mu.Lock()
	defer plenty.mu.Unlock()
	if most := slices.Max(plenty.wants); most != 12 {
		t.Errorf("a busy key with plenty left leased at most %d (%v), want 12", most, plenty.wants)
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

// countingStore is grantAll that also counts its lease statements.
type countingStore struct {
	grantAll
	statements int
}

func (c *countingStore) GCRALease(ctx context.Context, keys []string, ivs []time.Duration, bursts, wants []int) (LeaseResult, error) {
	r, err := c.grantAll.GCRALease(ctx, keys, ivs, bursts, wants)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.statements++
	return r, err
}

// TestIdleLeases: a key called now and then (each call longer than
// LeaseLife after the last) while it has at least half its burst left
// takes most calls from long leases (IdleLeaseLife), grown 1, 2, 4 up to
// idleLeaseMax and no further; the same calls of a key with less than half
// its burst left renew a short lease every time, as before.
func TestIdleLeases(t *testing.T) {
	rate := Rate{PerMinute: 600, Burst: 100} // the default principal limit
	if got := idleLeaseMax(rate); got != 6 {
		t.Fatalf("idleLeaseMax(%v) = %d, want 6", rate, got)
	}
	for _, c := range []struct {
		name       string
		left       int
		statements int // for calls
		wants      []int
	}{
		{"plenty left", 1000, 5, []int{1, 2, 4, 6, 6}},
		{"half the burst left", 50, 5, []int{1, 2, 4, 6, 6}},
		{"under half left", 49, 19, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			const calls = 19 // 1 + 2 + 4 + 6 + 6
			store := &countingStore{grantAll: grantAll{left: c.left}}
			l := NewLimiter(store, Limits{Principal: rate})
			defer l.Close()
			tn := &Tenant{ID: "t", RateLimit: &Rate{}} // one key: the principal's
			for range calls {
				if d, err := l.AllowRequest(context.Background(), tn, "s"); err != nil || !d.Allowed {
					t.Fatal(d, err)
				}
				time.Sleep(LeaseLife + 20*time.Millisecond)
			}
			store.mu.Lock()
			defer store.mu.Unlock()
			if store.statements != c.statements {
				t.Errorf("%d calls spaced %v renewed a lease %d times, want %d (leases asked for %v)", calls, LeaseLife+20*time.Millisecond, store.statements, c.statements, store.wants)
			}
			if c.wants != nil && !slices.Equal(store.wants, c.wants) {
				t.Errorf("leases asked for %v, want %v", store.wants, c.wants)
			}
		})
	}
}

// TestIdleLeaseBound: what a long lease lets a replica admit after another
// replica spent the key's whole allowance is at most idleLeaseMax, and
// nothing beyond what was charged: two limiters (replicas) share one
// key's burst of 32; one holds a long lease from an occasional call, the
// other spends the rest; the first then admits at most its lease.
func TestIdleLeaseBound(t *testing.T) {
	const burst = 32
	rate := Rate{PerMinute: 0.6, Burst: burst} // nothing earned back during the test
	store := &budgetStore{left: burst}
	a, b := NewLimiter(store, Limits{}), NewLimiter(store, Limits{})
	defer a.Close()
	defer b.Close()
	tn := &Tenant{ID: "t", RateLimit: &rate}
	allowed := func(l *Limiter) bool {
		d, err := l.AllowRequest(context.Background(), tn, "s")
		if err != nil {
			t.Fatal(err)
		}
		return d.Allowed
	}
	// a: four calls far apart, leasing 1, 2 and 2 (long leases, at most
	// idleLeaseMax) and holding one.
	const prelude = 4
	for range prelude {
		if !allowed(a) {
			t.Fatal("a refused within its burst")
		}
		time.Sleep(LeaseLife + 20*time.Millisecond)
	}
	byB := 0
	for allowed(b) {
		byB++
	}
	byA := 0
	for allowed(a) {
		byA++
	}
	if byA > idleLeaseMax(rate) {
		t.Errorf("after b spent the allowance, a admitted %d more, beyond idleLeaseMax %d", byA, idleLeaseMax(rate))
	}
	if total := prelude + byB + byA; total > burst {
		t.Errorf("admitted %d in all, more than the burst of %d", total, burst)
	}
	t.Logf("a: %d + %d, b: %d (burst %d, idleLeaseMax %d)", prelude, byA, byB, burst, idleLeaseMax(rate))
}

// TestIdleLeaseRemembered: after a pause longer than its long lease, a key
// that took its calls from long leases starts again at the size its last
// lease served (up to idleLeaseMax), not at 1, for idleLeaseForget; then
// it is forgotten. A busy key's short lease is forgotten after
// leaseForget, as before.
func TestIdleLeaseRemembered(t *testing.T) {
	rate := Rate{PerMinute: 600, Burst: 100}
	l := &leases{m: map[string]*lease{}, short: map[string]*lease{}, store: &grantAll{}}
	t0 := time.Now()
	l.add(t0, "idle", rate, 6, 1000) // long: 6 ≤ idleLeaseMax, plenty left
	l.add(t0, "busy", rate, 12, 1000)
	if !l.m["idle"].idle || l.m["busy"].idle {
		t.Fatalf("idle lease long: %v, busy lease long: %v", l.m["idle"].idle, l.m["busy"].idle)
	}
	for range 6 {
		l.take(t0.Add(time.Second), []string{"idle"})
	}
	for range 12 {
		l.take(t0.Add(time.Millisecond), []string{"busy"})
	}
	after := t0.Add(IdleLeaseLife + 30*time.Second) // past both lives and leaseForget
	l.giveBack(after, true)
	if got := l.want(after, "idle", rate); got != idleLeaseMax(rate) {
		t.Errorf("after a pause, the idle key leases %d, want %d", got, idleLeaseMax(rate))
	}
	if got := l.want(after, "busy", rate); got != 1 {
		t.Errorf("after a pause, the busy key leases %d, want 1", got)
	}
	l.giveBack(t0.Add(IdleLeaseLife+idleLeaseForget+time.Second), true)
	if got := l.want(after, "idle", rate); got != 1 {
		t.Errorf("after idleLeaseForget, the idle key leases %d, want 1", got)
	}
}

// TestLeaseReturns: between sweeps only the short leases are looked at and
// given back once expired; a long lease is given back by the first sweep
// after it expired, its key kept for sizing, and a short lease's key unused
// for longer than leaseForget is forgotten.
func TestLeaseReturns(t *testing.T) {
	rate := Rate{PerMinute: 600, Burst: 100}
	l := &leases{m: map[string]*lease{}, short: map[string]*lease{}, store: &grantAll{}}
	t0 := time.Now()
	l.add(t0, "short", rate, 12, 1000)
	l.add(t0, "long", rate, 3, 1000)
	if len(l.short) != 1 || l.short["short"] == nil {
		t.Fatalf("short leases: %v", l.short)
	}
	l.giveBack(t0.Add(LeaseLife), false)
	if l.m["short"].tokens != 0 || len(l.short) != 0 || l.m["long"].tokens != 3 {
		t.Errorf("after LeaseLife: short lease %d left, %d short leases, long lease %d left; want 0, 0, 3", l.m["short"].tokens, len(l.short), l.m["long"].tokens)
	}
	end := t0.Add(IdleLeaseLife)
	l.giveBack(end, false)
	if l.m["long"].tokens != 3 {
		t.Errorf("the long lease was given back between sweeps")
	}
	l.giveBack(end, true)
	if x := l.m["long"]; x == nil || x.tokens != 0 {
		t.Errorf("the long lease after the sweep: %+v, want kept with no tokens", x)
	}
	if l.m["short"] != nil {
		t.Error("the sweep kept a short lease's key unused for longer than leaseForget")
	}
}
