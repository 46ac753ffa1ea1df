package mcp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
	"github.com/gatehouse-mcp/gatehouse/tenancy/anomaly"
)

// Anomaly alerts (issue 16 §4; the model is tenancy/anomaly, the
// operator's view docs/alerts.md).
//
// Where detection runs, and what it costs: not on a call's path. One
// replica at a time (a lease in gatehouse.anomaly_pass) makes a pass every
// AlertOptions.Interval (60 s) over the tenants whose audit chain grew
// since its last pass (one control-schema query comparing
// gatehouse.audit_heads with gatehouse.anomaly_cursors). Per such tenant,
// a transaction reads the new chained records (by chain_seq, an index),
// the states of the principals in them, writes the states back, any
// alerts, and the cursor's advance; tenants with at most alertGroupRecords
// new records share it with others of their control lane
// (store.DetectAnomaliesTenants: at 200 tenants of 10 records, 0.26–0.31×
// the PostgreSQL CPU per tenant of a transaction each), a tenant with more
// is read alone, alertBatch records a transaction. So a call costs
// the database nothing more, and an idle tenant costs nothing (measured with
// BenchmarkAlertPass: 3–4.3 µs of PostgreSQL CPU per record, 1.2–1.8% of a
// whoami call's, and 13–37 µs of wall time, about 1% of a whoami call's
// time through the handler). The price is latency: an alert
// comes at the first pass after the chainer linked its record (within a
// minute; failed authentications, whose minute must close first, within
// three), and a key is suspended no sooner. Reading committed, chained
// records also means every replica's calls, the console's, the
// rate-limited aggregates and the ALERT records themselves (skipped) are
// seen once, in the order of the chain.
//
// Failed authentications have no tenant: a token of the form gk_<id>_…
// that fails is counted per minute and key id (gatehouse.auth_failures_by_key,
// written with the other failed-authentication aggregates, once a second)
// and the pass hands the closed minutes to the tenant that owns the key.
// They can raise denial_burst alerts and never suspend a key.

// AlertOptions configure anomaly alerts; the zero value is the defaults.
type AlertOptions struct {
	// Off turns detection off (no pass runs; alerts already raised stay
	// readable).
	Off bool
	// Interval between passes (default 60 s).
	Interval time.Duration
	// Settings are the thresholds; nil means anomaly.DefaultSettings().
	Settings *anomaly.Settings
	// Suspend lists the kinds of alert that revoke the API key that caused
	// them. Only kinds for which anomaly.Kind.Suspendable is true are
	// accepted: New refuses others.
	Suspend []anomaly.Kind
}

// alertBatch bounds the records one transaction of the pass reads.
const alertBatch = 2000

// alertGroupRecords is the most new records a tenant may have to be read
// with others in one transaction (store.DetectAnomaliesTenants), and what
// such a transaction reads of each; alertGroupChunk is the most tenants
// handed to one such call (the lease is renewed between calls). Calls
// spread over 2,000 tenants leave most with a few dozen records a minute.
const (
	alertGroupRecords = 200
	alertGroupChunk   = 512
)

// alertRecords returns the ALERT records of out's alerts (for report).
func alertRecords(out store.AnomalyOutput) []*store.AuditRecord {
	recs := make([]*store.AuditRecord, len(out.Alerts))
	for i, a := range out.Alerts {
		recs[i] = a.Record
	}
	return recs
}

// alertHistoryIdle: a tenant the detector has never read whose chain has
// not grown for this long starts at its head (its old records are not
// read); others start a batch back, to learn from.
const alertHistoryIdle = 7 * 24 * time.Hour

// alertStale: records older than this when the pass reads them (after an
// outage, or the first pass over an old tenant) teach, but raise no alert.
const alertStale = 24 * time.Hour

type detector struct {
	s       *Server
	set     anomaly.Settings
	suspend map[anomaly.Kind]bool
	every   time.Duration
	holder  string
	now     func() time.Time
	// detectTenants reads tenants many to a transaction: the store's
	// DetectAnomaliesTenants (tests watch which tenants it is given).
	detectTenants func(ctx context.Context, in []store.DetectInput, limit int, fn func(int, store.AnomalyInput) (store.AnomalyOutput, error)) []store.DetectResult

	raised    *prometheus.CounterVec
	suspended *prometheus.CounterVec
	lastPrune time.Time

	// failing are the tenants whose last read failed, by id: read alone
	// until one succeeds, so that a broken tenant does not make its whole
	// group's transaction fail, and be read again one tenant at a time, on
	// every pass (as the chainer does with its failing tenants).
	mu      sync.Mutex
	failing map[string]bool
	// carry are failed authentications naming a tenant's keys that a
	// pass read but could not apply (the tenant's read failed, e.g. its
	// audit log locked), by tenant id: the next pass applies them. The
	// pass still moves the failures' cursor on: held back for one
	// failing tenant, every other tenant's failures were read again at
	// each pass and counted again (false denial_burst alerts). Kept in
	// memory: a replica that takes the lease over does not have them.
	carry map[string][]store.KeyFailure
}

func newDetector(s *Server, o *AlertOptions) (*detector, error) {
	if o == nil {
		o = &AlertOptions{}
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	d := &detector{s: s, set: anomaly.DefaultSettings(), suspend: map[anomaly.Kind]bool{}, every: o.Interval,
		holder: hex.EncodeToString(id[:]), now: time.Now, failing: map[string]bool{}, detectTenants: s.db.DetectAnomaliesTenants}
	if o.Settings != nil {
		d.set = *o.Settings
	}
	if d.every <= 0 {
		d.every = time.Minute
	}
	for _, k := range o.Suspend {
		if !k.Suspendable() {
			return nil, fmt.Errorf("mcp: alerts of kind %s cannot suspend a key (only new_network, volume, off_hours_admin: kinds that need the key's successful use)", k)
		}
		d.suspend[k] = true
	}
	d.raised, d.suspended = s.metrics.alerts, s.metrics.suspensions
	for _, k := range anomaly.Kinds {
		d.raised.WithLabelValues(string(k))
		d.suspended.WithLabelValues(string(k))
	}
	return d, nil
}

// run makes a pass every interval until ctx ends, then gives up the lease.
func (d *detector) run(ctx context.Context) {
	t := time.NewTicker(d.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err := d.s.db.ReleaseAnomalyLease(rctx, d.holder); err != nil {
				d.s.log.Warn("alerts: releasing the detector's lease failed; another replica takes it when it expires", "error", err)
			}
			return
		case <-t.C:
			if _, err := d.pass(ctx); err != nil && ctx.Err() == nil {
				d.s.log.Warn("alerts: detector pass failed; will retry", "error", err)
			}
		}
	}
}

// pass reads what is new in every tenant, if this replica holds the lease,
// and returns the alerts it wrote.
func (d *detector) pass(ctx context.Context) ([]*store.StoredAlert, error) {
	db := d.s.db
	ok, failuresFrom, err := db.TakeAnomalyLease(ctx, d.holder, 3*d.every)
	if err == nil && !ok {
		// Another replica detects now, and moves the cursor on: what this
		// one carried would be stale if it took the lease back.
		d.mu.Lock()
		d.carry = nil
		d.mu.Unlock()
	}
	if err != nil || !ok {
		return nil, err
	}
	// Failed authentications naming keys: the minutes every replica has
	// flushed (they flush each second).
	until := d.now().Add(-2 * time.Minute).Truncate(time.Minute)
	byTenant := map[string][]store.KeyFailure{}
	var ids []string
	if until.After(failuresFrom) {
		fs, err := db.KeyFailures(ctx, failuresFrom, until)
		if err != nil {
			return nil, err
		}
		for _, f := range fs {
			if byTenant[f.TenantID] == nil {
				ids = append(ids, f.TenantID)
			}
			byTenant[f.TenantID] = append(byTenant[f.TenantID], f)
		}
	}
	if n, err := db.SkipIdleAuditHistory(ctx, alertHistoryIdle); err != nil {
		return nil, err
	} else if n > 0 {
		d.s.log.Info("alerts: tenants idle for a week start at their chain's head", "tenants", n)
	}
	d.mu.Lock()
	carried := d.carry
	d.carry = nil
	d.mu.Unlock()
	for id, fs := range carried {
		if byTenant[id] == nil {
			ids = append(ids, id)
		}
		byTenant[id] = append(byTenant[id], fs...)
	}
	tcs, err := db.TenantsWithNewAudit(ctx, ids)
	if err != nil {
		d.keepCarry(carried)
		return nil, err
	}
	renewed := d.now()
	// keep renews the lease when the pass has run for an interval, and
	// says whether the pass may go on: a long pass (the first after an
	// upgrade) keeps its lease, and stops if another replica has taken it
	// meanwhile.
	keep := func() (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if d.now().Sub(renewed) <= d.every {
			return true, nil
		}
		ok, _, err := db.TakeAnomalyLease(ctx, d.holder, 3*d.every)
		renewed = d.now()
		return err == nil && ok, err
	}
	// What was carried is dropped when the pass stops early or the cursor
	// cannot be moved on: some tenants may have applied theirs, and
	// counting a failure twice raises false alerts, while losing one
	// (rarely) delays one. The minutes not marked read are read again.
	all, errs, unapplied, ok, err := d.read(ctx, tcs, byTenant, keep)
	if !ok {
		return all, err
	}
	if until.After(failuresFrom) {
		if err := db.SetKeyFailuresRead(ctx, until); err != nil {
			errs = append(errs, err)
			unapplied = nil
		}
	}
	d.keepCarry(unapplied)
	if d.now().Sub(d.lastPrune) > time.Hour {
		if err := db.ForgetAnomalyState(ctx); err != nil {
			errs = append(errs, err)
		} else {
			d.lastPrune = d.now()
		}
	}
	if len(errs) > 0 {
		return all, fmt.Errorf("%d of %d tenants: %w", len(errs), len(tcs), errs[0])
	}
	return all, nil
}

// keepCarry adds fs (failed authentications not applied yet, by tenant
// id) to those the next pass applies.
func (d *detector) keepCarry(fs map[string][]store.KeyFailure) {
	if len(fs) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.carry == nil {
		d.carry = map[string][]store.KeyFailure{}
	}
	for id, f := range fs {
		d.carry[id] = append(d.carry[id], f...)
	}
}

// read reads the new records of tcs (with the failed authentications
// naming their keys, byTenant) and writes their alerts, states and
// cursors: tenants with few new records (most of them when calls spread
// over many tenants) many to a transaction, those with more, those the
// first read left with more, and those whose last read failed (failing)
// alone, batch after batch. keep says before each transaction whether the
// pass may go on. It returns the alerts written, the errors (one per
// tenant that failed), the failed authentications of the tenants whose
// read failed before applying them (unapplied, by tenant id), and ok false
// with keep's error (nil if the lease was lost) when keep stopped it.
func (d *detector) read(ctx context.Context, tcs []store.TenantCursor, byTenant map[string][]store.KeyFailure, keep func() (bool, error)) (all []*store.StoredAlert, errs []error, unapplied map[string][]store.KeyFailure, ok bool, err error) {
	unapplied = map[string][]store.KeyFailure{}
	db := d.s.db
	type left struct {
		tc    store.TenantCursor
		fails []store.KeyFailure
	}
	var alone []left
	var grouped []store.TenantCursor
	d.mu.Lock()
	for _, tc := range tcs {
		if tc.Head-tc.From <= alertGroupRecords && !d.failing[tc.Tenant.ID] {
			grouped = append(grouped, tc)
		} else {
			alone = append(alone, left{tc, byTenant[tc.Tenant.ID]})
		}
	}
	d.mu.Unlock()
	failed := func(t *tenancy.Tenant, err error) {
		d.mu.Lock()
		switch {
		case err == nil:
			delete(d.failing, t.ID)
		case ctx.Err() == nil: // not the pass cut short
			d.failing[t.ID] = true
		}
		d.mu.Unlock()
	}
	for chunk := range slices.Chunk(grouped, alertGroupChunk) {
		if ok, err := keep(); !ok {
			return all, errs, unapplied, false, err
		}
		in := make([]store.DetectInput, len(chunk))
		for i, tc := range chunk {
			in[i] = store.DetectInput{Tenant: tc.Tenant, From: tc.From, Failures: byTenant[tc.Tenant.ID]}
		}
		recs := make([][]*store.AuditRecord, len(chunk))
		results := d.detectTenants(ctx, in, alertGroupRecords, func(i int, a store.AnomalyInput) (store.AnomalyOutput, error) {
			out := d.decide(in[i].Tenant, a)
			recs[i] = alertRecords(out)
			return out, nil
		})
		for i, r := range results {
			failed(chunk[i].Tenant, r.Err)
			if r.Err != nil {
				errs = append(errs, r.Err)
				if fs := in[i].Failures; len(fs) > 0 {
					unapplied[chunk[i].Tenant.ID] = fs
				}
				continue
			}
			d.report(chunk[i].Tenant, r.Written, recs[i])
			all = append(all, r.Written...)
			if r.N >= alertGroupRecords {
				alone = append(alone, left{tc: chunk[i]}) // its failures were read
			}
		}
	}
	for _, l := range alone {
		if ok, err := keep(); !ok {
			return all, errs, unapplied, false, err
		}
		fails := l.fails
		for {
			var recs []*store.AuditRecord
			n, written, err := db.DetectAnomalies(ctx, l.tc.Tenant, l.tc.From, alertBatch, fails, func(in store.AnomalyInput) (store.AnomalyOutput, error) {
				out := d.decide(l.tc.Tenant, in)
				recs = alertRecords(out)
				return out, nil
			})
			failed(l.tc.Tenant, err)
			if err != nil {
				errs = append(errs, err)
				if len(fails) > 0 {
					unapplied[l.tc.Tenant.ID] = fails
				}
				break
			}
			d.report(l.tc.Tenant, written, recs)
			all = append(all, written...)
			fails = nil
			if n < alertBatch {
				break
			}
		}
	}
	return all, errs, unapplied, true, nil
}

// report counts, logs and mirrors the alerts written for t, and has the
// chainer link their records.
func (d *detector) report(t *tenancy.Tenant, written []*store.StoredAlert, recs []*store.AuditRecord) {
	if len(written) == 0 {
		return
	}
	for _, a := range written {
		d.raised.WithLabelValues(a.Kind).Inc()
		if a.Suspended {
			d.suspended.WithLabelValues(a.Kind).Inc()
		}
		d.s.log.Warn("anomaly alert", "tenant", t.Key, "kind", a.Kind, "subject", a.Subject, "api_key_id", a.APIKeyID,
			"summary", a.Summary, "key_revoked", a.Suspended, "alert_id", a.ID)
	}
	for _, r := range recs {
		d.s.audit.emit(t.Key, r)
	}
	d.s.audit.mu.Lock()
	d.s.audit.markDirty(t, len(recs), true)
	d.s.audit.mu.Unlock()
}

// who is what an alert's record says of its principal, from its records.
type who struct {
	email, provider, keyID string
	person                 bool
}

// decide runs one tenant's batch through the model.
func (d *detector) decide(t *tenancy.Tenant, in store.AnomalyInput) store.AnomalyOutput {
	type item struct {
		subject string
		ev      anomaly.Event
		req     string
	}
	var items []item
	whos := map[string]who{}
	for _, r := range in.Records {
		o, ok := outcomeOf(r.Decision)
		if !ok {
			continue
		}
		if r.Decision == store.Denied && r.Reason == networkDeniedReason {
			// Refused for its address (networks.go): not the key's use,
			// since whoever holds a copy elsewhere sends these. Like a
			// failed authentication naming the key, it counts towards a
			// denial burst, never towards volume or a suspension.
			o = anomaly.AuthFailed
		}
		w := who{email: r.Email, provider: r.Provider, keyID: r.APIKeyID,
			person: r.Provider != "apikey" && r.Provider != "mtls"}
		whos[r.Subject] = w
		items = append(items, item{r.Subject, anomaly.Event{At: r.At, Outcome: o, Tool: r.Tool, Admin: d.s.isAdminTool(r.Tool),
			ClientIP: r.ClientIP, Count: r.Count, Ref: "audit record " + strconv.FormatInt(r.ID, 10), Person: w.person}, r.RequestID})
	}
	for _, f := range in.Failures {
		s := "apikey:" + f.APIKeyID
		if _, ok := whos[s]; !ok {
			whos[s] = who{provider: "apikey", keyID: f.APIKeyID}
		}
		items = append(items, item{s, anomaly.Event{At: f.Last, Outcome: anomaly.AuthFailed, Count: int(f.Count),
			Ref: "failed authentications naming the key in the minute from " + f.Window.UTC().Format(time.RFC3339)}, ""})
	}
	slices.SortStableFunc(items, func(a, b item) int { return a.ev.At.Compare(b.ev.At) })

	states := map[string]*anomaly.State{}
	var out store.AnomalyOutput
	stale := d.now().Add(-alertStale)
	for _, it := range items {
		st := states[it.subject]
		if st == nil {
			st = &anomaly.State{}
			if b, ok := in.States[it.subject]; ok {
				if err := json.Unmarshal(b, st); err != nil {
					d.s.log.Warn("alerts: a principal's state could not be read; starting it afresh", "tenant", t.Key, "subject", it.subject, "error", err)
					*st = anomaly.State{}
				}
			}
			states[it.subject] = st
		}
		for _, a := range st.Observe(it.ev, d.set) {
			if a.At.Before(stale) {
				continue
			}
			out.Alerts = append(out.Alerts, d.alert(it.subject, whos[it.subject], it.ev, it.req, a))
		}
	}
	out.States = make(map[string][]byte, len(states))
	for s, st := range states {
		b, err := json.Marshal(st)
		if err != nil {
			continue // a State always marshals
		}
		out.States[s] = b
	}
	return out
}

// alert turns the model's alert into what is stored: an ALERT record whose
// args_digest digests the evidence, and whether it revokes the key.
func (d *detector) alert(subject string, w who, ev anomaly.Event, req string, a anomaly.Alert) *store.NewAlert {
	a.Evidence["kind"], a.Evidence["subject"] = string(a.Kind), subject
	evidence, _ := json.Marshal(a.Evidence)
	rec := &store.AuditRecord{RequestID: req, Tool: a.Tool, Subject: subject, Email: w.email, Provider: w.provider, APIKeyID: w.keyID,
		ClientIP: a.ClientIP, Reason: string(a.Kind) + ": " + a.Summary, ArgsDigest: d.s.audit.key.Digest(evidence)}
	// Never on a failed authentication's account, whatever the settings:
	// anyone can name a key id.
	suspend := d.suspend[a.Kind] && a.Kind.Suspendable() && ev.Outcome != anomaly.AuthFailed && w.keyID != ""
	return &store.NewAlert{Record: rec, Kind: string(a.Kind), Summary: a.Summary, Evidence: evidence, Suspend: suspend}
}

// outcomeOf maps an audit decision to the model's outcome; ALERT records
// (and any unknown decision) are not observations.
func outcomeOf(decision string) (anomaly.Outcome, bool) {
	switch decision {
	case store.Allowed, store.Failed:
		return anomaly.Success, true
	case store.Denied:
		return anomaly.Denied, true
	case store.RateLimited:
		return anomaly.Limited, true
	}
	return 0, false
}

// isAdminTool reports whether tool needs the mcp:admin scope (under the
// policy in force): its calls are admin actions, through MCP or the
// console.
func (s *Server) isAdminTool(tool string) bool {
	t := s.tools[tool]
	return t != nil && t.Scope == identity.ScopeAdmin
}

// DetectAnomalies runs one detector pass now (the background loop runs
// one every AlertOptions.Interval) and returns the alerts it raised; it
// does nothing when another replica holds the detector's lease, or when
// alerts are off.
func (s *Server) DetectAnomalies(ctx context.Context) ([]*store.StoredAlert, error) {
	if s.alerts == nil {
		return nil, nil
	}
	return s.alerts.pass(ctx)
}
