package store

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestLaneAccountingUnderRace: many callers take and give back lane
// reservations at once, some giving up while they wait; no lane is ever
// over its size, and at the end every reservation is back. Run with -race.
func TestLaneAccountingUnderRace(t *testing.T) {
	p := &tenantPool{size: []int{2, 2, 1}, taken: make([]int, 3)}
	check := func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for i := range p.size {
			if p.taken[i] < 0 || p.taken[i] > p.size[i] {
				t.Errorf("lane %d: %d taken of %d", i, p.taken[i], p.size[i])
			}
		}
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			<-start
			for i := range 200 {
				ctx, cancel := context.WithCancel(context.Background())
				if (g+i)%7 == 0 {
					cancel() // gives up at once if it has to wait
				}
				lane, err := p.takeLane(ctx, laneScores(string(rune('a'+rand.IntN(20))), 3))
				cancel()
				if err != nil {
					continue
				}
				check()
				p.giveBack(lane)
			}
		})
	}
	close(start)
	wg.Wait()
	for i, n := range p.taken {
		if n != 0 || len(p.waiters) != 0 {
			t.Errorf("lane %d: %d still taken, %d waiters", i, n, len(p.waiters))
		}
	}
}

// TestLaneScores: a tenant ranks the lanes the same way every time, and
// first lanes spread over all lanes.
func TestLaneScores(t *testing.T) {
	first := map[int]int{}
	for i := range 800 {
		s := laneScores(string(rune(i))+"tenant", 8)
		if s2 := laneScores(string(rune(i))+"tenant", 8); s2[3] != s[3] {
			t.Fatal("scores differ between calls")
		}
		best := 0
		for j := range s {
			if s[j] > s[best] {
				best = j
			}
		}
		first[best]++
	}
	for lane := range 8 {
		if first[lane] < 50 {
			t.Errorf("lane %d is first for %d of 800 tenants: %v", lane, first[lane], first)
		}
	}
}
