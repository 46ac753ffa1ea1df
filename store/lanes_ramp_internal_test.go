package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// TestControlLanesRotatingSet: a steady workload whose busy tenants
// rotate (sessions of 20 s start uniformly, 23 a second: ~450 busy
// tenants, each called every second, under laneTenants; a quarter-second
// step) never has the ramp (controlLaneRamp) raise the lanes above what
// the tenants met call for: new tenants arrive all the time, but not at
// a spread's rate.
func TestControlLanesRotatingSet(t *testing.T) {
	const lanes = 3
	l := &controlLanes{pool: &tenantPool{lanes: make([]*pgxpool.Pool, lanes)}, affinity: true, laneTenants: 500,
		seen: map[string]struct{}{}, k: 1}
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
		l.since = l.since.Add(-step)
	}
	t.Logf("%d sessions; at most %d lanes after warm-up, %d steps above the rule without projection; %d active at the end", next, maxK, ups, len(started))
	if ups > 0 {
		t.Errorf("a steady rotating workload: the projection raised the lanes above the tenants met in %d steps", ups)
	}
}
