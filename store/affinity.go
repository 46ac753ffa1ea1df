package store

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// tenantPool is the tenant-work pool with tenant affinity (see the
// package documentation, "Connections"). Its connections are split into
// lanes, each a pgxpool of a few connections. Every tenant ranks the lanes
// in an order of its own (rendezvous hashing of its id) and takes a
// connection from the first lane in that order that has one free: so a
// tenant's calls land on the same few backends, each backend meets about
// 1/lanes of the tenants, and its catalog caches (~55 KB per tenant, never
// given back by PostgreSQL) stay small and warm.
//
// Affinity never makes a call wait: when the tenant's first lane is busy
// the call takes its next lane with a free connection, whoever's lane that
// is; only when every connection is taken does it wait, first come first
// served, for the next one to be returned, whichever lane that is. (mcp's
// admission keeps the calls in flight within the pool's size, so with it
// no call waits here at all.)
type tenantPool struct {
	lanes []*pgxpool.Pool
	size  []int // connections each lane may have

	mu      sync.Mutex
	taken   []int      // connections taken (or promised to a waiter) per lane
	waiters []chan int // FIFO; each is sent the lane whose connection it is given

	uses sync.Map // *pgx.Conn → *connUse, when connections are recycled
}

// connUse is what recycling counts of one connection: it is touched only
// by the connection's current holder and by the pool's release hook, which
// the pool orders after the holder's last use.
type connUse struct {
	uses    int
	tenants map[string]struct{}
}

// newTenantPool opens a tenant pool of total connections in lanes lanes
// (at least one connection each) from cfg. A connection is closed on
// release after maxUses transactions or once it has served maxTenants
// different tenants (either bound off when not positive).
func newTenantPool(ctx context.Context, cfg *pgxpool.Config, total int32, lanes, maxUses, maxTenants int) (*tenantPool, error) {
	lanes = max(1, min(lanes, int(total)))
	p := &tenantPool{size: make([]int, lanes), taken: make([]int, lanes)}
	for i := range lanes {
		p.size[i] = int(total) / lanes
		if i < int(total)%lanes {
			p.size[i]++
		}
	}
	if maxUses > 0 || maxTenants > 0 {
		cfg = cfg.Copy()
		cfg.AfterRelease = func(c *pgx.Conn) bool {
			v, ok := p.uses.Load(c)
			if !ok {
				return true
			}
			u := v.(*connUse)
			u.uses++
			return (maxUses <= 0 || u.uses < maxUses) && (maxTenants <= 0 || len(u.tenants) < maxTenants)
		}
		cfg.BeforeClose = func(c *pgx.Conn) { p.uses.Delete(c) }
	}
	trackTenants := maxTenants > 0
	for i := range lanes {
		lc := cfg.Copy()
		lc.MaxConns = int32(p.size[i])
		lc.MinConns = min(lc.MaxConns, share(cfg.MinConns, lanes, i))
		lc.MinIdleConns = min(lc.MaxConns, share(cfg.MinIdleConns, lanes, i))
		if maxUses > 0 || trackTenants {
			lc.AfterConnect = chainAfterConnect(cfg.AfterConnect, func(c *pgx.Conn) {
				u := &connUse{}
				if trackTenants {
					u.tenants = map[string]struct{}{}
				}
				p.uses.Store(c, u)
			})
		}
		pool, err := pgxpool.NewWithConfig(ctx, lc)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("database: %w", err)
		}
		p.lanes = append(p.lanes, pool)
	}
	return p, nil
}

// share is lane i's share of n split over lanes (the first n%lanes lanes
// one more), so that the lanes' shares add up to n.
func share(n int32, lanes, i int) int32 {
	q := n / int32(lanes)
	if int32(i) < n%int32(lanes) {
		q++
	}
	return q
}

func chainAfterConnect(first func(context.Context, *pgx.Conn) error, then func(*pgx.Conn)) func(context.Context, *pgx.Conn) error {
	return func(ctx context.Context, c *pgx.Conn) error {
		if first != nil {
			if err := first(ctx, c); err != nil {
				return err
			}
		}
		then(c)
		return nil
	}
}

// Close closes every lane.
func (p *tenantPool) Close() {
	for _, l := range p.lanes {
		l.Close()
	}
}

// Size is the number of connections the pool may open.
func (p *tenantPool) Size() int32 {
	var n int
	for _, s := range p.size {
		n += s
	}
	return int32(n)
}

// Acquire returns a connection for tenant's work (tenant: the tenant's
// id, which orders the lanes) and the function that returns it. It waits
// only when every connection of every lane is taken.
func (p *tenantPool) Acquire(ctx context.Context, tenant string) (*pgxpool.Conn, func(), error) {
	c, release, err := p.acquireScores(ctx, laneScores(tenant, len(p.lanes)))
	if err != nil {
		return nil, nil, err
	}
	if v, ok := p.uses.Load(c.Conn()); ok {
		if u := v.(*connUse); u.tenants != nil {
			u.tenants[tenant] = struct{}{}
		}
	}
	return c, release, nil
}

// acquireScores returns a connection of the free lane with the highest
// score (one score per lane), waiting only when every lane is taken, and
// the function that returns it.
func (p *tenantPool) acquireScores(ctx context.Context, scores []uint64) (*pgxpool.Conn, func(), error) {
	lane, err := p.takeLane(ctx, scores)
	if err != nil {
		return nil, nil, err
	}
	c, err := p.lanes[lane].Acquire(ctx)
	if err != nil {
		p.giveBack(lane)
		return nil, nil, err
	}
	return c, func() { c.Release(); p.giveBack(lane) }, nil
}

// takeLane reserves a connection in the free lane with the highest score,
// or waits for the next one returned.
func (p *tenantPool) takeLane(ctx context.Context, scores []uint64) (int, error) {
	p.mu.Lock()
	best := -1
	for i, s := range scores {
		if p.taken[i] < p.size[i] && (best < 0 || s > scores[best]) {
			best = i
		}
	}
	if best >= 0 {
		p.taken[best]++
		p.mu.Unlock()
		return best, nil
	}
	ch := make(chan int, 1)
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()
	select {
	case lane := <-ch:
		return lane, nil
	case <-ctx.Done():
		p.mu.Lock()
		if i := slices.Index(p.waiters, ch); i >= 0 {
			p.waiters = slices.Delete(p.waiters, i, i+1)
			p.mu.Unlock()
			return 0, ctx.Err()
		}
		p.mu.Unlock()
		p.giveBack(<-ch) // handed a connection as the context ended
		return 0, ctx.Err()
	}
}

// giveBack returns a reserved connection of lane: to the longest waiting
// caller if there is one, else to the lane.
func (p *tenantPool) giveBack(lane int) {
	p.mu.Lock()
	if len(p.waiters) > 0 {
		ch := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		ch <- lane
		return
	}
	p.taken[lane]--
	p.mu.Unlock()
}

// laneScores ranks n lanes for tenant (rendezvous hashing): the same
// tenant always ranks them the same way, and the tenants whose first lane
// is busy spread over the other lanes instead of all falling onto one.
func laneScores(tenant string, n int) []uint64 {
	scores := make([]uint64, n)
	if n == 1 {
		return scores
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(tenant))
	base := h.Sum64()
	for i := range scores {
		scores[i] = mix64(base ^ (uint64(i)+1)*0x9e3779b97f4a7c15)
	}
	return scores
}

// mix64 is splitmix64's finaliser.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// each takes every connection of every lane at once (opening those not
// yet open) and calls fn with each while holding them all. For benchmarks
// and tests, while no tenant work runs: it bypasses the lanes' accounting.
func (p *tenantPool) each(ctx context.Context, fn func(*pgxpool.Conn) error) error {
	var held []*pgxpool.Conn
	defer func() {
		for _, c := range held {
			c.Release()
		}
	}()
	for i, l := range p.lanes {
		for range p.size[i] {
			c, err := l.Acquire(ctx)
			if err != nil {
				return err
			}
			held = append(held, c)
			if err := fn(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// backendPIDs returns the process ids of every connection's backend (see
// each).
func (p *tenantPool) backendPIDs(ctx context.Context) ([]int, error) {
	var pids []int
	err := p.each(ctx, func(c *pgxpool.Conn) error {
		var pid int
		if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			return err
		}
		pids = append(pids, pid)
		return nil
	})
	return pids, err
}
