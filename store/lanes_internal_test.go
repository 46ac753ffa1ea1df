package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// TestLaneHandOffWhenContextEnds: callers whose contexts end while they
// wait for a lane, as a group commit's part does at groupCommitTimeout,
// race the hand-off of returned lanes (giveBack to the longest waiting);
// a lane handed to a caller that has just given up goes back, none is
// held by more callers than its size, and at the end every reservation is
// back and no waiter is left. Run with -race.
func TestLaneHandOffWhenContextEnds(t *testing.T) {
	p := &tenantPool{size: []int{1, 1, 1, 1}, taken: make([]int, 4)}
	holders := make([]atomic.Int32, len(p.size))
	start := make(chan struct{})
	var wg sync.WaitGroup
	var gaveUp, took atomic.Int64
	for g := range 24 {
		wg.Go(func() {
			<-start
			for i := range 300 {
				// Most give up while waiting: a deadline of 0–40 µs.
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(40))*time.Microsecond)
				lane, err := p.takeLane(ctx, laneScores(fmt.Sprint(g, i), len(p.size)))
				cancel()
				if err != nil {
					gaveUp.Add(1)
					continue
				}
				took.Add(1)
				if n := holders[lane].Add(1); n > int32(p.size[lane]) {
					t.Errorf("lane %d held by %d callers", lane, n)
				}
				if i%3 == 0 {
					time.Sleep(time.Duration(rand.IntN(20)) * time.Microsecond)
				}
				holders[lane].Add(-1)
				p.giveBack(lane)
			}
		})
	}
	close(start)
	wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, n := range p.taken {
		if n != 0 {
			t.Errorf("lane %d: %d still taken", i, n)
		}
	}
	if len(p.waiters) != 0 {
		t.Errorf("%d waiters left", len(p.waiters))
	}
	if gaveUp.Load() == 0 || took.Load() == 0 {
		t.Errorf("took %d, gave up %d: the test shows nothing", took.Load(), gaveUp.Load())
	}
}

// testLanes returns control lanes without connections: n lanes, each meant
// to serve laneTenants recently met tenants (for the tests of which lanes
// are in use).
func testLanes(n, laneTenants int) *controlLanes {
	return &controlLanes{pool: &tenantPool{lanes: make([]*pgxpool.Pool, n)}, n: n, affinity: true, laneTenants: laneTenants,
		seen: map[string]struct{}{}, k: 1}
}

// tenantIDs returns n tenant ids: prefix0, prefix1, …
func tenantIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprint(prefix, i)
	}
	return ids
}

// elapse moves l's period start and the arrivals it remembers back by d,
// as if d had passed.
func elapse(l *controlLanes, d time.Duration) {
	l.mu.Lock()
	l.since = l.since.Add(-d)
	for i := range l.recent {
		l.recent[i] = l.recent[i].Add(-d)
	}
	l.mu.Unlock()
}

// TestControlLanesPeriods: the lanes in use follow the tenants met over
// the last full period and this one. A spread raises them at once; they
// stay up across a period's end while the spread goes on (the new period
// has met few yet), and after it ends come back to one within two periods
// (or at once after a quiet while); a burst within one period raises them
// once, for at most two periods, without going up and down in between.
func TestControlLanesPeriods(t *testing.T) {
	newLanes := func() *controlLanes { return testLanes(4, 2) }
	spread, few := tenantIDs("spread", 8), tenantIDs("few", 1)

	t.Run("spread then few", func(t *testing.T) {
		l := newLanes()
		l.lanes(few)
		if k := l.inUse(); k != 1 {
			t.Fatalf("one tenant: %d lanes", k)
		}
		l.lanes(spread)
		if k := l.inUse(); k != 4 {
			t.Fatalf("8 tenants at 2 a lane: %d lanes, want 4", k)
		}
		// The spread goes on into the next period: nothing drops as it
		// begins, with few tenants met in it yet.
		elapse(l, controlLanePeriod+time.Second)
		l.lane(spread[0])
		if k := l.inUse(); k != 4 {
			t.Fatalf("a period's end during the spread: %d lanes, want 4", k)
		}
		l.lanes(spread)
		// The spread ends: only few tenants are busy. Still 4 lanes for the
		// rest of this period (the last full one met 8)...
		elapse(l, controlLanePeriod+time.Second)
		for range 10 {
			l.lanes(few)
			if k := l.inUse(); k != 4 {
				t.Fatalf("the period after the spread: %d lanes, want 4", k)
			}
		}
		// ...and one lane from the next.
		elapse(l, controlLanePeriod+time.Second)
		l.lanes(few)
		if k := l.inUse(); k != 1 {
			t.Fatalf("two periods after the spread: %d lanes, want 1", k)
		}
	})
	t.Run("quiet after a spread", func(t *testing.T) {
		l := newLanes()
		l.lanes(spread)
		elapse(l, 2*controlLanePeriod+time.Second)
		l.lanes(few)
		if k := l.inUse(); k != 1 {
			t.Fatalf("the first work after a quiet while: %d lanes, want 1", k)
		}
	})
	t.Run("burst", func(t *testing.T) {
		l := newLanes()
		l.lanes(few)
		l.lanes(spread[:5]) // 6 tenants: 3 lanes
		var ks []int
		for step := range 6 {
			for range 5 {
				l.lanes(few)
				ks = append(ks, l.inUse())
			}
			if step%2 == 1 {
				elapse(l, controlLanePeriod/2+time.Second)
			} else {
				elapse(l, controlLanePeriod/2)
			}
		}
		// Up once, down once: never back up.
		down := false
		for i, k := range ks {
			switch {
			case k != 3 && k != 1:
				t.Fatalf("after a burst of 6 tenants: %d lanes (%v)", k, ks)
			case k == 1:
				down = true
			case down:
				t.Fatalf("lanes went down and up again without a new burst: %v", ks)
			}
			if i == 0 && k != 3 {
				t.Fatalf("the burst did not raise the lanes: %v", ks)
			}
		}
		if !down {
			t.Fatalf("the lanes stayed up after the burst: %v", ks)
		}
	})
}

// TestControlLanesRamp: when calls begin to spread over many tenants the
// lanes go up after controlLaneRamp new tenants, not after laneTenants, so
// lane 0 (the only lane while few tenants were busy) meets little more
// than its share of them; tenants already met in the period before, or
// fewer new ones than controlLaneRamp, never raise the lanes; and a burst
// of new tenants that stops lets them come down within the period.
func TestControlLanesRamp(t *testing.T) {
	const lanes, busy = 3, 2000
	newLanes := func() *controlLanes { return testLanes(lanes, 500) }
	ids := tenantIDs

	t.Run("a spread begins", func(t *testing.T) {
		l := newLanes()
		for _, id := range ids("few", 10) {
			l.lane(id)
		}
		elapse(l, controlLanePeriod+time.Second) // the few were the period before
		onLane0 := 0
		for i, id := range ids("spread", busy) {
			if l.lane(id) == 0 {
				onLane0++
			}
			if i == controlLaneRamp-2 && l.inUse() != 1 {
				t.Fatalf("%d new tenants raised the lanes to %d", i+1, l.inUse())
			}
		}
		if k := l.inUse(); k != lanes {
			t.Fatalf("a spread over %d tenants: %d lanes in use, want %d", busy, k, lanes)
		}
		// Its share is busy/lanes; before the ramp it also took the first
		// laneTenants (500) of the others, ~830 in all.
		if limit := controlLaneRamp + busy/lanes*11/10; onLane0 > limit {
			t.Errorf("lane 0 met %d of %d new tenants, want at most %d", onLane0, busy, limit)
		}
	})
	// The same spread beginning late in a period (after the few tenants'
	// calls of 7 s): its rate is that of its own arrivals, not of the
	// period's. Counted from the period's start, 64 new tenants 7 s in
	// made 91 over the period, and the lanes rose one at a time as more
	// came, each step putting tenants on a lane that was not to be theirs
	// (their connections met hundreds of other lanes' tenants at every
	// spread's start, and were replaced once they reached
	// ControlConnMaxTenants).
	t.Run("a spread begins late in a period", func(t *testing.T) {
		l := newLanes()
		elapse(l, controlLanePeriod+time.Second)
		for _, id := range ids("few", 10) {
			l.lane(id)
		}
		elapse(l, controlLanePeriod*7/10)
		astray := 0
		for _, id := range ids("spread", busy) {
			if l.lane(id) != laneAmong(id, lanes) {
				astray++
			}
		}
		if k := l.inUse(); k != lanes {
			t.Fatalf("a spread over %d tenants: %d lanes in use, want %d", busy, k, lanes)
		}
		if astray > controlLaneRamp {
			t.Errorf("%d of %d new tenants met a lane other than theirs, want at most %d (those before the ramp)", astray, busy, controlLaneRamp)
		}
	})
	t.Run("tenants met the period before", func(t *testing.T) {
		l := newLanes()
		steady := ids("steady", 300)
		for _, id := range steady {
			l.lane(id)
		}
		for range 3 {
			elapse(l, controlLanePeriod+time.Second)
			for _, id := range steady {
				l.lane(id)
				if k := l.inUse(); k != 1 {
					t.Fatalf("300 tenants met again period after period: %d lanes", k)
				}
			}
		}
	})
	t.Run("fewer new tenants than the ramp", func(t *testing.T) {
		l := newLanes()
		l.lanes(ids("few", controlLaneRamp-1))
		if k := l.inUse(); k != 1 {
			t.Fatalf("%d new tenants at once: %d lanes", controlLaneRamp-1, k)
		}
	})
	t.Run("a burst that stops", func(t *testing.T) {
		l := newLanes()
		l.lanes(ids("burst", 2*controlLaneRamp))
		if k := l.inUse(); k != lanes {
			t.Fatalf("a burst of %d new tenants: %d lanes, want %d", 2*controlLaneRamp, k, lanes)
		}
		elapse(l, controlLanePeriod*9/10)
		l.lane("burst0")
		if k := l.inUse(); k != 1 {
			t.Fatalf("9/10 of a period after a burst of %d tenants: %d lanes, want 1", 2*controlLaneRamp, k)
		}
	})
}

// TestControlLanesRotatingSet: a steady workload whose busy tenants
// rotate (sessions of 20 s start uniformly, 23 a second: ~450 busy
// tenants, each called every second, under laneTenants; a quarter-second
// step) never has the ramp (controlLaneRamp) raise the lanes above what
// the tenants met call for: new tenants arrive all the time, but not at
// a spread's rate.
func TestControlLanesRotatingSet(t *testing.T) {
	const lanes = 3
	l := testLanes(lanes, 500)
	const step = 250 * time.Millisecond
	started := map[int]time.Duration{} // session -> start
	maxK, ups := 0, 0
	next := 0
	for now := time.Duration(0); now < 120*time.Second; now += step {
		for range 23 / 4 {
			started[next] = now
			next++
		}
		if int(now/step)%4 == 0 {
			started[next] = now
			next++
			started[next] = now
			next++
			started[next] = now
			next++
		}
		for id, st := range started {
			if now-st >= 20*time.Second {
				delete(started, id)
				continue
			}
			if (now-st)%time.Second == 0 { // called every second from its start
				l.lane(fmt.Sprint("s", id))
			}
		}
		if now > 40*time.Second {
			old := max(1, min(lanes, (max(len(l.prev), len(l.seen))+l.laneTenants-1)/l.laneTenants))
			if k := l.inUse(); k > maxK {
				maxK = k
			}
			if l.inUse() > old {
				ups++
			}
		}
		elapse(l, step)
	}
	t.Logf("%d sessions; at most %d lanes after warm-up, %d steps above the rule without projection; %d active at the end", next, maxK, ups, len(started))
	if ups > 0 {
		t.Errorf("a steady rotating workload: the projection raised the lanes above the tenants met in %d steps", ups)
	}
}
