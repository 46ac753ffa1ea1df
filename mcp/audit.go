package mcp

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// auditor records every decision: tool calls in the tenant's audit log (in
// the call's own transaction, see Server.call); rate-limited requests,
// requests from a network their credential may not be used from, requests
// refused because their tenant's schema could not be brought up to date,
// and failed authentications aggregated in memory and written once a
// second, so a flood costs a row per source and second, not a row per
// request. A tenant's record that cannot be stored when it is due (the
// database down, the audit log locked) is kept and tried again
// (audit_held.go), not dropped. Every record is also
// one JSON line on the audit log (stdout), which log drains keep outside
// the database. A background loop chains new records.
type auditor struct {
	db  *store.DB
	key store.AuditKey
	out *slog.Logger // one JSON line per record
	log *slog.Logger // operational problems

	group *groupCommitter // records of calls that change nothing
	// stopWait bounds a flush's writes of aggregates, and the last
	// flush's chaining (flushStopWait; tests shorten it).
	stopWait time.Duration

	mu      sync.Mutex
	dirty   map[string]*dirtyTenant // tenants with unchained records, by id
	failing map[string]bool         // tenants whose chaining failed last time, by id (chained alone)
	locked  map[string]bool         // those of them whose audit log was locked by another session (logged once)
	limited map[limitedKey]*limitedAgg
	failed  map[store.AuthFailure]*store.AuthFailure // keyed by window, IP, reason (counts zero)
	byKey   map[keyFailure]*store.KeyFailure         // failed authentications naming a key id, per minute
	calls   map[string]int64                         // tool calls per tenant id since the last flush (operators' counter)
	held    map[string]*heldTenant                   // records that could not be stored yet, by tenant id (audit_held.go)
	heldN   int                                      // entries (calls' records, aggregates) in held, and out of it in a retry
	// stopping is set before the last flush: what it cannot store is lost
	// (logged), not kept.
	stopping atomic.Bool
}

// limitedKey groups refusals counted in memory: by tenant, principal,
// tool and decision (rate-limited, denied, failed); network refusals
// (networks.go) also by client address, which their record names.
type limitedKey struct{ tenantID, subject, tool, deniedIP, decision string }

type keyFailure struct {
	window time.Time
	id     string
}

// dirtyTenant is a tenant with records to chain: how many this process
// wrote since it was last chained, and since when.
type dirtyTenant struct {
	t       *tenancy.Tenant
	records int
	since   time.Time // zero: chain at the next flush
}

// markDirty notes n new records in t's audit log (now: chain them at the
// next flush, whatever their number). The caller holds a.mu.
func (a *auditor) markDirty(t *tenancy.Tenant, n int, now bool) {
	d := a.dirty[t.ID]
	if d == nil {
		d = &dirtyTenant{t: t, since: time.Now()}
		a.dirty[t.ID] = d
	}
	d.records += n
	if now {
		d.since = time.Time{}
	}
}

type limitedAgg struct {
	key    limitedKey
	tenant *tenancy.Tenant
	rec    store.AuditRecord
}

func newAuditor(db *store.DB, key store.AuditKey, out, log *slog.Logger) *auditor {
	return &auditor{db: db, key: key, out: out, log: log, stopWait: flushStopWait, group: &groupCommitter{db: db, log: log, wake: make(chan struct{}, 1)}, dirty: map[string]*dirtyTenant{}, failing: map[string]bool{}, locked: map[string]bool{},
		limited: map[limitedKey]*limitedAgg{}, failed: map[store.AuthFailure]*store.AuthFailure{}, byKey: map[keyFailure]*store.KeyFailure{},
		calls: map[string]int64{}, held: map[string]*heldTenant{}}
}

// base is the record of a call by c: who, what, from where, a digest of
// the arguments (never the arguments), computed over the bytes the caller
// sent. Its text is cleaned when it is stored (store.CleanText).
func (a *auditor) base(c *Caller, tool string, args []byte) *store.AuditRecord {
	r := &store.AuditRecord{
		RequestID: c.RequestID, Tool: tool, Subject: c.Principal.Subject, Email: c.Principal.Email,
		Provider: c.Principal.Provider, APIKeyID: c.Principal.APIKeyID, ClientIP: c.ClientIP, UserAgent: c.UserAgent, Via: c.Via,
	}
	if len(args) > 0 {
		r.ArgsDigest = a.key.Digest(args)
	}
	return r
}

// commitAudit writes the record of c's call, which changed nothing,
// group-committed with others (see groupCommitter), and returns once it is
// durable: only then may the call answer. The call holds no connection
// while it waits, so it gives its admission slot to the next call first
// (admitter.yield); it does no database work of its own afterwards, except
// writing its record alone if the group commit failed, which happens on
// the control lanes (store.DB.InsertAuditRecord), outside admission's
// bounds anyway.
func (s *Server) commitAudit(c *Caller, r *store.AuditRecord) error {
	if c.slot != nil {
		if done := s.admit.yield(c.Tenant.ID, c.slot); done != nil {
			c.slot = nil
			defer done()
			return s.audit.group.write(c.Tenant, r, false)
		}
		err := s.audit.group.write(c.Tenant, r, true)
		// Committed: its database work done, the call gives its slot back
		// now (as a call that yielded did), and only then leaves the
		// writer's count of calls holding slots, so that the writer never
		// takes it for a call whose record is still to come.
		release := c.slot
		c.slot = nil
		release()
		s.audit.group.committed()
		return err
	}
	return s.audit.group.write(c.Tenant, r, false)
}

// written notes a record committed in t's audit log and mirrors it.
func (a *auditor) written(t *tenancy.Tenant, r *store.AuditRecord) {
	a.mu.Lock()
	a.markDirty(t, 1, false)
	a.calls[t.ID] += int64(max(r.Count, 1))
	a.mu.Unlock()
	a.emit(t.Key, r)
}

// emit writes one JSON line for a record (slog's JSON escaping keeps every
// value on its line: no log injection through user agents or reasons).
func (a *auditor) emit(tenant string, r *store.AuditRecord) {
	a.out.LogAttrs(context.Background(), slog.LevelInfo, "audit",
		slog.String("tenant", tenant), slog.String("decision", r.Decision), slog.String("tool", r.Tool),
		slog.String("subject", r.Subject), slog.String("email", r.Email), slog.String("provider", r.Provider),
		slog.String("api_key_id", r.APIKeyID), slog.String("client_ip", r.ClientIP), slog.String("user_agent", r.UserAgent),
		slog.String("reason", r.Reason), slog.String("args_digest", r.ArgsDigest), slog.String("request_id", r.RequestID),
		slog.Int("count", r.Count), slog.Int64("id", r.ID))
}

// rateLimited counts a refused request; flush writes the counts.
func (a *auditor) rateLimited(c *Caller, tool, reason string) {
	a.refused(c, tool, store.RateLimited, reason, "")
}

// networkDenied counts a request refused because its credential may not
// be used from its client address: one DENIED record per tenant,
// principal, tool and address each flush, with the count.
func (a *auditor) networkDenied(c *Caller, tool, reason string) {
	a.refused(c, tool, store.Denied, reason, c.ClientIP)
}

// refused counts a request refused before it ran, in one record per
// tenant, principal, tool (and deniedIP, when not empty) each flush.
func (a *auditor) refused(c *Caller, tool, decision, reason, deniedIP string) {
	k := limitedKey{c.Tenant.ID, c.Principal.Subject, tool, deniedIP, decision}
	a.mu.Lock()
	defer a.mu.Unlock()
	agg := a.limited[k]
	if agg == nil {
		rec := a.base(c, tool, nil)
		rec.Decision, rec.Reason = decision, reason
		agg = &limitedAgg{key: k, tenant: c.Tenant, rec: *rec}
		a.limited[k] = agg
	}
	agg.rec.Count++
}

// authFailed counts a refused credential (no tenant is known). keyID is
// the API key id the credential named (gk_<id>_…), if any: the anomaly
// detector hands those counts to the key's tenant (see alerts.go).
func (a *auditor) authFailed(ip, reason, userAgent, keyID string) {
	now := time.Now()
	ip, reason = store.CleanText(ip, 128), store.CleanText(reason, 1024)
	k := store.AuthFailure{Window: now.Truncate(time.Minute), ClientIP: ip, Reason: reason}
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.failed[k]
	if f == nil {
		f = &store.AuthFailure{Window: k.Window, ClientIP: ip, Reason: reason, UserAgent: store.CleanText(userAgent, 256), First: now}
		a.failed[k] = f
	}
	f.Count++
	f.Last = now
	if keyID != "" {
		kk := keyFailure{k.Window, keyID}
		kf := a.byKey[kk]
		if kf == nil {
			kf = &store.KeyFailure{APIKeyID: keyID, Window: k.Window, First: now}
			a.byKey[kk] = kf
		}
		kf.Count++
		kf.Last = now
	}
}

// flush writes the failed authentications, the aggregates and the records
// kept for a later try, and chains the tenants with new records that are
// due (see chainDue), or every tenant with new records when all is set.
//
// The failed authentications come first: one statement in the control
// schema, which no tenant's lock holds up, and which is not kept when it
// fails. The aggregates and kept records follow (audit_held.go): each
// tenant's write bounded by heldWait, all of them by half of stopWait, and
// cut short with ctx (a process stopping), what they cannot store being
// kept for a later try, or for the last flush. In the last flush (the
// process stopping) each tenant's write is still bounded by heldWait, and
// all of them by stopWait, so that one locked audit log costs the others
// nothing and a database that hangs never holds a stopping process up;
// what the last flush cannot store is logged as lost (and each record is
// on the audit log's JSON lines anyway). Chaining stops with ctx; the last
// flush chains what is left (see interrupted).
func (a *auditor) flush(ctx context.Context, all bool) {
	now := time.Now()
	write, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.stopWait)
	defer cancel()
	a.mu.Lock()
	limited, failed, calls, byKey := a.limited, a.failed, a.calls, a.byKey
	a.limited, a.failed, a.calls = map[limitedKey]*limitedAgg{}, map[store.AuthFailure]*store.AuthFailure{}, map[string]int64{}
	a.byKey = map[keyFailure]*store.KeyFailure{}
	a.mu.Unlock()
	for _, agg := range limited {
		calls[agg.tenant.ID] += int64(agg.rec.Count)
	}
	if err := a.db.CountCalls(write, calls, time.Now()); err != nil {
		a.log.Warn("audit: counting calls per tenant failed (the operators' 24-hour figure misses them)", "error", err)
	}

	if len(failed) > 0 {
		fs := make([]store.AuthFailure, 0, len(failed))
		for _, f := range failed {
			fs = append(fs, *f)
			a.out.LogAttrs(write, slog.LevelInfo, "audit", slog.String("decision", store.AuthFailed), slog.String("client_ip", f.ClientIP),
				slog.String("reason", f.Reason), slog.String("user_agent", f.UserAgent), slog.Int64("count", f.Count))
		}
		if err := a.db.RecordAuthFailures(write, fs); err != nil {
			a.log.Error("audit: writing failed authentications failed", "error", err)
		}
	}
	if len(byKey) > 0 {
		ks := make([]store.KeyFailure, 0, len(byKey))
		for _, k := range byKey {
			ks = append(ks, *k)
		}
		if err := a.db.RecordKeyFailures(write, ks); err != nil {
			a.log.Warn("audit: counting failed authentications per key failed (the anomaly detector misses them)", "error", err)
		}
	}
	// One transaction per tenant for its aggregates; a batch that fails is
	// written record by record (store.InsertAuditRecords), so one record
	// never takes the others with it. What cannot be stored is kept for a
	// later try (audit_held.go), with the records of tenants that have
	// some kept already.
	turn := newWriteTurn(a.stopping.Load() || ctx.Err() != nil, a.stopWait/2)
	byTenant := map[string]*heldTenant{}
	for _, agg := range a.mergeHeld(limited, now) {
		h := byTenant[agg.tenant.ID]
		if h == nil {
			h = &heldTenant{t: agg.tenant, aggs: map[limitedKey]*limitedAgg{}, since: now}
			byTenant[agg.tenant.ID] = h
		}
		h.aggs[agg.key] = agg
	}
	for _, h := range byTenant {
		a.tryWrite(ctx, write, turn, h, false, now)
	}
	a.retryHeld(ctx, write, turn, all, now)
	a.mu.Lock()
	dirty := make([]*tenancy.Tenant, 0, len(a.dirty))
	for id, d := range a.dirty {
		if all || chainDue(d, now) {
			dirty = append(dirty, d.t)
			delete(a.dirty, id)
		}
	}
	a.mu.Unlock()
	a.chain(ctx, dirty)
}

// A tenant's new records are chained at the first flush once this process
// has written chainEager of them, or chainDelay after the first: a busy
// tenant every second, a quiet one every few seconds with several records
// at once. Most of a pass's cost is per tenant, whatever it finds (its
// statements planned on its audit log, BenchmarkChainAuditTenants), and
// calls spread over 2,000 tenants left ~600 of them with about one record
// each second. The tenants the sweep finds (records an earlier process
// left), ALERT records and tenants whose chaining failed are chained at
// the next flush; a process that stops chains everything first, and one
// that is killed leaves its tenants marked for the next start's sweep.
const (
	chainEager = 16
	chainDelay = 5 * time.Second
)

// chainDue says whether d's records are to be chained at a flush at now.
func chainDue(d *dirtyTenant, now time.Time) bool {
	return d.records >= chainEager || d.since.IsZero() || now.Sub(d.since) >= chainDelay
}

// chain links the new records of the dirty tenants onto their chains,
// many tenants a transaction (store.ChainAuditTenants), again for those
// that had more than one transaction's share, and keeps a tenant whose
// chaining failed for the next flush. A tenant whose chaining failed is
// chained alone until it succeeds again: in a group it would fail the
// group's transaction on every pass, and the group's other tenants be
// chained one at a time after it.
func (a *auditor) chain(ctx context.Context, ts []*tenancy.Tenant) {
	for len(ts) > 0 {
		var grouped, alone []*tenancy.Tenant
		a.mu.Lock()
		for _, t := range ts {
			if a.failing[t.ID] {
				alone = append(alone, t)
			} else {
				grouped = append(grouped, t)
			}
		}
		a.mu.Unlock()
		results := a.db.ChainAuditTenants(ctx, grouped, a.key, chainBatch, store.ChainLimits{})
		for _, t := range alone {
			results = append(results, a.db.ChainAuditTenants(ctx, []*tenancy.Tenant{t}, a.key, chainBatch, store.ChainLimits{})...)
		}
		if ctx.Err() != nil {
			a.interrupted(results)
			return
		}
		var more []*tenancy.Tenant
		for _, r := range results {
			locked := errors.Is(r.Err, store.ErrAuditLogBusy)
			a.mu.Lock()
			wasLocked := a.locked[r.Tenant.ID]
			if r.Err != nil {
				a.failing[r.Tenant.ID] = true
				a.markDirty(r.Tenant, 0, true)
			} else {
				delete(a.failing, r.Tenant.ID)
			}
			if locked {
				a.locked[r.Tenant.ID] = true
			} else {
				delete(a.locked, r.Tenant.ID)
			}
			a.mu.Unlock()
			switch {
			case locked && !wasLocked: // once per lock, not at every flush while it lasts
				a.log.Warn("audit: the tenant's audit log is locked by another session (a migration or maintenance); its records are chained once it is free",
					"tenant", r.Tenant.Key, "error", r.Err)
			case locked:
			case r.Err != nil:
				a.log.Error("audit: chaining failed; will retry", "tenant", r.Tenant.Key, "error", r.Err)
			case r.More:
				more = append(more, r.Tenant)
			}
			if wasLocked && r.Err == nil {
				a.log.Info("audit: the tenant's audit log is free again; its records are chained", "tenant", r.Tenant.Key)
			}
		}
		ts = more
	}
}

// interrupted keeps the tenants of a pass whose context ended (the process
// is stopping) for the next flush, the last one, which chains them in
// groups: their errors are the context's, not their audit logs', so they
// are neither logged as failures nor chained alone from then on. (At every
// stop under load, the pass in flight had logged an ERROR "chaining
// failed; will retry" for each of its tenants, hundreds of them, and the
// last flush chained those tenants one transaction each.) A tenant whose
// chaining fails for a reason of its own fails again in the last flush,
// which logs it.
func (a *auditor) interrupted(results []store.ChainResult) {
	n := 0
	a.mu.Lock()
	for _, r := range results {
		if r.Err != nil || r.More {
			a.markDirty(r.Tenant, 0, true)
			n++
		}
	}
	a.mu.Unlock()
	if n > 0 {
		a.log.Info("audit: chaining interrupted; what is left is chained by the next flush, or after the next start", "tenants", n)
	}
}

// chainBatch is the most records of one tenant chained in one transaction.
const chainBatch = 1000

// flushStopWait bounds the last flush's chaining, and every flush's writes
// of aggregates: GATEHOUSE_SHUTDOWN_GRACE (25 s) plus this is still within
// the platforms' kill timeouts in deploy/ (30 s). Records the last flush
// leaves unchained stay marked in the control schema, and the next start's
// sweep chains them.
const flushStopWait = 5 * time.Second

// auditSweep is how often the tenants marked as possibly holding unchained
// records are chained again (which also removes the marks of tenants idle
// since; see store.TenantsWithUnchainedAudit).
const auditSweep = 5 * time.Minute

// run flushes every interval until ctx ends, after chaining whatever an
// earlier process left unchained (the tenants marked in the control
// schema, not every tenant), and sweeps the marked tenants every
// auditSweep; a last flush runs on the way out, for at most stopWait.
func (a *auditor) run(ctx context.Context, every time.Duration) {
	a.sweep(ctx)
	t := time.NewTicker(every)
	defer t.Stop()
	s := time.NewTicker(auditSweep)
	defer s.Stop()
	for {
		select {
		case <-ctx.Done():
			last, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.stopWait)
			a.stopping.Store(true)
			a.flush(last, true)
			if last.Err() != nil {
				a.log.Warn("audit: the last flush ran out of time; the records it left unchained are chained after the next start", "limit", a.stopWait.String())
			}
			cancel()
			return
		case <-t.C:
			a.flush(ctx, false)
		case <-s.C:
			a.sweep(ctx)
		}
	}
}

// sweep adds the tenants marked in the control schema to the next flush.
func (a *auditor) sweep(ctx context.Context) {
	ts, err := a.db.TenantsWithUnchainedAudit(ctx)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("audit: listing tenants with unchained records failed; will retry", "error", err)
		}
		return
	}
	a.mu.Lock()
	for _, t := range ts {
		a.markDirty(t, 0, true)
	}
	a.mu.Unlock()
}

// truncate cuts s to at most n bytes, on a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// FlushAudit writes pending aggregates, tries the records kept because
// they could not be stored (audit_held.go), and chains every new record
// now (the background loop writes every second, tries kept records every
// heldRetry, and chains each tenant's records within chainDelay).
func (s *Server) FlushAudit(ctx context.Context) { s.audit.flush(ctx, true) }
