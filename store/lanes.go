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
// keeps the caches of every schema it serves (20–40 KB per tenant's audit
// log, never given back) and, as /proc/<pid>/smaps counts it, the pages of
// the shared buffers it alone has read, so when calls spread over many tenants a
// connection that served them all would either grow past the memory bound
// or, replaced at [Options].ControlConnMaxTenants, serve them from cold
// caches (at 2,000 busy tenants, about 60% more PostgreSQL CPU per call in
// the control backends).
//
// So the work has tenant affinity, as the tool calls do (affinity.go):
// there are [Options].ControlLanes lanes of two connections each (one for
// the work calls wait for, the group commit's part; one for the chainer and
// the anomaly detector; both warm with the lane's tenants: see laneRole),
// and each tenant has a lane of its own
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
// connection is taken takes its lane's other one, and when both are taken
// another lane's free one; only
// with every connection taken does it wait for the first returned. (With
// lanes of one connection and a spare lane for such work instead, chain
// passes held some lane most of the time at 2,000 busy tenants, and the
// spare, meeting every lane's tenants, was replaced every few seconds and
// served them cold.)
type controlLanes struct {
	// pool has one lane of one connection per control lane connection:
	// controlLaneConns of them, in a row, make up one control lane, the
	// first for work a call waits for, the second for background work
	// (see laneRole).
	pool *tenantPool
	n    int // control lanes
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
	// recent are when the last controlLaneRamp fresh tenants came (a ring
	// indexed by fresh).
	recent [controlLaneRamp]time.Time
	k      int // lanes in use (1 ≤ k ≤ n)
}

// controlLaneConns is the connections of one control lane (a variable for
// tests that follow one connection).
var controlLaneConns = 2

// laneRole is the kind of work a control lane connection is taken for.
// Each has a connection of its own in every lane, the other being the
// first taken when that one is busy: so a group commit's part never waits
// behind a chain pass (work of the lane's tenants is kept off the other
// lanes' connections either way), and both connections of a lane serve
// the same tenants' tables. With either taking both kinds of work, a
// tenant's pages in the shared buffers were often read by one of them
// alone, which /proc/<pid>/smaps counts as that backend's Private_Dirty:
// after one call in each of 10,200 tenants the largest control backend's
// Private_Dirty was up to 70.6 MB at ControlConnMaxTenants 500, against
// 21 MB of memory of its own (bench/README.md, "2026-12-01, morning").
type laneRole int

const (
	// callWork is the work a call waits for: the group commit's part,
	// a record written on its own (WithTenantControl).
	callWork laneRole = iota
	// backgroundWork is the chainer's and the anomaly detector's.
	backgroundWork
)

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
	lanes = max(1, lanes)
	p, err := newTenantPool(ctx, cfg, int32(controlLaneConns*lanes), controlLaneConns*lanes, 0, 0)
	if err != nil {
		return nil, err
	}
	return &controlLanes{pool: p, n: lanes, affinity: affinity, laneTenants: controlLaneTenants(maxTenants), seen: map[string]struct{}{}, k: 1}, nil
}

// note counts the tenants ids as met now, and updates the lanes in use.
// Called with mu held.
//
// The lanes in use are those for the tenants met in the last full period
// or in this one, whichever is more; and when a spread begins they go up
// before it has met laneTenants: once controlLaneRamp tenants not met in
// the period before have been met in this one, the tenants it will meet
// count as new ones coming over a whole period at the rate of the last
// controlLaneRamp to come. (At the rate of all the period's new ones since
// the period began, a spread that began late in a period raised the lanes
// one at a time, each step putting tenants on a lane that was not to be
// theirs: a sixth of them when it began 7 s in.)
// Without that, a spread's first laneTenants tenants all went to lane 0,
// whose connections, meeting 500 new tenants at every spread that followed
// a quiet while, reached [Options].ControlConnMaxTenants and were replaced
// (their successors serving the lane's tenants on cold caches: 200–900 µs
// more PostgreSQL CPU per spread call in a run of bench/tenants). The
// count of what will be met falls as the period goes on without new
// tenants, so a burst of new tenants that stops raises the lanes for a
// moment, and they come down again within the period. That is the price
// of telling a spread early: a few hundred tenants that all come back at
// once after a quiet while are split over more lanes than their number
// calls for until their rate over the period falls (300 at once, 250 a
// lane: all eight lanes for ~1.3 s, then the two their number calls for;
// tenants called in that while meet a lane they will leave).
func (l *controlLanes) note(ids ...string) {
	n := l.n
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
			l.recent[l.fresh%controlLaneRamp] = now
			l.fresh++
		}
	}
	met := max(len(l.prev), len(l.seen))
	if l.fresh >= controlLaneRamp {
		// Since the oldest of the last controlLaneRamp to come.
		elapsed := max(now.Sub(l.recent[l.fresh%controlLaneRamp]), time.Millisecond)
		met = max(met, int(min(float64(controlLaneRamp)*float64(controlLanePeriod)/float64(elapsed), math.MaxInt32)))
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

// acquire returns lane's connection for role, or when it is taken the
// lane's other connection, or when both are taken a free connection of
// another lane (in tenant key's order of the lanes), and the function that
// returns it; tenants are the ids of the tenants whose schemas the caller
// will serve on it (for [Options].ControlConnMaxTenants, see metTenants).
func (l *controlLanes) acquire(ctx context.Context, lane int, role laneRole, key string, tenants ...string) (*pgxpool.Conn, func(), error) {
	c, release, err := l.pool.acquireScores(ctx, l.scores(lane, role, key))
	if err != nil {
		return nil, nil, err
	}
	metTenants(c.Conn(), tenants...)
	return c, release, nil
}

// scores ranks the pool's connections for role's work of lane (see
// acquire): the lane's connection for role, then its others, then the
// other lanes' in key's order (rendezvous hashing), each lane's connection
// for role before its others (so that work spilled over from its own lane
// keeps to that lane's roles too).
func (l *controlLanes) scores(lane int, role laneRole, key string) []uint64 {
	per := len(l.pool.lanes) / l.n
	mine := min(int(role), per-1) // role's connection in each lane
	byLane := laneScores(key, l.n)
	scores := make([]uint64, len(l.pool.lanes))
	for i := range scores {
		scores[i] = byLane[i/per] >> 2 << 1 // below the lane's own
		if i%per == mine {
			scores[i]++
		}
	}
	for i := lane * per; i < (lane+1)*per; i++ {
		scores[i] = math.MaxUint64 - 1
	}
	scores[lane*per+mine] = math.MaxUint64
	return scores
}

// acquireTenant returns a connection for role's work in tenant id's
// schema (see acquire).
func (l *controlLanes) acquireTenant(ctx context.Context, id string, role laneRole) (*pgxpool.Conn, func(), error) {
	return l.acquire(ctx, l.lane(id), role, id, id)
}

// inUse returns the lanes in use now (for tests).
func (l *controlLanes) inUse() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.k
}
