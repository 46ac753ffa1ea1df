package tenancy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// LeaseStore is a LimitStore that can also lease several requests of a
// key at once, so that a replica admits most requests without a database
// round trip (issue 15). Leased requests are charged to the shared GCRA
// state exactly as single requests are.
type LeaseStore interface {
	// GCRALease charges up to wants[i] requests to key i, as many as the
	// key admits now (possibly 0), keys independently.
	GCRALease(ctx context.Context, keys []string, intervals []time.Duration, bursts, wants []int) (LeaseResult, error)
	// GCRAReturn gives back counts[i] unused requests of key i.
	GCRAReturn(ctx context.Context, keys []string, intervals []time.Duration, counts []int) error
}

// LeaseResult is the store's answer to a lease, per key.
type LeaseResult struct {
	Granted    []int
	RetryAfter []time.Duration // when none was granted: until one would be
	Remaining  []int           // requests the key still admits after the grant
}

const (
	// LeaseWindow and the burst size the largest lease: the requests a
	// key's rate earns in this time or an eighth of its burst, whichever
	// is more, at least 1 and at most a quarter of its burst.
	LeaseWindow = 50 * time.Millisecond
	// LeaseLife is how long a replica may use a lease; what is left then
	// is given back, so a key over its limit is refused everywhere within
	// this time, and a replica never sits on allowance others need.
	LeaseLife = 100 * time.Millisecond
	// IdleLeaseLife is the life of a small lease granted while its key
	// had at least half its burst left (see idleLeaseMax): long enough
	// that a key called every few seconds (a tenant among thousands)
	// takes most calls from its lease instead of renewing one per call.
	IdleLeaseLife = 10 * time.Second
	// leaseReturnEvery is how often expired leases are given back, all
	// keys in one statement.
	leaseReturnEvery = 50 * time.Millisecond
	// leaseSweepEvery is how often every key remembered is looked at: the
	// long leases' returns (up to this late) and forgetting. Between
	// sweeps only the short leases are (leases.short): the keys of the
	// last minute can be many more.
	leaseSweepEvery = time.Second
	// leaseForget is how long after its lease expired a key's use is
	// remembered for sizing its next lease (at least; the first sweep
	// after that forgets it).
	leaseForget = time.Second
	// idleLeaseForget is leaseForget for a key whose last lease was a
	// long one: a key called now and then, with pauses, takes up its
	// leases' size where it left it rather than from 1.
	idleLeaseForget = time.Minute
)

type lease struct {
	tokens   int
	used     int // requests taken since the last grant
	left     int // what the store said the key admitted after the last grant
	interval time.Duration
	granted  time.Time // when the last grant's answer came
	idle     bool      // the last grant lives IdleLeaseLife
	expires  time.Time
}

// leaseSize is the most requests of r one lease takes.
func leaseSize(r Rate) int {
	k := max(int(r.PerMinute/60*LeaseWindow.Seconds()), r.Burst/8)
	return max(1, min(k, r.Burst/4))
}

// idleLeaseMax is the most requests of r a lease living IdleLeaseLife
// holds: a sixteenth of the burst, at least 1 and at most leaseSize. It
// bounds what one replica can sit on for that long (under-admission):
// with the default limits 6 of a principal's burst of 100 and 12 of a
// tenant's 200.
func idleLeaseMax(r Rate) int {
	return max(1, min(r.Burst/16, leaseSize(r)))
}

// leaseLifeFor is the life of a lease holding n requests of a key limited
// by r that the store says still admits left more, and whether it is the
// long one: IdleLeaseLife for a small lease (at most idleLeaseMax) while
// at least half the burst is left, so that no replica holds allowance for
// long when the key nears its limit; LeaseLife otherwise.
func leaseLifeFor(n, left int, r Rate) (time.Duration, bool) {
	if n <= idleLeaseMax(r) && left >= (r.Burst+1)/2 {
		return IdleLeaseLife, true
	}
	return LeaseLife, false
}

// want is how many requests to lease for key at now: twice what its last
// lease served (a key in use grows its leases 1, 2, 4, … up to leaseSize,
// so a busy key costs one statement per many requests while an occasional
// one charges no more than it uses), at least 1. A key whose last lease was
// a long one (IdleLeaseLife) granted longer than LeaseLife ago is an
// occasional key, not a busy one: its leases grow only up to idleLeaseMax,
// so that they stay long and its calls keep taking from them.
func (l *leases) want(now time.Time, key string, r Rate) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	used, most := 0, leaseSize(r)
	if x := l.m[key]; x != nil {
		used = x.used
		if x.idle && now.Sub(x.granted) > LeaseLife {
			most = idleLeaseMax(r)
		}
	}
	return max(1, min(2*used, most))
}

type leases struct {
	store LeaseStore
	// renew collapses concurrent renewals of the same keys into one
	// statement (else n calls missing at once would each lease a share).
	renew   singleflight.Group
	mu      sync.Mutex
	m       map[string]*lease
	short   map[string]*lease // the keys of m whose lease lives LeaseLife, until it is given back
	waiting map[string]int    // requests waiting for a renewal, by key set
	stop    chan struct{}
	done    chan struct{}
}

func newLeases(s LeaseStore) *leases {
	l := &leases{store: s, m: map[string]*lease{}, short: map[string]*lease{}, waiting: map[string]int{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l
}

// take takes one request from the live lease of every key, all or none,
// and says which keys had none (missing) or, when none was missing, the
// fewest requests any key still admits (its lease plus what the store said
// was left when it was granted: an estimate).
func (l *leases) take(now time.Time, keys []string) (missing []int, remaining int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	remaining = -1
	for i, k := range keys {
		if x := l.m[k]; x == nil || x.tokens < 1 || !now.Before(x.expires) {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		return missing, -1
	}
	for _, k := range keys {
		x := l.m[k]
		x.tokens--
		x.used++
		if r := x.tokens + x.left; remaining < 0 || r < remaining {
			remaining = r
		}
	}
	return nil, remaining
}

// add puts n granted requests into the lease of key (limited by r),
// renewing its life (leaseLifeFor) and its estimate of what the store has
// left.
func (l *leases) add(now time.Time, key string, r Rate, n, left int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	x := l.m[key]
	if x == nil {
		x = &lease{interval: r.interval()}
		l.m[key] = x
	}
	x.tokens += n
	x.used = 0
	life, idle := leaseLifeFor(x.tokens, left, r)
	x.granted, x.idle = now, idle
	x.expires, x.left = now.Add(life), left
	if idle {
		delete(l.short, key)
	} else {
		l.short[key] = x
	}
}

// run gives back expired short leases every leaseReturnEvery and looks at
// every key every leaseSweepEvery, until stopped; then it gives back every
// lease.
func (l *leases) run() {
	defer close(l.done)
	t := time.NewTicker(leaseReturnEvery)
	defer t.Stop()
	var swept time.Time
	for {
		select {
		case <-l.stop:
			l.giveBack(time.Time{}, true)
			return
		case now := <-t.C:
			sweep := now.Sub(swept) >= leaseSweepEvery
			if sweep {
				swept = now
			}
			l.giveBack(now, sweep)
		}
	}
}

// giveBack returns the unused requests of the leases expired at now, in one
// statement: of the short leases only (leases.short), or with sweep of
// every key's, forgetting the keys unused for long enough (leaseForget,
// idleLeaseForget); of every lease when now is zero.
func (l *leases) giveBack(now time.Time, sweep bool) {
	var keys []string
	var ivs []time.Duration
	var counts []int
	l.mu.Lock()
	set := l.short
	if sweep || now.IsZero() {
		set = l.m
	}
	for k, x := range set {
		if now.IsZero() || !now.Before(x.expires) {
			if x.tokens > 0 {
				keys, ivs, counts = append(keys, k), append(ivs, x.interval), append(counts, x.tokens)
			}
			x.tokens = 0
			delete(l.short, k)
			// Its use sizes the key's next lease for a while.
			forget := leaseForget
			if x.idle {
				forget = idleLeaseForget
			}
			if (sweep || now.IsZero()) && (now.IsZero() || now.Sub(x.expires) > forget) {
				delete(l.m, k)
			}
		}
	}
	l.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// A failed return only under-admits: the requests stay charged.
	_ = l.store.GCRAReturn(ctx, keys, ivs, counts)
}

func (l *leases) close() {
	close(l.stop)
	<-l.done
}

// maxLeaseRounds bounds how often one request renews leases that others
// emptied before it could take from them; after that it is refused as if
// over its limit, with the shortest retry.
const maxLeaseRounds = 32

// lease renews the leases of keys (the missing keys of a request), one
// statement for all of them, shared by concurrent callers asking for the
// same keys. It returns the store's answer.
//
// Each request waiting for the same keys asks for one more: a lease never
// falls short of the requests already waiting for it. A lease's life
// (LeaseLife) starts when the store's answer arrives: counted from before
// the statement, a renewal slower than LeaseLife (a loaded database)
// added leases already expired, whose requests then found none, renewed
// in vain and were refused while their requests, already charged, were
// given back unused (TestSlowLeaseRenewal).
func (l *leases) lease(ctx context.Context, keys []string, rates []Rate, wants []int) (LeaseResult, error) {
	intervals, bursts := make([]time.Duration, len(rates)), make([]int, len(rates))
	for i, r := range rates {
		intervals[i], bursts[i] = r.interval(), r.Burst
	}
	id := strings.Join(keys, "\x00")
	l.mu.Lock()
	l.waiting[id]++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		if l.waiting[id]--; l.waiting[id] <= 0 {
			delete(l.waiting, id)
		}
		l.mu.Unlock()
	}()
	v, err, _ := l.renew.Do(id, func() (any, error) {
		l.mu.Lock()
		n := l.waiting[id]
		l.mu.Unlock()
		wants := slices.Clone(wants)
		for i := range wants {
			wants[i] = max(wants[i], n)
		}
		res, err := l.store.GCRALease(ctx, keys, intervals, bursts, wants)
		if err != nil {
			return res, err
		}
		if len(res.Granted) != len(keys) || len(res.RetryAfter) != len(keys) || len(res.Remaining) != len(keys) {
			return res, errors.New("rate limit lease: wrong number of results")
		}
		now := time.Now()
		for i, k := range keys {
			if res.Granted[i] > 0 {
				l.add(now, k, rates[i], res.Granted[i], res.Remaining[i])
			}
		}
		return res, nil
	})
	res, _ := v.(LeaseResult)
	return res, err
}
