package mcp

import (
	"context"
	"errors"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Records that could not be stored when they were due.
//
// A record is due in its tenant's audit log when its call is decided (a
// call's own record: in the call's transaction, its group commit, or alone
// after a failure) or at the next flush (the aggregated refusals). When
// that write fails (the database cannot be reached, or the tenant's audit
// log is locked by another session for longer than the write may wait),
// the record is not dropped: it is kept in memory with its tenant and
// tried again at the flushes that follow, every heldRetry. Each tenant's
// try, the first included, is bounded by heldWait, so that one tenant's
// locked audit log never holds up a flush (and with it every other
// tenant's records and chaining). New refusals of a
// tenant that has records kept join them rather than wait for the lock
// again. A record stored late has the time of its write (at), as an
// aggregated record always has; its request id, decision and reason are
// the call's.
//
// Records are lost only when the process stops with them still kept (the
// last flush tries them once, within its bound), when they have been kept
// for heldFor, or when more than maxHeldRecords calls' records are kept at
// once; each loss is logged as an error naming the tenant and the count.
// Every record is also on the audit JSON lines: a call's when it was
// decided, an aggregate's when it is stored or lost.
const (
	heldRetry      = 5 * time.Second
	heldWait       = time.Second
	heldFor        = time.Hour
	maxHeldRecords = 10_000
)

// errNotTried is the error of records left to the next flush without a
// try (see writeTurn).
var errNotTried = errors.New("not tried: the database could not be reached, or the flush ran out of time, before this tenant's turn")

// heldTenant is one tenant's records kept for a later try.
type heldTenant struct {
	t     *tenancy.Tenant
	recs  []*store.AuditRecord // calls' records, each its own
	aggs  map[limitedKey]*limitedAgg
	since time.Time // when the first of them could not be stored
	next  time.Time // the next try
}

// holdLocked keeps records of t that could not be stored; the caller holds
// a.mu. It reports false for the calls' records beyond maxHeldRecords
// (lost: the caller says so).
func (a *auditor) holdLocked(t *tenancy.Tenant, recs []*store.AuditRecord, aggs []*limitedAgg, now time.Time) bool {
	h := a.held[t.ID]
	if h == nil {
		h = &heldTenant{t: t, aggs: map[limitedKey]*limitedAgg{}, since: now, next: now.Add(heldRetry)}
		a.held[t.ID] = h
	}
	for _, agg := range aggs {
		if old := h.aggs[agg.key]; old != nil {
			old.rec.Count += agg.rec.Count
			continue
		}
		h.aggs[agg.key] = agg
	}
	if a.heldN+len(recs) > maxHeldRecords {
		return false
	}
	h.recs = append(h.recs, recs...)
	a.heldN += len(recs)
	return true
}

// hold keeps a call's record that could not be stored (see above); false
// means too many are kept already, and the record is lost.
func (a *auditor) hold(t *tenancy.Tenant, r *store.AuditRecord) bool {
	rec := *r
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.holdLocked(t, []*store.AuditRecord{&rec}, nil, time.Now())
}

// mergeHeld moves the aggregates of tenants that have records kept into
// their kept records (the next try writes them together) and returns the
// others, to be written now.
func (a *auditor) mergeHeld(limited map[limitedKey]*limitedAgg, now time.Time) []*limitedAgg {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*limitedAgg, 0, len(limited))
	for _, agg := range limited {
		if a.held[agg.tenant.ID] != nil {
			a.holdLocked(agg.tenant, nil, []*limitedAgg{agg}, now)
			continue
		}
		out = append(out, agg)
	}
	return out
}

// settleAggregates handles the outcome of writing t's aggregates recs
// (recs[i] the record of aggs[i]; err the write's error): the stored ones
// are mirrored and counted for chaining, the others kept for a later try,
// or lost when final.
func (a *auditor) settleAggregates(t *tenancy.Tenant, aggs []*limitedAgg, recs []*store.AuditRecord, err error, final bool, now time.Time) {
	var kept []*limitedAgg
	stored := 0
	for i, rec := range recs {
		switch {
		case rec.ID != 0:
			stored++
			a.emit(t.Key, rec)
		case final:
			a.emit(t.Key, rec)
		default:
			kept = append(kept, aggs[i])
		}
	}
	lost := len(recs) - stored - len(kept)
	if lost > 0 {
		a.log.Error("audit: aggregated records (rate-limited, refused networks, refused calls) not stored", "tenant", t.Key, "lost", lost, "of", len(recs), "error", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if stored > 0 {
		a.markDirty(t, stored, false)
	}
	if len(kept) > 0 {
		if a.held[t.ID] == nil {
			a.log.Warn("audit: records could not be stored yet; kept, and tried again shortly", "tenant", t.Key, "records", len(kept), "error", err)
		}
		a.holdLocked(t, nil, kept, now)
	}
}

// tryContext bounds one tenant's write of records nobody waits for (the
// aggregates, the kept records): by heldWait, whatever ctx says, so that
// one tenant's locked audit log costs the others' writes nothing (what it
// refuses is kept); in the last flush (final) by ctx, the flush's bound.
func tryContext(ctx context.Context, final bool) (context.Context, context.CancelFunc) {
	if final {
		return ctx, func() {}
	}
	return context.WithTimeout(context.WithoutCancel(ctx), heldWait)
}

// writeTurn is one flush's budget for the writes of records nobody waits
// for: once the database was found unreachable, or the flush has run for
// its bound (stopWait), the tenants not yet tried have their records kept
// for the next flush without a try, so that an outage (each try failing
// at once, or hanging for heldWait) costs a flush neither a try per
// tenant nor heldWait per tenant. The last flush tries every tenant within
// its own bound.
type writeTurn struct {
	final bool
	until time.Time
	down  bool
}

func newWriteTurn(final bool, bound time.Duration) *writeTurn {
	return &writeTurn{final: final, until: time.Now().Add(bound)}
}

// skip reports whether a tenant's write is left to the next flush.
func (w *writeTurn) skip() bool { return !w.final && (w.down || !time.Now().Before(w.until)) }

// tried notes a write's error: the database unreachable (a lock on one
// tenant's audit log is not) ends the turn.
func (w *writeTurn) tried(err error) {
	if store.Unavailable(err) && !store.Locked(err) {
		w.down = true
	}
}

// retryHeld tries the kept records of the tenants whose turn has come
// (every one when all or final), each tenant's within heldWait (final:
// within ctx) while turn allows, and keeps what fails again unless final
// or kept for heldFor.
func (a *auditor) retryHeld(ctx context.Context, turn *writeTurn, all bool, now time.Time) {
	a.mu.Lock()
	var due []*heldTenant
	for id, h := range a.held {
		if all || turn.final || !now.Before(h.next) {
			due = append(due, h)
			delete(a.held, id)
			a.heldN -= len(h.recs)
		}
	}
	a.mu.Unlock()
	for _, h := range due {
		aggs := make([]*limitedAgg, 0, len(h.aggs))
		recs := make([]*store.AuditRecord, 0, len(h.recs)+len(h.aggs))
		for _, agg := range h.aggs {
			rec := agg.rec
			aggs = append(aggs, agg)
			recs = append(recs, &rec)
		}
		recs = append(recs, h.recs...)
		if turn.skip() {
			a.keepAgain(h, h.recs, aggs, h.next)
			continue
		}
		tctx, cancel := tryContext(ctx, turn.final)
		_, err := a.db.InsertAuditRecords(tctx, h.t, recs)
		cancel()
		turn.tried(err)
		giveUp := turn.final || now.Sub(h.since) >= heldFor
		var keptAggs []*limitedAgg
		var keptRecs []*store.AuditRecord
		stored, lost := 0, 0
		for i, rec := range recs {
			switch {
			case rec.ID != 0:
				stored++
				if i < len(aggs) {
					a.emit(h.t.Key, rec) // a call's record was mirrored when decided
				}
			case giveUp:
				lost++
				if i < len(aggs) {
					a.emit(h.t.Key, rec)
				}
			case i < len(aggs):
				keptAggs = append(keptAggs, aggs[i])
			default:
				keptRecs = append(keptRecs, rec)
			}
		}
		if lost > 0 {
			a.log.Error("audit: records kept since they could not be stored are lost", "tenant", h.t.Key, "lost", lost, "of", len(recs),
				"kept_since", h.since.UTC().Format(time.RFC3339), "stopping", turn.final, "error", err)
		}
		if stored > 0 && len(keptAggs)+len(keptRecs) == 0 {
			a.log.Info("audit: records kept since they could not be stored are stored now", "tenant", h.t.Key, "records", stored,
				"kept_since", h.since.UTC().Format(time.RFC3339))
		}
		if stored > 0 {
			a.mu.Lock()
			a.markDirty(h.t, stored, false)
			a.mu.Unlock()
		}
		if len(keptAggs)+len(keptRecs) > 0 {
			a.keepAgain(h, keptRecs, keptAggs, now.Add(heldRetry))
		}
	}
}

// keepAgain puts what is left of h (recs, aggs) back among the kept
// records, to be tried at next, merged with any kept for its tenant since
// it was taken out (the older time counts).
func (a *auditor) keepAgain(h *heldTenant, recs []*store.AuditRecord, aggs []*limitedAgg, next time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.holdLocked(h.t, recs, aggs, time.Now()) {
		a.log.Error("audit: records kept since they could not be stored are lost: too many kept", "tenant", h.t.Key, "lost", len(recs), "limit", maxHeldRecords)
	}
	nh := a.held[h.t.ID]
	if nh.since.After(h.since) {
		nh.since = h.since
	}
	nh.next = next
}
