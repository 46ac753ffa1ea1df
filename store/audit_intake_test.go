package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// intakeRows counts tn's records waiting in the audit intake.
func intakeRows(t *testing.T, db *store.DB, tn *tenancy.Tenant) int {
	t.Helper()
	var n int
	if err := db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM gatehouse.audit_intake WHERE tenant_id = $1", tn.ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// auditRows returns tn's audit log's request ids → how many rows hold
// each, and how many rows are unchained.
func auditRows(t *testing.T, db *store.DB, tn *tenancy.Tenant) (map[string]int, int) {
	t.Helper()
	rows, err := db.Pool().Query(context.Background(), "SELECT request_id, chain_seq IS NULL FROM "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize())
	if err != nil {
		t.Fatal(err)
	}
	ids, unchained := map[string]int{}, 0
	var id string
	var u bool
	if _, err := pgx.ForEachRow(rows, []any{&id, &u}, func() error {
		ids[id]++
		if u {
			unchained++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ids, unchained
}

// chainUntilDone runs chain passes over ts until none says more records
// may be left, failing on any tenant's error (and, with whole set, on a
// tenant chained alone after its group's transaction failed).
func chainUntilDone(t *testing.T, db *store.DB, ts []*tenancy.Tenant, batch int, limits store.ChainLimits, whole bool) {
	t.Helper()
	for pass := 0; ; pass++ {
		more := false
		for _, r := range db.ChainAuditTenants(context.Background(), ts, testKey, batch, limits) {
			if r.Err != nil || whole && r.Group < 0 {
				t.Fatalf("pass %d: %s: %+v", pass, r.Tenant.Key, r)
			}
			more = more || r.More
		}
		if !more {
			return
		}
		if pass > 10000 {
			t.Fatal("the chain passes never end")
		}
	}
}

// mustVerify fails unless tn's chain verifies with want records and
// nothing pending.
func mustVerify(t *testing.T, db *store.DB, tn *tenancy.Tenant, want int) {
	t.Helper()
	rep, err := db.VerifyAudit(context.Background(), tn, testKey)
	if err != nil || !rep.OK() || rep.Verified != want || rep.Pending != 0 {
		t.Fatalf("%s: verify %+v, %v; want %d verified, none pending", tn.Key, rep, err, want)
	}
}

// TestAuditIntake: calls' records are committed into the audit intake, not
// their tenants' audit logs; they count as pending; the chain passes (of
// many tenants, and of one) move them into each audit log already chained,
// after the log's own unchained records, within their batch; the chain
// verifies and every record is there once.
func TestAuditIntake(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	a, b := mustTenant(t, db, "intake-a.example"), mustTenant(t, db, "intake-b.example")
	es := laneEntries("in", []*tenancy.Tenant{a, b}, 5)
	before := time.Now()
	writeNoFallBack(t, db, es)
	last := map[*tenancy.Tenant]int64{}
	for _, e := range es {
		if e.Rec.ID <= last[e.Tenant] || e.Rec.At.Before(before.Add(-time.Minute)) {
			t.Fatalf("a record in the intake: id %d (after %d) at %v; want its id, in the order written, and its time", e.Rec.ID, last[e.Tenant], e.Rec.At)
		}
		last[e.Tenant] = e.Rec.ID
	}
	for _, tn := range []*tenancy.Tenant{a, b} {
		if n := intakeRows(t, db, tn); n != 5 {
			t.Fatalf("%s: %d records in the intake, want 5", tn.Key, n)
		}
		if ids, _ := auditRows(t, db, tn); len(ids) != 0 {
			t.Fatalf("%s: records in the audit log before any chain pass: %v", tn.Key, ids)
		}
		rep, err := db.VerifyAudit(ctx, tn, testKey)
		if err != nil || !rep.OK() || rep.Pending != 5 {
			t.Fatalf("%s: verify %+v, %v; want 5 pending", tn.Key, rep, err)
		}
	}
	listed, err := db.TenantsWithUnchainedAudit(ctx)
	if err != nil || len(listed) != 2 {
		t.Fatalf("tenants to chain after a start: %v, %v; want both (their records are in the intake)", listed, err)
	}

	// A record of a's written straight into its audit log (an operator's
	// action, the fall-back) before the pass: chained in id order with
	// the intake's, so after them.
	direct := &store.AuditRecord{RequestID: "direct", Decision: store.Allowed, Tool: "whoami", Subject: "s"}
	if lost, err := db.InsertAuditRecords(ctx, a, []*store.AuditRecord{direct}); lost != 0 || err != nil {
		t.Fatal(lost, err)
	}
	// Batches of 2: the intake's take is bounded like the log's records,
	// and the direct record, newer than the intake's left, waits for them.
	res := db.ChainAuditTenants(ctx, []*tenancy.Tenant{a, b}, testKey, 2, store.ChainLimits{})
	for _, r := range res {
		if r.Err != nil || r.N != 2 || !r.More {
			t.Fatalf("%s: chained %d (more %v), %v; want 2 and more", r.Tenant.Key, r.N, r.More, r.Err)
		}
	}
	if n := intakeRows(t, db, a); n != 3 {
		t.Fatalf("intake after one pass of 2: %d, want 3", n)
	}
	// One tenant's pass (the fall-back's path) moves them too.
	if n, err := db.ChainAudit(ctx, a, testKey, 2); err != nil || n != 2 {
		t.Fatalf("ChainAudit: %d, %v; want 2", n, err)
	}
	for range 3 {
		for _, r := range db.ChainAuditTenants(ctx, []*tenancy.Tenant{a, b}, testKey, 100, store.ChainLimits{}) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	for _, tn := range []*tenancy.Tenant{a, b} {
		want := 5
		if tn == a {
			want = 6
		}
		if n := intakeRows(t, db, tn); n != 0 {
			t.Errorf("%s: %d records left in the intake", tn.Key, n)
		}
		ids, unchained := auditRows(t, db, tn)
		if len(ids) != want || unchained != 0 {
			t.Errorf("%s: audit log %v (%d unchained); want %d records, all chained", tn.Key, ids, unchained, want)
		}
		for id, n := range ids {
			if n != 1 {
				t.Errorf("%s: %q stored %d times", tn.Key, id, n)
			}
		}
		mustVerify(t, db, tn, want)
	}
	// The records keep the order they were written in, wherever they
	// were written: chain order, ids, times and the writes agree. And each
	// kept the id it was given when written.
	for _, tn := range []*tenancy.Tenant{a, b} {
		rows, _ := db.Pool().Query(ctx, "SELECT request_id FROM "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+" ORDER BY chain_seq")
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"in-0-0", "in-0-1", "in-0-2", "in-0-3", "in-0-4", "direct"}
		if tn == b {
			want = []string{"in-1-0", "in-1-1", "in-1-2", "in-1-3", "in-1-4"}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s's chain: %v; want %v", tn.Key, got, want)
		}
		var ordered bool
		if err := db.Pool().QueryRow(ctx, "SELECT bool_and(ok) FROM (SELECT (id > lag(id) OVER w AND at >= lag(at) OVER w) IS NOT FALSE AS ok FROM "+
			pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+" WINDOW w AS (ORDER BY chain_seq)) x").Scan(&ordered); err != nil || !ordered {
			t.Errorf("%s's ids and times do not follow its chain's order: %v", tn.Key, err)
		}
	}
	for _, e := range es {
		var id string
		if err := db.Pool().QueryRow(ctx, "SELECT request_id FROM "+pgx.Identifier{e.Tenant.Schema, "audit_log"}.Sanitize()+" WHERE id = $1", e.Rec.ID).Scan(&id); err != nil || id != e.Rec.RequestID {
			t.Errorf("%s: id %d holds %q, %v; want %s", e.Tenant.Key, e.Rec.ID, id, err, e.Rec.RequestID)
		}
	}
}

// TestSettleAudit: a reader's settle moves a tenant's intake records into
// its audit log, unchained, where a read in the tenant's transaction finds
// them, and marks the tenant for the chainer, which chains them; a tenant
// with nothing in the intake costs one query and changes nothing. The
// export settles too, and a deleted tenant's intake records go with it.
func TestSettleAudit(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	a, b := mustTenant(t, db, "settle-a.example"), mustTenant(t, db, "settle-b.example")
	writeNoFallBack(t, db, laneEntries("s", []*tenancy.Tenant{a}, 3))
	if err := db.SettleAudit(ctx, b); err != nil { // nothing to move
		t.Fatal(err)
	}
	if err := db.SettleAudit(ctx, a); err != nil {
		t.Fatal(err)
	}
	if n := intakeRows(t, db, a); n != 0 {
		t.Fatalf("%d records left in the intake after the settle", n)
	}
	var found []*store.AuditRecord
	if err := db.WithTenant(ctx, a, func(tx pgx.Tx) error {
		var err error
		found, _, err = store.FindAudit(ctx, tx, store.AuditFilter{Limit: 10})
		return err
	}); err != nil || len(found) != 3 {
		t.Fatalf("read after the settle: %d records, %v; want 3", len(found), err)
	}
	if found[0].RequestID != "s-0-2" || found[2].RequestID != "s-0-0" {
		t.Errorf("newest first: %s … %s; want s-0-2 … s-0-0", found[0].RequestID, found[2].RequestID)
	}
	var marked bool
	if err := db.Pool().QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM gatehouse.audit_pending WHERE tenant_id = $1)", a.ID).Scan(&marked); err != nil || !marked {
		t.Fatalf("the settled tenant is not marked for the chainer: %v", err)
	}
	if _, unchained := auditRows(t, db, b); unchained != 0 {
		t.Fatal("a settle with nothing in the intake wrote")
	}
	for _, r := range db.ChainAuditTenants(ctx, []*tenancy.Tenant{a}, testKey, 100, store.ChainLimits{}) {
		if r.Err != nil || r.N != 3 {
			t.Fatalf("chained %d, %v; want the 3 settled records", r.N, r.Err)
		}
	}
	mustVerify(t, db, a, 3)

	// The export reads what is still in the intake.
	writeNoFallBack(t, db, laneEntries("export", []*tenancy.Tenant{a}, 1))
	var zipped countingWriter
	if err := db.ExportTenant(ctx, a, &zipped, store.OperatorAction{Operator: "test", Action: "export"}); err != nil {
		t.Fatal(err)
	}
	if ids, _ := auditRows(t, db, a); ids["export-0-0"] != 1 || intakeRows(t, db, a) != 0 {
		t.Errorf("the export did not move the intake's record into the log first: %v", ids)
	}

	// A deleted tenant's intake records go with it.
	writeNoFallBack(t, db, laneEntries("gone", []*tenancy.Tenant{b}, 2))
	if err := db.DeleteTenant(ctx, b, store.OperatorAction{Operator: "test", Action: "delete"}); err != nil {
		t.Fatal(err)
	}
	if n := intakeRows(t, db, b); n != 0 {
		t.Errorf("%d intake records of a deleted tenant left", n)
	}
}

type countingWriter struct{ n int }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// TestAuditIntakeConcurrent: writers, two replicas' chainers (each its own
// store.DB) and a reader's settles run at once over the same tenants,
// released together; afterwards every record written is in its tenant's
// audit log exactly once, chained, and every chain verifies. Moves and
// chain passes of one tenant take turns on its chain lock, on any replica.
func TestAuditIntakeConcurrent(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	other, err := store.Open(ctx, db.Pool().Config().ConnString(), &store.Options{Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var ts []*tenancy.Tenant
	for i := range 6 {
		ts = append(ts, mustTenant(t, db, fmt.Sprintf("race-%d.example", i)))
	}
	var written sync.Map // request id → tenant
	var wrote atomic.Int64
	stop := make(chan struct{})
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			<-start
			for r := 0; ; r++ {
				select {
				case <-stop:
					return
				default:
				}
				es := laneEntries(fmt.Sprintf("w%d.%d", w, r), ts[w%3:], 1)
				errs, _ := db.WriteAuditEntries(ctx, es)
				for i, e := range es {
					if errs[i] != nil {
						t.Errorf("record lost: %v", errs[i])
						return
					}
					written.Store(e.Rec.RequestID, e.Tenant)
					wrote.Add(1)
				}
			}
		})
	}
	for _, chainer := range []*store.DB{db, other} {
		wg.Go(func() {
			<-start
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, r := range chainer.ChainAuditTenants(ctx, ts, testKey, 3, store.ChainLimits{}) {
					if r.Err != nil && !errors.Is(r.Err, store.ErrAuditLogBusy) {
						t.Errorf("chaining %s: %v", r.Tenant.Key, r.Err)
					}
				}
				if _, err := chainer.ChainAudit(ctx, ts[5], testKey, 2); err != nil && !errors.Is(err, store.ErrAuditLogBusy) {
					t.Errorf("chaining %s alone: %v", ts[5].Key, err)
				}
			}
		})
	}
	wg.Go(func() {
		<-start
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := other.SettleAudit(ctx, ts[i%len(ts)]); err != nil && !errors.Is(err, store.ErrAuditLogBusy) {
				t.Errorf("settling: %v", err)
			}
		}
	})
	close(start)
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	chainUntilDone(t, db, ts, 1000, store.ChainLimits{}, false) // what is left
	want := map[*tenancy.Tenant]int{}
	written.Range(func(_, v any) bool { want[v.(*tenancy.Tenant)]++; return true })
	total := 0
	for _, tn := range ts {
		ids, unchained := auditRows(t, db, tn)
		if n := intakeRows(t, db, tn); n != 0 || unchained != 0 {
			t.Errorf("%s: %d in the intake, %d unchained after the last passes", tn.Key, n, unchained)
		}
		for id, n := range ids {
			if n != 1 {
				t.Errorf("%s: %q stored %d times", tn.Key, id, n)
			}
			if v, ok := written.Load(id); !ok || v.(*tenancy.Tenant) != tn {
				t.Errorf("%s: %q was not written for it", tn.Key, id)
			}
		}
		if len(ids) != want[tn] {
			t.Errorf("%s: %d records in its audit log, %d written", tn.Key, len(ids), want[tn])
		}
		total += len(ids)
		mustVerify(t, db, tn, want[tn])
	}
	if total != int(wrote.Load()) || total == 0 {
		t.Errorf("%d records stored of %d written", total, wrote.Load())
	}
	t.Logf("%d records over %d tenants", total, len(ts))
}

// TestAuditIntakeBesideLocks: a tenant's audit log locked by another
// session (a migration's ALTER TABLE) no longer holds up its calls'
// records, which wait in the intake and are chained once the lock is
// gone, while the other tenants' are chained meanwhile; the intake itself
// locked has records go straight into their audit logs, after one wait of
// at most the lock wait, then at once for a moment, and through the
// intake again after it.
func TestAuditIntakeBesideLocks(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	locked, free := mustTenant(t, db, "held-log.example"), mustTenant(t, db, "free-log.example")
	ts := []*tenancy.Tenant{locked, free}
	writeNoFallBack(t, db, laneEntries("warm", ts, 1))

	release := storetest.LockTable(t, db, locked.Schema, "audit_log")
	t0 := time.Now()
	writeNoFallBack(t, db, laneEntries("during", ts, 2))
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("writing beside a locked audit log took %v", d)
	}
	for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
		switch {
		case r.Tenant == free && (r.Err != nil || r.N != 3):
			t.Errorf("the free tenant: chained %d, %v; want 3", r.N, r.Err)
		case r.Tenant == locked && !errors.Is(r.Err, store.ErrAuditLogBusy):
			t.Errorf("the locked tenant: chained %d, %v; want ErrAuditLogBusy", r.N, r.Err)
		}
	}
	if err := db.SettleAudit(ctx, locked); !errors.Is(err, store.ErrAuditLogBusy) || !store.Unavailable(err) {
		t.Errorf("settling the locked tenant: %v; want ErrAuditLogBusy", err)
	}
	if n := intakeRows(t, db, locked); n != 3 {
		t.Errorf("the locked tenant's records in the intake: %d, want 3", n)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	mustVerify(t, db, locked, 3)
	mustVerify(t, db, free, 3)

	// The intake locked.
	holder, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx) //nolint:errcheck
	if _, err := holder.Exec(ctx, "LOCK TABLE gatehouse.audit_intake IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	for round, most := range []time.Duration{2 * time.Second, 150 * time.Millisecond} {
		es := laneEntries(fmt.Sprint("bypass", round), ts, 1)
		t0 := time.Now()
		errs, retried := db.WriteAuditEntries(ctx, es)
		took := time.Since(t0)
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("round %d beside the locked intake: %v", round, err)
		}
		if took > most {
			t.Errorf("round %d beside the locked intake took %v, want at most %v", round, took, most)
		}
		if round == 0 && retried == nil {
			t.Error("the fall-back from the locked intake said nothing")
		}
		for _, e := range es {
			if ids, _ := auditRows(t, db, e.Tenant); ids[e.Rec.RequestID] != 1 {
				t.Errorf("round %d: %s's record did not go into its audit log", round, e.Tenant.Key)
			}
		}
	}
	// Meanwhile the chain passes chain the records written into the logs
	// (here the two rounds above), leaving the intake alone, and readers
	// are refused as a transient outage within the lock wait, on no
	// control connection: the control pool answers at once meanwhile.
	t0 = time.Now()
	for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
		if r.Err != nil || r.N != 2 {
			t.Errorf("%s beside the locked intake: chained %d, %v; want its 2 records written into its log", r.Tenant.Key, r.N, r.Err)
		}
	}
	if n, err := db.ChainAudit(ctx, free, testKey, 100); err != nil || n != 0 {
		t.Errorf("one tenant's pass beside the locked intake: %d, %v", n, err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("the chain passes beside the locked intake took %v", d)
	}
	settled := make(chan error, 4)
	for range 4 {
		go func() { settled <- db.SettleAudit(ctx, locked) }()
	}
	t0 = time.Now()
	var one int
	if err := db.Pool().QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || time.Since(t0) > 150*time.Millisecond {
		t.Errorf("the control pool beside 4 readers of the locked intake: %v after %v", err, time.Since(t0))
	}
	for range 4 {
		if err := <-settled; !errors.Is(err, store.ErrAuditLogBusy) || !store.Unavailable(err) {
			t.Errorf("a reader beside the locked intake: %v; want ErrAuditLogBusy", err)
		}
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // past the moment the intake is skipped
	es := laneEntries("back", ts, 1)
	writeNoFallBack(t, db, es)
	if intakeRows(t, db, locked) != 1 {
		t.Error("after the intake's lock: want the record in the intake again")
	}
	for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	mustVerify(t, db, locked, 6) // warm, 2 during, 2 beside the intake's lock, back
	mustVerify(t, db, free, 6)

	// A tenant being deleted (its DROP SCHEMA holds its id sequence, and
	// its log, until it commits; rolled back here): the flush holding its
	// record goes straight into the logs, the tenant's record refused as
	// busy, the other's stored; the intake itself is not skipped for the
	// next flush.
	seqHolder, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer seqHolder.Rollback(ctx) //nolint:errcheck
	if _, err := seqHolder.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{locked.Schema}.Sanitize()+" CASCADE"); err != nil {
		t.Fatal(err)
	}
	es = laneEntries("seq", ts, 1)
	errs, _ := db.WriteAuditEntries(ctx, es)
	if !errors.Is(errs[0], store.ErrAuditLogBusy) || errs[1] != nil {
		t.Errorf("beside a locked id sequence: %v; want the tenant's busy, the other's stored", errs)
	}
	es = laneEntries("after-seq", ts[1:], 1)
	writeNoFallBack(t, db, es)
	if n := intakeRows(t, db, free); n != 1 {
		t.Errorf("the next flush: %d records in the intake, want 1 (the intake was skipped for a tenant's lock)", n)
	}
	if err := seqHolder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestAuditIntakeRefused: a tenant whose audit log refuses one of its
// records (a constraint of its own) holds up no other tenant: every call's
// record is accepted into the intake, and the chain passes chain the other
// tenants' as usual. The refused record is moved on its own, in its
// reduced form, and the tenant's others are chained after it; one refused
// in both forms is kept in the intake, set aside with the reason (reported
// by verify, never moved again), and the tenant's other records are
// chained. A tenant whose log is gone (its id sequence with it) has its
// records refused at the write, reported, while the others' are stored.
func TestAuditIntakeRefused(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name, prefix, break_ string
		verified, refused    int // the broken tenant's, after the passes
		reason               string
	}{
		{"stored reduced", "inred", "ALTER TABLE %s ADD CONSTRAINT no_boom CHECK (user_agent <> 'boom')", 4, 0, ""},
		{"refused in both forms", "inrec", "ALTER TABLE %s ADD CONSTRAINT no_boom CHECK (tool <> 'boom')", 3, 1, "no_boom"},
		{"a log gone", "ingone", "DROP TABLE %s", 0, 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			db, ts := openLanes(t, c.prefix, 6)
			warmLanes(t, db, ts)
			for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
				if r.Err != nil {
					t.Fatal(r.Err)
				}
			}
			broken := ts[3]
			if _, err := db.Pool().Exec(ctx, fmt.Sprintf(c.break_, pgx.Identifier{broken.Schema, "audit_log"}.Sanitize())); err != nil {
				t.Fatal(err)
			}
			es := laneEntries("x", ts, 3)
			es[3].Rec.Tool, es[3].Rec.UserAgent = "boom", "boom" // the broken tenant's first
			if c.name == "a log gone" {
				errs, retried := db.WriteAuditEntries(ctx, es)
				for i, e := range es {
					if (errs[i] != nil) != (e.Tenant == broken) {
						t.Errorf("%s's record: %v", e.Tenant.Key, errs[i])
					}
				}
				if retried == nil {
					t.Error("the flush that could not go into the intake said nothing")
				}
			} else {
				writeNoFallBack(t, db, es)
			}
			var brokenErr error
			for range 3 {
				for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
					if r.Tenant == broken {
						brokenErr = r.Err
					} else if r.Err != nil {
						t.Fatalf("%s, beside the broken tenant: %v", r.Tenant.Key, r.Err)
					}
				}
			}
			var refused int
			var reason string
			if err := db.Pool().QueryRow(ctx, "SELECT count(*), coalesce(min(refused), '') FROM gatehouse.audit_intake WHERE tenant_id = $1", broken.ID).Scan(&refused, &reason); err != nil {
				t.Fatal(err)
			}
			if refused != c.refused || !strings.Contains(reason, c.reason) {
				t.Errorf("kept in the intake: %d, %q; want %d saying %q", refused, reason, c.refused, c.reason)
			}
			// Records set aside do not list the tenant for the sweep (its
			// pending mark, renewed by the moves, does until it is stale).
			if _, err := db.Pool().Exec(ctx, "DELETE FROM gatehouse.audit_pending WHERE tenant_id = $1", broken.ID); err != nil {
				t.Fatal(err)
			}
			listed, err := db.TenantsWithUnchainedAudit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range listed {
				if l.ID == broken.ID {
					t.Errorf("the sweep lists the tenant whose only records left were set aside")
				}
			}
			for _, tn := range ts {
				if tn == broken {
					continue
				}
				mustVerify(t, db, tn, 4)
				ids, _ := auditRows(t, db, tn)
				for r := range 3 {
					if id := fmt.Sprintf("x-%d-%d", slices.Index(ts, tn), r); ids[id] != 1 {
						t.Errorf("%s: %s stored %d times", tn.Key, id, ids[id])
					}
				}
			}
			if c.name == "a log gone" {
				if brokenErr == nil {
					t.Error("the gone log's chain pass said nothing")
				}
				return
			}
			if rows := intakeRows(t, db, broken); rows != c.refused {
				t.Errorf("%d of the broken tenant's records in the intake, want %d", rows, c.refused)
			}
			if brokenErr != nil {
				t.Errorf("the broken tenant's chain pass: %v", brokenErr)
			}
			rep, err := db.VerifyAudit(ctx, broken, testKey)
			if err != nil || !rep.OK() || rep.Verified != c.verified || rep.Pending != 0 || rep.Refused != c.refused {
				t.Errorf("the broken tenant: verify %+v, %v; want %d verified, %d refused", rep, err, c.verified, c.refused)
			}
			if c.refused == 0 {
				var red string
				if err := db.Pool().QueryRow(ctx, "SELECT reason FROM "+pgx.Identifier{broken.Schema, "audit_log"}.Sanitize()+
					" WHERE request_id = 'x-3-0'").Scan(&red); err != nil || !strings.Contains(red, "record reduced") {
					t.Errorf("the refused record: reason %q, %v; want it stored reduced", red, err)
				}
			}
			// A reader's settle is not held up by the record set aside.
			writeNoFallBack(t, db, laneEntries("after", []*tenancy.Tenant{broken}, 1))
			if err := db.SettleAudit(ctx, broken); err != nil || intakeRows(t, db, broken) != c.refused {
				t.Errorf("settling beside a record set aside: %v, %d in the intake", err, intakeRows(t, db, broken))
			}
			// Nor by one its log refuses, before any chain pass: it is
			// moved reduced or set aside, and the others after it moved.
			es = laneEntries("settle", []*tenancy.Tenant{broken}, 2)
			es[0].Rec.Tool, es[0].Rec.UserAgent = "boom", "boom"
			writeNoFallBack(t, db, es)
			if err := db.SettleAudit(ctx, broken); err != nil || intakeRows(t, db, broken) != 2*c.refused {
				t.Errorf("settling a record its log refuses: %v, %d in the intake; want %d", err, intakeRows(t, db, broken), 2*c.refused)
			}
			if ids, _ := auditRows(t, db, broken); ids["settle-0-1"] != 1 || ids["after-0-0"] != 1 {
				t.Errorf("the records after it: %v", ids)
			}
			// And one tenant's pass (`gatehouse audit verify` chains so)
			// moves such a record aside too, and chains the rest.
			es = laneEntries("verify", []*tenancy.Tenant{broken}, 2)
			es[0].Rec.Tool, es[0].Rec.UserAgent = "boom", "boom"
			writeNoFallBack(t, db, es)
			for {
				n, err := db.ChainAudit(ctx, broken, testKey, 100)
				if err != nil {
					t.Fatalf("one tenant's pass beside a refused record: %v", err)
				}
				if n == 0 {
					break
				}
			}
			rep, err = db.VerifyAudit(ctx, broken, testKey)
			if err != nil || !rep.OK() || rep.Pending != 0 || rep.Refused != 3*c.refused {
				t.Errorf("after one tenant's passes: %+v, %v; want nothing pending, %d refused", rep, err, 3*c.refused)
			}
		})
	}
}

// TestControlLaneIntake: the intake's way in every mode of the control
// lanes' statements (each tenant's move prepared, some, none, behind a
// transaction pooler): odd records (NUL bytes, invalid UTF-8, a MiB-long
// request id, counts of zero and below, empty fields) and 5,000 records of
// one tenant beside another's few are written without a fall-back, each
// lane's part in one transaction; the passes move them with no fall-back
// to one tenant at a time, prepare each busy tenant's move where there is
// room, leave the sessions' search_path alone, and the chains verify.
func TestControlLaneIntake(t *testing.T) {
	for i, tc := range laneStatementModes {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			_, db, ts := openLaneStatements(t, fmt.Sprintf("rvin%d-", i), 3, tc.opts)
			store.UseIntake(db)
			before, err := store.ControlLaneSettings(ctx, db, "search_path")
			if err != nil {
				t.Fatal(err)
			}
			chainAll := func() { chainUntilDone(t, db, ts, 2000, store.ChainLimits{Records: 4000}, true) }
			for round := range 3 { // the moves come to be prepared
				writeNoFallBack(t, db, laneEntries(fmt.Sprint("r", round), ts, 1))
				chainAll()
			}
			var es []store.AuditEntry
			for j, tn := range ts {
				for k, r := range []*store.AuditRecord{
					{RequestID: "nul\x00byte", Decision: store.Allowed, Subject: "s\x00"},
					{RequestID: strings.Repeat("x", 1<<20), Decision: store.Denied, Subject: "s", UserAgent: strings.Repeat("é", 1<<18)},
					{RequestID: "zero", Decision: store.RateLimited, Subject: "s", Count: 0},
					{RequestID: "neg", Decision: store.RateLimited, Subject: "s", Count: -5},
					{RequestID: "big", Decision: store.RateLimited, Subject: "s", Count: 1 << 40},
					{RequestID: "bad\xff\xfeutf8", Decision: store.Allowed, Subject: "\xc3"},
					{RequestID: "", Decision: store.Allowed, Subject: ""},
				} {
					r.Via = fmt.Sprint(j, k)
					es = append(es, store.AuditEntry{Tenant: tn, Rec: r})
				}
			}
			es = append(es, laneEntries("many", ts[:1], 5000)...)
			writeNoFallBack(t, db, es)
			// One transaction for the flush (one lane in use).
			var txs int
			if err := db.Pool().QueryRow(ctx, "SELECT count(DISTINCT xmin::text) FROM gatehouse.audit_intake").Scan(&txs); err != nil || txs != 1 {
				t.Errorf("the flush was written in %d transactions, %v; want 1", txs, err)
			}
			chainAll()
			for _, e := range es[:len(ts)*7] {
				var count int
				if err := db.Pool().QueryRow(ctx, "SELECT count FROM "+pgx.Identifier{e.Tenant.Schema, "audit_log"}.Sanitize()+" WHERE via = $1", e.Rec.Via).Scan(&count); err != nil || count < 1 {
					t.Errorf("%s via %s: count %d, %v", e.Tenant.Key, e.Rec.Via, count, err)
				}
			}
			verifyAll(t, db, ts[1:], 3+7)
			verifyAll(t, db, ts[:1], 3+7+5000)
			after, err := store.ControlLaneSettings(ctx, db, "search_path")
			if err != nil || fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("search_path %v after, %v before (%v)", after, before, err)
			}
			if tc.name == "prepared" {
				for _, tn := range ts {
					if got := tenantStatements(t, db, tn); !got["INSERT"] {
						t.Errorf("%s: prepared %v, want its move (INSERT) prepared", tn.Key, got)
					}
				}
			}
		})
	}
}

// TestAuditIntakeChainOrder: records written straight into a log and into
// the intake, interleaved, are chained in the order they were written (id
// order) whatever the passes' bounds cut off: taken intake records beyond
// the cut go into the log unchained, marked for the chainer, and are linked
// by a later pass.
func TestAuditIntakeChainOrder(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "order.example")
	var want []string
	for i := range 7 {
		if i%3 == 0 {
			r := &store.AuditRecord{RequestID: fmt.Sprint("direct", i), Decision: store.Allowed, Tool: "whoami", Subject: "s"}
			if lost, err := db.InsertAuditRecords(ctx, tn, []*store.AuditRecord{r}); lost != 0 || err != nil {
				t.Fatal(lost, err)
			}
			want = append(want, r.RequestID)
			continue
		}
		es := laneEntries(fmt.Sprint("intake", i), []*tenancy.Tenant{tn}, 2)
		writeNoFallBack(t, db, es)
		want = append(want, es[0].Rec.RequestID, es[1].Rec.RequestID)
	}
	for pass := 0; ; pass++ {
		var n int
		var more bool
		if pass%2 == 0 {
			r := db.ChainAuditTenants(ctx, []*tenancy.Tenant{tn}, testKey, 2, store.ChainLimits{})[0]
			n, more = r.N, r.More
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		} else {
			var err error
			if n, err = db.ChainAudit(ctx, tn, testKey, 2); err != nil {
				t.Fatal(err)
			}
			more = n > 0
		}
		if n > 4 { // up to a batch of each kind
			t.Fatalf("pass %d chained %d, more than its batches of 2", pass, n)
		}
		if !more && n == 0 {
			break
		}
		if pass > 50 {
			t.Fatal("the passes never end")
		}
	}
	mustVerify(t, db, tn, len(want))
	rows, _ := db.Pool().Query(ctx, "SELECT request_id FROM "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+" ORDER BY chain_seq")
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("chain %v, %v; want the order written %v", got, err, want)
	}
}

// TestSettleAuditTogether: readers of one tenant arriving together, while
// its records are being written and chained, each settle it (taking turns
// on its chain lock) and none is refused as busy.
func TestSettleAuditTogether(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "readers.example")
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 12 {
		wg.Go(func() {
			<-start
			for i := range 4 {
				switch w % 3 {
				case 0:
					es := laneEntries(fmt.Sprintf("w%d.%d", w, i), []*tenancy.Tenant{tn}, 20)
					if errs2, _ := db.WriteAuditEntries(ctx, es); errs2[0] != nil {
						errs <- errs2[0]
					}
				case 1:
					if r := db.ChainAuditTenants(ctx, []*tenancy.Tenant{tn}, testKey, 5, store.ChainLimits{})[0]; r.Err != nil {
						errs <- r.Err
					}
				default:
					if err := db.SettleAudit(ctx, tn); err != nil {
						errs <- err
					}
				}
			}
		})
	}
	writeNoFallBack(t, db, laneEntries("before", []*tenancy.Tenant{tn}, 50))
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("beside other readers and passes: %v", err)
	}
	chainUntilDone(t, db, []*tenancy.Tenant{tn}, 1000, store.ChainLimits{}, false)
	mustVerify(t, db, tn, 50+4*20*4)
}
