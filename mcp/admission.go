package mcp

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// Admission bounds the calls that do database work (tools/call,
// resources/read, prompts/get, completion/complete) in flight: in all, per tenant and per principal. The
// bound in all is the size of the tenant-work pool, and a call holds at
// most one of its connections (store's "Connections"), so the pool itself
// never has a queue: waiting happens here, where it can be fair. A call
// over a bound waits, at most AdmissionWait and behind at most
// TenantQueue others of its tenant; as calls finish, the waiting tenant
// with the fewest calls in flight is admitted next (the longest waiting of
// equals first), not first-come, so a tenant with a hundred calls queued
// delays another's next call by at most one call's time. A call that
// cannot wait is refused with 429. A call whose only work left is waiting
// for its audit record's group commit gives its slot back (yield).
type Admission struct {
	// Total bounds the calls in flight in this process (default: the
	// tenant-work pool's size).
	Total int
	// Tenant and Principal bound one tenant's, and one principal's
	// within a tenant, calls in flight.
	Tenant, Principal int
	// TenantQueue bounds the calls of one tenant waiting for admission,
	// and those that gave their slot back to wait only for their audit
	// record's group commit (see admitter.yield).
	TenantQueue int
	// Wait is the longest a call waits for admission.
	Wait time.Duration
}

// DefaultAdmission is the default for a tenant-work pool of pool
// connections: a tenant may hold half of them (at least 2), a principal
// half of its tenant's share but at least 4 (a single agent's parallel
// calls), 64 calls of a tenant may wait, for at most 2 s.
func DefaultAdmission(pool int) Admission {
	t := max(2, pool/2)
	return Admission{Total: pool, Tenant: t, Principal: min(t, max(4, t/2)), TenantQueue: 64, Wait: 2 * time.Second}
}

// refusal says which bound refused a call.
type refusal struct {
	scope string // "tenant", "principal" or "server"
	limit int
}

type admitter struct {
	cfg Admission

	mu         sync.Mutex
	total      int
	lanes      map[string]*lane // by tenant id
	principals map[principalKey]int
	ready      []*lane // lanes with waiters, in turn order
	// committing counts, by tenant id, the calls that gave their slot
	// back to wait for their audit record's group commit (yield).
	committing map[string]int
}

type principalKey struct{ tenant, subject string }

type lane struct {
	tenant   string
	inFlight int
	waiters  []*waiter
	queued   bool // in ready
}

type waiter struct {
	who      principalKey
	admitted chan struct{} // closed when admitted
	done     bool          // admitted (under mu)
}

func newAdmitter(cfg Admission) *admitter {
	return &admitter{cfg: cfg, lanes: map[string]*lane{}, principals: map[principalKey]int{}, committing: map[string]int{}}
}

// acquire admits a call of subject in tenant, waiting if it must; release
// must be called when the call ends. A nil release comes with the refusal.
func (a *admitter) acquire(ctx context.Context, tenant, subject string) (release func(), refused *refusal) {
	who := principalKey{tenant, subject}
	a.mu.Lock()
	l := a.lanes[tenant]
	if l == nil {
		l = &lane{tenant: tenant}
		a.lanes[tenant] = l
	}
	if len(l.waiters) == 0 && a.runnable(l, who) {
		a.grant(l, who)
		a.mu.Unlock()
		return a.releaser(l, who), nil
	}
	if len(l.waiters) >= a.cfg.TenantQueue || a.cfg.Wait <= 0 {
		r := a.bound(l, who)
		a.forget(l)
		a.mu.Unlock()
		return nil, r
	}
	w := &waiter{who: who, admitted: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	if !l.queued {
		l.queued = true
		a.ready = append(a.ready, l)
	}
	a.mu.Unlock()

	timer := time.NewTimer(a.cfg.Wait)
	defer timer.Stop()
	select {
	case <-w.admitted:
		return a.releaser(l, who), nil
	case <-timer.C:
	case <-ctx.Done():
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if w.done { // admitted as the wait ended
		return a.releaser(l, who), nil
	}
	for i, x := range l.waiters {
		if x == w {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			break
		}
	}
	r := a.bound(l, who)
	a.unqueue(l)
	a.forget(l)
	return nil, r
}

// yield gives back the slot of an admitted call of tenant (release is the
// one acquire returned) for the time it waits for its audit record's
// group commit, and returns the function to call when that wait ends. A
// call waiting there holds no connection (the group commit writes on the
// control lanes, store.DB.WriteAuditEntries) and does no more database work of its own, so its
// slot is free for the next call: admission bounds connections and each
// tenant's share of them, and one key's calls, which would otherwise wait
// here four at a time for commits of four records, fill group commits as
// large as their number. A tenant may have at most TenantQueue calls
// waiting this way (the same bound as its calls waiting for admission;
// its Tenant bound if that is larger): beyond it a call keeps its slot while it waits, as before, so one tenant
// cannot fill every group commit with its records. nil (the slot kept):
// the tenant is at that bound.
func (a *admitter) yield(tenant string, release func()) (done func()) {
	a.mu.Lock()
	if a.committing[tenant] >= max(a.cfg.TenantQueue, a.cfg.Tenant) {
		a.mu.Unlock()
		return nil
	}
	a.committing[tenant]++
	a.mu.Unlock()
	release()
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.committing[tenant]--; a.committing[tenant] <= 0 {
				delete(a.committing, tenant)
			}
		})
	}
}

// runnable: a call of who in l may start now (under mu).
func (a *admitter) runnable(l *lane, who principalKey) bool {
	return a.total < a.cfg.Total && l.inFlight < a.cfg.Tenant && a.principals[who] < a.cfg.Principal
}

// bound names the bound that keeps who waiting (under mu).
func (a *admitter) bound(l *lane, who principalKey) *refusal {
	switch {
	case a.principals[who] >= a.cfg.Principal:
		return &refusal{"principal", a.cfg.Principal}
	case l.inFlight >= a.cfg.Tenant || len(l.waiters) >= a.cfg.TenantQueue:
		return &refusal{"tenant", a.cfg.Tenant}
	}
	return &refusal{"server", a.cfg.Total}
}

func (a *admitter) grant(l *lane, who principalKey) {
	a.total++
	l.inFlight++
	a.principals[who]++
}

func (a *admitter) releaser(l *lane, who principalKey) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.total--
			l.inFlight--
			if a.principals[who]--; a.principals[who] <= 0 {
				delete(a.principals, who)
			}
			a.dispatch()
			a.forget(l)
		})
	}
}

// dispatch admits waiters while there is room (under mu): each time to
// the waiting tenant with the fewest calls in flight, the longest waiting
// of equals first, so tenants share the server evenly, whatever the
// length of their queues.
func (a *admitter) dispatch() {
	for a.total < a.cfg.Total {
		best, bestW := -1, -1
		for i, l := range a.ready {
			if l.inFlight >= a.cfg.Tenant || (best >= 0 && l.inFlight >= a.ready[best].inFlight) {
				continue
			}
			for j, w := range l.waiters {
				if a.principals[w.who] < a.cfg.Principal {
					best, bestW = i, j
					break
				}
			}
		}
		if best < 0 {
			return
		}
		l := a.ready[best]
		w := l.waiters[bestW]
		l.waiters = append(l.waiters[:bestW], l.waiters[bestW+1:]...)
		a.grant(l, w.who)
		w.done = true
		close(w.admitted)
		a.ready = append(a.ready[:best], a.ready[best+1:]...)
		if len(l.waiters) > 0 {
			a.ready = append(a.ready, l) // to the back of its equals
		} else {
			l.queued = false
		}
	}
}

// unqueue takes a lane without waiters out of the turn order (under mu).
func (a *admitter) unqueue(l *lane) {
	if !l.queued || len(l.waiters) > 0 {
		return
	}
	for i, x := range a.ready {
		if x == l {
			a.ready = append(a.ready[:i], a.ready[i+1:]...)
			break
		}
	}
	l.queued = false
}

// forget drops an idle lane (under mu).
func (a *admitter) forget(l *lane) {
	if l.inFlight == 0 && len(l.waiters) == 0 && !l.queued {
		delete(a.lanes, l.tenant)
	}
}

// inFlight reports the calls in flight (for metrics and tests).
func (a *admitter) inFlight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

// codeBusy is the JSON-RPC error code of a call refused by a concurrency
// bound (docs/clients.md).
const codeBusy = -32031

// admitRequest admits a request that does database work; other requests
// (initialize, tools/list, notifications) pass. A nil release with a nil
// error means nothing was taken; a refused request has been answered.
func (s *Server) admitRequest(c echo.Context, caller *Caller) (release func(), err error) {
	if c.Request().Method != http.MethodPost {
		return nil, nil
	}
	switch peekRequest(c).method {
	case "tools/call", "resources/read", "prompts/get", "completion/complete":
	default:
		return nil, nil
	}
	release, r := s.admit.acquire(c.Request().Context(), caller.Tenant.ID, caller.Principal.Subject)
	if r == nil {
		return release, nil
	}
	s.metrics.busy.WithLabelValues(r.scope).Inc()
	s.audit.rateLimited(caller, peekRequest(c).what, "too many concurrent calls ("+r.scope+" bound "+strconv.Itoa(r.limit)+")")
	var msg string
	switch r.scope {
	case "principal":
		msg = fmt.Sprintf("too many concurrent calls: you have %d in progress, the most one caller may have; retry in 1 s", r.limit)
	case "tenant":
		msg = fmt.Sprintf("too many concurrent calls: your organisation (%s) has %d in progress, the most it may have; retry in 1 s", caller.Tenant.Key, r.limit)
	default:
		msg = fmt.Sprintf("the server is at capacity (%d calls in progress); retry in 1 s", r.limit)
	}
	return nil, s.rpcError(c, http.StatusTooManyRequests, 1, codeBusy, msg, rpcErrorData{Scope: r.scope, Limit: r.limit})
}

// waiting reports the calls waiting for admission.
func (a *admitter) waiting() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, l := range a.lanes {
		n += len(l.waiters)
	}
	return n
}
