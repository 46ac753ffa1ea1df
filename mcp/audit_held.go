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
// tried again at the flushes that follow, every heldRetry. New refusals of
// a tenant that has records kept join them rather than wait for the lock
// again. A record stored late has the time of its write (at), as an
// aggregated record always has; its request id, decision and reason are
// the call's. Whether a record was stored is decided by its write's
// outcome (store.DB.InsertAuditRecords leaves id 0 on a record it could
// not store, whatever a rolled-back attempt had returned), never by an id
// left from an earlier attempt.
//
// A flush bounds these writes (writeTurn): each tenant's try by heldWait,
// all of them by half the flush's bound (stopWait); and once a write finds
// the database unreachable, the tenants not yet tried keep their records
// for the next flush without a try. So an outage costs a flush one failed
// write, locked audit logs at most half its bound, and the chaining that
// follows waits no longer. The last flush tries every tenant, each within
// heldWait, all within its bound: one locked audit log costs the others
// one second, not their records.
//
// Records are lost only when the process stops with them still kept (the
// last flush tries them once, within its bound), when they have been kept
// for heldFor, or when more than maxHeld records (calls' records and
// aggregates together) are kept at once, the newest then being refused;
// each loss is logged as an error naming the tenant, the count and why
// (lostRecords). Every record is also on the audit JSON lines: a call's
// when it was decided, an aggregate's when it is stored or lost.
const (
	heldRetry = 5 * time.Second
	heldWait  = time.Second
	heldFor   = time.Hour
	maxHeld   = 10_000
)

// heldTenant is one tenant's records kept for a later try.
type heldTenant struct {
	t     *tenancy.Tenant
	recs  []*store.AuditRecord // calls' records, each its own
	aggs  map[limitedKey]*limitedAgg
	since time.Time // when the first of them could not be stored
	next  time.Time // the next try
}

// errNotTried is the error of records left to the next flush without a
// try (see writeTurn).
var errNotTried = errors.New("not tried: the database could not be reached, or the flush ran out of time, before this tenant's turn")

// lostRecords logs the loss of n records of t (why: the process stopping,
// kept too long, too many kept; err: the last write's error, if any).
func (a *auditor) lostRecords(t *tenancy.Tenant, n int, why string, err error) {
	a.log.Error("audit: records lost: they could not be stored", "tenant", t.Key, "lost", n, "why", why, "error", err)
}

// holdLocked keeps records of t that could not be stored; the caller holds
// a.mu. Aggregates join the tenant's kept aggregate of the same key.
// Entries already counted in heldN (put back after a try) are kept
// whatever the bound; new ones only while fewer than maxHeld are kept. It
// returns the calls' records and aggregates refused for the bound.
func (a *auditor) holdLocked(t *tenancy.Tenant, recs []*store.AuditRecord, aggs []*limitedAgg, counted bool, now time.Time) (refused int) {
	h := a.held[t.ID]
	if h == nil {
		h = &heldTenant{t: t, aggs: map[limitedKey]*limitedAgg{}, since: now, next: now.Add(heldRetry)}
		a.held[t.ID] = h
	}
	room := func() bool {
		if counted {
			return true
		}
		if a.heldN >= maxHeld {
			refused++
			return false
		}
		a.heldN++
		return true
	}
	for _, agg := range aggs {
		if old := h.aggs[agg.key]; old != nil {
			old.rec.Count += agg.rec.Count
			if counted {
				a.heldN-- // two counted entries became one
			}
			continue
		}
		if room() {
			h.aggs[agg.key] = agg
		} else {
			a.emit(t.Key, &agg.rec) // its only trace
		}
	}
	for _, r := range recs {
		if room() {
			h.recs = append(h.recs, r)
		}
	}
	if len(h.recs)+len(h.aggs) == 0 {
		delete(a.held, t.ID)
	}
	return refused
}

// hold keeps a call's record that could not be stored (see above); false
// means too many are kept already, and the record is lost.
func (a *auditor) hold(t *tenancy.Tenant, r *store.AuditRecord) bool {
	rec := *r
	rec.ID, rec.At = 0, time.Time{} // an earlier attempt's, rolled back
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.holdLocked(t, []*store.AuditRecord{&rec}, nil, false, time.Now()) == 0
}

// mergeHeld moves the aggregates of tenants that have records kept into
// their kept records (the next try writes them together) and returns the
// others, to be written now.
func (a *auditor) mergeHeld(limited map[limitedKey]*limitedAgg, now time.Time) []*limitedAgg {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*limitedAgg, 0, len(limited))
	lost := map[*tenancy.Tenant]int{}
	for _, agg := range limited {
		if a.held[agg.tenant.ID] != nil {
			if n := a.holdLocked(agg.tenant, nil, []*limitedAgg{agg}, false, now); n > 0 {
				lost[agg.tenant] += n
			}
			continue
		}
		out = append(out, agg)
	}
	for t, n := range lost {
		a.lostRecords(t, n, "too many records kept", nil)
	}
	return out
}

// writeTurn is one flush's budget for the writes of records nobody waits
// for (see above). The last flush (final) tries every tenant within the
// flush's own bound.
type writeTurn struct {
	final bool
	until time.Time // the end of the tries (not final)
	down  bool      // a write found the database unreachable
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

// context bounds one tenant's write: by heldWait and the turn's end, and
// by ctx's own end (a process stopping mid-flush: what the write cannot
// store is kept, for the last flush); in the last flush by heldWait and
// write, the flush's bound, which outlives ctx.
func (w *writeTurn) context(ctx, write context.Context) (context.Context, context.CancelFunc) {
	if w.final {
		return context.WithTimeout(write, heldWait)
	}
	return context.WithDeadline(ctx, minTime(time.Now().Add(heldWait), w.until))
}

// retryHeld tries the kept records of the tenants whose turn has come
// (every one when all or final, and those kept for heldFor, to be given
// up) while turn allows.
func (a *auditor) retryHeld(ctx, write context.Context, turn *writeTurn, all bool, now time.Time) {
	a.mu.Lock()
	var due []*heldTenant
	for id, h := range a.held {
		if all || turn.final || !now.Before(h.next) || now.Sub(h.since) >= heldFor {
			due = append(due, h)
			delete(a.held, id) // still counted in heldN while out
		}
	}
	a.mu.Unlock()
	for _, h := range due {
		a.tryWrite(ctx, write, turn, h, true, now)
	}
}

// tryWrite writes h's records, its aggregates and its calls' records, in
// one try while turn allows, and settles each by the write's outcome:
// stored, it is mirrored on the audit stream (an aggregate; a call's record
// was when decided) and counted for chaining; not stored, it is lost when
// the turn is final or h was kept for heldFor (and said so), else kept for
// the next try. counted says whether h's entries are counted in heldN
// already (taken out of held for this try) or are new (a flush's fresh
// aggregates, whose since is now).
func (a *auditor) tryWrite(ctx, write context.Context, turn *writeTurn, h *heldTenant, counted bool, now time.Time) {
	aggs := make([]*limitedAgg, 0, len(h.aggs))
	recs := make([]*store.AuditRecord, 0, len(h.recs)+len(h.aggs))
	for _, agg := range h.aggs {
		rec := agg.rec
		aggs = append(aggs, agg)
		recs = append(recs, &rec)
	}
	recs = append(recs, h.recs...)
	err := errNotTried
	if !turn.skip() {
		tctx, cancel := turn.context(ctx, write)
		_, err = a.db.InsertAuditRecords(tctx, h.t, recs)
		cancel()
		turn.tried(err)
	}
	why := ""
	switch {
	case turn.final:
		why = "the process is stopping"
	case now.Sub(h.since) >= heldFor:
		why = "kept for " + heldFor.String()
	}
	var keptAggs []*limitedAgg
	var keptRecs []*store.AuditRecord
	stored, lost := 0, 0
	for i, rec := range recs {
		switch {
		case rec.ID != 0:
			stored++
			if i < len(aggs) {
				a.emit(h.t.Key, rec)
			}
		case why != "":
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
	kept := len(keptAggs) + len(keptRecs)
	if lost > 0 {
		a.lostRecords(h.t, lost, why, err)
	}
	if counted && stored > 0 && kept == 0 {
		a.log.Info("audit: records kept since they could not be stored are stored now", "tenant", h.t.Key, "records", stored,
			"kept_since", h.since.UTC().Format(time.RFC3339))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if counted {
		a.heldN -= stored + lost
	}
	if stored > 0 {
		a.markDirty(h.t, stored, false)
	}
	if kept == 0 {
		return
	}
	if !counted && a.held[h.t.ID] == nil {
		a.log.Warn("audit: records could not be stored yet; kept, and tried again shortly", "tenant", h.t.Key, "records", kept, "error", err)
	}
	if n := a.holdLocked(h.t, keptRecs, keptAggs, counted, now); n > 0 {
		a.lostRecords(h.t, n, "too many records kept", err)
	}
	// Merged with records kept meanwhile: the older time counts. Not
	// tried: at the next flush. (None kept: all refused for the bound.)
	nh := a.held[h.t.ID]
	if nh == nil {
		return
	}
	nh.since = minTime(nh.since, h.since)
	nh.next = now.Add(heldRetry)
	if counted && err == errNotTried {
		nh.next = h.next
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
