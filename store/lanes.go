package store

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// controlLanes are the control connections that work in tenant schemas at
// the rate of calls: the group-committed audit INSERTs
// ([DB.WriteAuditEntries], [DB.InsertAuditBatch]), the per-record
// fall-backs ([DB.WithTenantControl]), the chainer ([DB.ChainAudit],
// [DB.ChainAuditTenants]) and the anomaly detector. A PostgreSQL backend
// keeps the caches of every schema it serves (25–35 KB per tenant's audit
// log, never given back), so when calls spread over many tenants a
// connection that served them all would either grow past the memory bound
// or, replaced at [Options].ControlConnMaxTenants, serve them from cold
// caches (at 2,000 busy tenants, about 60% more PostgreSQL CPU per call in
// the control backends).
//
// So the work has tenant affinity, as the tool calls do (affinity.go):
// there are [Options].ControlLanes lanes of two connections each (one for
// the group commit's part, one for the chainer or the anomaly detector,
// both warm with the lane's tenants), and each tenant has a lane of its own
// among the first k (rendezvous hashing of its id), where k grows with the
// tenants met recently by any of that work (the chainer and the detector
// also meet the tenants whose calls wrote their own records): ceil(tenants
// in the last full period or this one (controlLanePeriod) / laneTenants),
// between 1 and the lanes. A few busy tenants share one lane, so their
// records still go in one commit per flush; many busy tenants are split
// over k lanes, each backend meets about 1/k of them and keeps them warm.
// The group commit then writes one transaction per lane its batch touches,
// the lanes' in parallel (WriteAuditEntries), each on its own: a part that
// fails is retried record by record without touching the others, which
// committed once.
//
// Affinity never makes work wait while a connection is free: work whose
// lane's connections are both taken takes another lane's free one; only
// with every connection taken does it wait for the first returned. (With
// lanes of one connection and a spare lane for such work instead, chain
// passes held some lane most of the time at 2,000 busy tenants, and the
// spare, meeting every lane's tenants, was replaced every few seconds and
// served them cold.)
type controlLanes struct {
	pool *tenantPool // two connections per lane
	// affinity: each tenant's work on its own lane among k; without it
	// (Options.NoControlAffinity) k stays 1, the other lanes taking work
	// only while lane 0's connections are taken.
	affinity bool
	// laneTenants is how many recently met tenants one lane is meant to
	// serve (see controlLaneTenants).
	laneTenants int

	mu    sync.Mutex
	seen  map[string]struct{} // tenants met in the current period
	prev  map[string]struct{} // tenants met in the period before
	fresh int                 // tenants in seen and not in prev
	since time.Time           // when the current period began
	k     int                 // lanes in use (1 ≤ k ≤ len(lanes))
}

// controlLaneConns is the connections of one control lane (a variable for
// tests that follow one connection).
var controlLaneConns = 2

// controlLanePeriod is how long the tenants met count towards the lanes in
// use (see controlLanes): long enough for calls spread over 2,000 tenants
// at 1,000 calls/s to have met most of them, short enough to fall back to
// one lane soon after the spread ends.
const controlLanePeriod = 10 * time.Second

// controlLaneRamp is how many tenants not met in the period before must be
// met in this one before their rate of arrival counts (see note): enough
// that a handful of tenants coming back after a pause never raise the
// lanes, few enough that a spread beginning puts only tens of tenants on
// lane 0 before the lanes go up.
const controlLaneRamp = 64

// controlLaneTenants returns the tenants one control lane is meant to
// serve given the control connections' bound maxTenants (not positive:
// none): 500, or half the bound if that is less, so that a lane's
// connection keeps its tenants warm, well within the bound (a connection
// also meets the tenants of lanes that were taken).
func controlLaneTenants(maxTenants int) int {
	if maxTenants > 0 {
		return max(1, min(500, maxTenants/2))
	}
	return 500
}

func newControlLanes(ctx context.Context, cfg *pgxpool.Config, lanes, maxTenants int, affinity bool) (*controlLanes, error) {
	p, err := newTenantPool(ctx, cfg, int32(controlLaneConns*lanes), lanes, 0, 0)
	if err != nil {
		return nil, err
	}
	return &controlLanes{pool: p, affinity: affinity, laneTenants: controlLaneTenants(maxTenants), seen: map[string]struct{}{}, k: 1}, nil
}

// note counts the tenants ids as met now, and updates the lanes in use.
// Called with mu held.
//
// The lanes in use are those for the tenants met in the last full period
// or in this one, whichever is more; and when a spread begins they go up
// before it has met laneTenants: once controlLaneRamp tenants not met in
// the period before have been met in this one, the tenants it will meet
// count as those new ones at their rate so far over the whole period.
// Without that, a spread's first laneTenants tenants all went to lane 0,
// whose connections, meeting 500 new tenants at every spread that followed
// a quiet while, reached [Options].ControlConnMaxTenants and were replaced
// (their successors serving the lane's tenants on cold caches: 200–900 µs
// more PostgreSQL CPU per spread call in a run of bench/tenants). The
// count of what will be met falls as the period goes on without new
// tenants, so a burst of new tenants that stops raises the lanes for a
// moment, and they come down again within the period. That is the price
// of telling a spread early: a few hundred tenants that all come back at
// once after a quiet while are split over the lanes for a few seconds
// too (300 at once: ~6 s, two thirds of them meeting another lane's
// connections), until their count over the period falls under
// laneTenants.
func (l *controlLanes) note(ids ...string) {
	n := len(l.pool.lanes)
	if n == 1 || !l.affinity {
		return
	}
	now := time.Now()
	if since := now.Sub(l.since); since >= 2*controlLanePeriod {
		l.prev, l.seen, l.fresh, l.since = nil, map[string]struct{}{}, 0, now
	} else if since >= controlLanePeriod {
		l.prev, l.seen, l.fresh, l.since = l.seen, map[string]struct{}{}, 0, now
	}
	for _, id := range ids {
		if _, ok := l.seen[id]; ok {
			continue
		}
		l.seen[id] = struct{}{}
		if _, ok := l.prev[id]; !ok {
			l.fresh++
		}
	}
	met := max(len(l.prev), len(l.seen))
	if l.fresh >= controlLaneRamp {
		elapsed := max(now.Sub(l.since), time.Millisecond)
		met = max(met, int(min(float64(l.fresh)*float64(controlLanePeriod)/float64(elapsed), math.MaxInt32)))
	}
	l.k = max(1, min(n, (met+l.laneTenants-1)/l.laneTenants))
}

// lane counts tenant id as met now (see note) and returns its lane among
// those in use. Every path that works in a tenant's schema on the lanes
// chooses its lane here or in lanes, so the tenants met by any of them
// (the chainer and the anomaly detector meet the tenants whose calls wrote
// their own records, which the group commit never sees) count towards the
// lanes in use.
func (l *controlLanes) lane(id string) int {
	l.mu.Lock()
	l.note(id)
	k := l.k
	l.mu.Unlock()
	return laneAmong(id, k)
}

// lanes counts the tenants ids as met now and returns their lanes among
// those in use (the same k for all; see lane).
func (l *controlLanes) lanes(ids []string) []int {
	l.mu.Lock()
	l.note(ids...)
	k := l.k
	l.mu.Unlock()
	lanes := make([]int, len(ids))
	for i, id := range ids {
		lanes[i] = laneAmong(id, k)
	}
	return lanes
}

// laneAmong is tenant id's lane among the first k: the one it scores
// highest (rendezvous hashing, so that when k grows or shrinks only the
// tenants of the lanes added or removed move).
func laneAmong(id string, k int) int {
	if k <= 1 {
		return 0
	}
	scores := laneScores(id, k)
	best := 0
	for i, s := range scores {
		if s > scores[best] {
			best = i
		}
	}
	return best
}

// acquire returns a connection of lane, or when both are taken of another
// lane with one free (in tenant key's order of the lanes), and the
// function that returns it; tenants are the ids of the tenants whose
// schemas the caller will serve on it (for [Options].ControlConnMaxTenants,
// see metTenants).
func (l *controlLanes) acquire(ctx context.Context, lane int, key string, tenants ...string) (*pgxpool.Conn, func(), error) {
	scores := laneScores(key, len(l.pool.lanes))
	scores[lane] = math.MaxUint64
	c, release, err := l.pool.acquireScores(ctx, scores)
	if err != nil {
		return nil, nil, err
	}
	metTenants(c.Conn(), tenants...)
	return c, release, nil
}

// acquireTenant returns a connection for work in tenant id's schema (see
// acquire).
func (l *controlLanes) acquireTenant(ctx context.Context, id string) (*pgxpool.Conn, func(), error) {
	return l.acquire(ctx, l.lane(id), id, id)
}

// inUse returns the lanes in use now (for tests).
func (l *controlLanes) inUse() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.k
}
