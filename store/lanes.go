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
// there are [Options].ControlLanes lanes of one connection each, and each
// tenant has a lane of its own among the first k (rendezvous hashing of
// its id), where k grows with the tenants met recently by any of that work
// (the chainer and the detector also meet the tenants whose calls wrote
// their own records): ceil(tenants in the last full period or this one
// (controlLanePeriod) / laneTenants), between 1 and the lanes less one
// spare (with three lanes or more). A few busy tenants share one lane, so
// their records still go in one commit per flush; many busy tenants are split
// over k lanes, each backend meets about 1/k of them and keeps them warm.
// The group commit then writes one transaction per lane its batch touches,
// the lanes' in parallel (WriteAuditEntries), each on its own: a part that
// fails is retried record by record without touching the others, which
// committed once.
//
// Affinity never makes work wait while a lane is free: work whose lane is
// taken (say by a chain pass) takes the spare lane, or another free one;
// only with every lane taken does it wait for the first returned. The
// spare keeps the lanes in use from meeting each other's tenants (and so
// from reaching ControlConnMaxTenants and being replaced, cold): measured
// at 2,000 busy tenants, a chain pass held some lane most of the time.
type controlLanes struct {
	pool *tenantPool // one connection per lane
	// most is the most lanes in use: all, or all but one spare from three
	// lanes on; 1 without affinity (Options.NoControlAffinity), the others
	// then all spares.
	most int
	// laneTenants is how many recently met tenants one lane is meant to
	// serve (see controlLaneTenants).
	laneTenants int

	mu       sync.Mutex
	seen     map[string]struct{} // tenants met in the current period
	prevSeen int                 // tenants met in the period before
	since    time.Time           // when the current period began
	k        int                 // lanes in use (1 ≤ k ≤ len(lanes))
}

// controlLanePeriod is how long the tenants met count towards the lanes in
// use (see controlLanes): long enough for calls spread over 2,000 tenants
// at 1,000 calls/s to have met most of them, short enough to fall back to
// one lane soon after the spread ends.
const controlLanePeriod = 10 * time.Second

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
	p, err := newTenantPool(ctx, cfg, int32(lanes), lanes, 0, 0)
	if err != nil {
		return nil, err
	}
	most := lanes
	switch {
	case !affinity:
		most = 1 // every tenant on lane 0; the others take it while lane 0 is taken
	case lanes >= 3:
		most = lanes - 1
	}
	return &controlLanes{pool: p, most: most, laneTenants: controlLaneTenants(maxTenants), seen: map[string]struct{}{}, k: 1}, nil
}

// note counts the tenants ids as met now, and updates the lanes in use.
// Called with mu held.
func (l *controlLanes) note(ids ...string) {
	n := l.most
	if n == 1 {
		return
	}
	now := time.Now()
	if since := now.Sub(l.since); since >= 2*controlLanePeriod {
		l.prevSeen, l.seen, l.since = 0, map[string]struct{}{}, now
	} else if since >= controlLanePeriod {
		l.prevSeen, l.seen, l.since = len(l.seen), map[string]struct{}{}, now
	}
	for _, id := range ids {
		l.seen[id] = struct{}{}
	}
	met := max(l.prevSeen, len(l.seen))
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

// acquire returns a connection of lane, or when it is taken of the spare
// lane, or of another free lane (in tenant key's order of the lanes), and
// the function that returns it; tenants are the ids of the tenants whose
// schemas the caller will serve on it (for [Options].ControlConnMaxTenants,
// see metTenants).
func (l *controlLanes) acquire(ctx context.Context, lane int, key string, tenants ...string) (*pgxpool.Conn, func(), error) {
	scores := laneScores(key, len(l.pool.lanes))
	for i := l.most; i < len(scores); i++ {
		scores[i] = math.MaxUint64 - 1
	}
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
