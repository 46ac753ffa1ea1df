package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// chainWriter writes records with WriteChainedAuditEntries and counts
// what it stored, and how many were chained as they were written.
type chainWriter struct {
	db      *store.DB
	key     store.AuditKey
	n       atomic.Int64
	stored  sync.Map // tenant id → *atomic.Int64
	chained atomic.Int64
}

func (w *chainWriter) count(tn *tenancy.Tenant) *atomic.Int64 {
	v, _ := w.stored.LoadOrStore(tn.ID, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// write writes one record per tenant of ts in one group commit and returns
// the records.
func (w *chainWriter) write(t testing.TB, ts ...*tenancy.Tenant) []*store.AuditRecord {
	t.Helper()
	entries := make([]store.AuditEntry, len(ts))
	recs := make([]*store.AuditRecord, len(ts))
	for i, tn := range ts {
		recs[i] = &store.AuditRecord{Decision: store.Allowed, Tool: "whoami", Subject: "s", Email: "s@example.com",
			RequestID: fmt.Sprint("r", w.n.Add(1)), Reason: "ünïcode ✓"}
		entries[i] = store.AuditEntry{Tenant: tn, Rec: recs[i]}
	}
	errs, retried := w.db.WriteChainedAuditEntries(context.Background(), w.key, entries)
	if err := errors.Join(errs...); err != nil {
		t.Errorf("write: %v", err)
	}
	if retried != nil {
		t.Errorf("write: a batch was written again record by record: %v", retried)
	}
	for i, r := range recs {
		if errs[i] != nil {
			continue
		}
		w.count(ts[i]).Add(1)
		if r.ChainSeq != 0 {
			w.chained.Add(1)
		}
	}
	return recs
}

// mustVerify chains what is left of tn's records and checks that its chain
// holds exactly want records.
func mustVerify(t testing.TB, db *store.DB, key store.AuditKey, tn *tenancy.Tenant, want int64) {
	t.Helper()
	ctx := context.Background()
	for _, r := range db.ChainAuditTenants(ctx, []*tenancy.Tenant{tn}, key, 1000, store.ChainLimits{}) {
		if r.Err != nil {
			t.Fatalf("chaining %s: %v", tn.Key, r.Err)
		}
	}
	rep, err := db.VerifyAudit(ctx, tn, key)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Pending != 0 || int64(rep.Verified) != want {
		t.Fatalf("%s: verify = %+v, want %d records verified, none pending", tn.Key, rep, want)
	}
}

// TestChainAtWrite: the group commit chains the records of tenants that
// have a chain head as it writes them, in the chain's own format (audit
// verify checks them like any other), a tenant without a head has its
// records left to the chainer until its first chain pass, and records
// written unchained in between (a tool's own transaction) take their
// places in the chain when the chainer links them.
func TestChainAtWrite(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	key := store.NewAuditKey([]byte("chain-at-write"))
	a, b := mustTenant(t, db, "a.example"), mustTenant(t, db, "b.example")
	w := &chainWriter{db: db, key: key}

	// No head yet: nothing can be chained as it is written.
	for _, r := range w.write(t, a, b) {
		if r.ChainSeq != 0 {
			t.Fatalf("a record of a tenant without a chain head was chained when written (%d)", r.ChainSeq)
		}
	}
	mustVerify(t, db, key, a, 1) // a has a head now, b not

	chainedA := 0
	for round := range 6 {
		recs := w.write(t, a, b, a)
		if recs[1].ChainSeq != 0 {
			t.Fatalf("round %d: b has no chain head, yet its record was chained when written", round)
		}
		for _, r := range []*store.AuditRecord{recs[0], recs[2]} {
			if r.ChainSeq != 0 {
				chainedA++
				if r.ID == 0 || r.At.IsZero() {
					t.Fatalf("a chained record without its id or time: %+v", r)
				}
			}
		}
		// A tool's own record, unchained, between the group commits.
		if _, err := db.InsertAuditRecord(ctx, a, &store.AuditRecord{Decision: store.Allowed, Tool: "add_todo", Subject: "s"}); err != nil {
			t.Fatal(err)
		}
		w.count(a).Add(1)
		rep, err := db.VerifyAudit(ctx, a, key)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() {
			t.Fatalf("round %d: chain of a broken: %+v", round, rep)
		}
	}
	if chainedA == 0 {
		t.Fatal("no record of a (which has a chain head) was chained as it was written")
	}
	mustVerify(t, db, key, a, w.count(a).Load())
	mustVerify(t, db, key, b, w.count(b).Load())

	// b has a head now: its records are chained as written too.
	chainedB := 0
	for range 4 {
		if w.write(t, b)[0].ChainSeq != 0 {
			chainedB++
		}
	}
	if chainedB == 0 {
		t.Fatal("no record of b was chained as it was written after its first chain pass")
	}
	mustVerify(t, db, key, b, w.count(b).Load())

	// A chained record edited, or renumbered, breaks the chain.
	var id int64
	if err := db.Pool().QueryRow(ctx, "SELECT max(id) FROM "+b.Schema+".audit_log WHERE chain_seq IS NOT NULL").Scan(&id); err != nil {
		t.Fatal(err)
	}
	// (id is an identity column: a record is renumbered by deleting it
	// and inserting it again with the other id.)
	renumber := func(sign string) string {
		from := "%[2]d"
		if sign == "-" {
			from = "%[2]d + 1000"
		}
		return "WITH d AS (DELETE FROM %[1]s.audit_log WHERE id = " + from + ` RETURNING *)
			INSERT INTO %[1]s.audit_log OVERRIDING SYSTEM VALUE SELECT d.id ` + sign + ` 1000, d.at, d.request_id, d.decision,
				d.tool, d.subject, d.email, d.provider, d.api_key_id, d.client_ip, d.user_agent, d.reason, d.args_digest,
				d.count, d.chain_seq, d.key_id, d.prev_hash, d.hash, d.via FROM d`
	}
	for _, tamper := range [][2]string{
		{"UPDATE %[1]s.audit_log SET reason = 'edited' WHERE id = %[2]d", "UPDATE %[1]s.audit_log SET reason = 'ünïcode ✓' WHERE id = %[2]d"},
		{renumber("+"), renumber("-")},
	} {
		if _, err := db.Pool().Exec(ctx, fmt.Sprintf(tamper[0], b.Schema, id)); err != nil {
			t.Fatal(err)
		}
		if rep, err := db.VerifyAudit(ctx, b, key); err != nil || rep.OK() {
			t.Errorf("%q on a record chained as written: verify = %+v, %v; want a break", tamper[0], rep, err)
		}
		if _, err := db.Pool().Exec(ctx, fmt.Sprintf(tamper[1], b.Schema, id)); err != nil {
			t.Fatal(err)
		}
		mustVerify(t, db, key, b, w.count(b).Load())
	}
}

// TestChainAtWriteYields: a group commit never waits for, nor forks, a
// chain another writer is extending. Between its reading of the heads and
// its INSERTs, (1) another process chains the tenant (the head moves) or
// (2) holds its chain lock: the records are written unchained, without a
// wait or a retry, and the chain verifies once the chainer has linked
// them.
func TestChainAtWriteYields(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	key := store.NewAuditKey([]byte("chain-at-write"))
	a, b := mustTenant(t, db, "a.example"), mustTenant(t, db, "b.example")
	w := &chainWriter{db: db, key: key}
	w.write(t, a, b)
	mustVerify(t, db, key, a, 1)
	mustVerify(t, db, key, b, 1)
	for range 3 { // warm: the chained INSERTs prepared on the lane's connections
		w.write(t, a, b)
	}
	if w.chained.Load() == 0 {
		t.Fatal("nothing chained as written while warming")
	}

	var hook func()
	store.AfterChainHeads(db, func() {
		if hook != nil {
			h := hook
			hook = nil
			h()
		}
	})
	cases := []struct {
		name  string
		other func() (release func())
	}{
		{"head moved", func() func() {
			// Another writer's record, chained and committed.
			if _, err := db.InsertAuditRecord(ctx, a, &store.AuditRecord{Decision: store.Allowed, Tool: "add_todo", Subject: "s"}); err != nil {
				t.Fatal(err)
			}
			w.count(a).Add(1)
			for _, r := range db.ChainAuditTenants(ctx, []*tenancy.Tenant{a}, key, 100, store.ChainLimits{}) {
				if r.Err != nil || r.N == 0 {
					t.Fatalf("chaining a's other record: %+v", r)
				}
			}
			return func() {}
		}},
		{"chain lock held", func() func() {
			release, err := store.HoldChainLock(ctx, db, a)
			if err != nil {
				t.Fatal(err)
			}
			return release
		}},
	}
	for _, c := range cases {
		var release func()
		hook = func() { release = c.other() }
		recs := w.write(t, a, b)
		if release == nil {
			t.Fatalf("%s: the hook did not run (nothing read the heads)", c.name)
		}
		release()
		if recs[0].ChainSeq != 0 {
			t.Errorf("%s: a's record was chained at %d from a stale head", c.name, recs[0].ChainSeq)
		}
		if recs[1].ChainSeq == 0 {
			t.Errorf("%s: b's record, whose head did not move, was not chained as written", c.name)
		}
		mustVerify(t, db, key, a, w.count(a).Load())
		mustVerify(t, db, key, b, w.count(b).Load())
	}
}

// TestChainAtWriteConcurrent: two processes (two DB handles on one
// database) write the same tenants' records from writers released
// together, while both chain those tenants and tools write unchained
// records: every record is stored once and the chains verify.
func TestChainAtWriteConcurrent(t *testing.T) {
	ctx := context.Background()
	url := storetest.ConnString(t)
	open := func() *store.DB {
		db, err := store.Open(ctx, url, &store.Options{Logger: storetest.Logger(t), PrepareAfter: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		return db
	}
	dbs := []*store.DB{open(), open()}
	key := store.NewAuditKey([]byte("chain-at-write"))
	ts := []*tenancy.Tenant{mustTenant(t, dbs[0], "a.example"), mustTenant(t, dbs[0], "b.example"), mustTenant(t, dbs[0], "c.example")}
	ws := []*chainWriter{{db: dbs[0], key: key}, {db: dbs[1], key: key}}
	ws[0].write(t, ts...)
	for _, tn := range ts {
		mustVerify(t, dbs[0], key, tn, 1)
	}
	stored := func(tn *tenancy.Tenant) int64 { return ws[0].count(tn).Load() + ws[1].count(tn).Load() }

	const writers, rounds = 4, 12
	start := make(chan struct{})
	var wg sync.WaitGroup
	var unchained sync.Map // tenant id → *atomic.Int64
	for _, w := range ws {
		for i := range writers {
			wg.Go(func() {
				<-start
				for r := range rounds {
					w.write(t, ts[(i+r)%3], ts[(i+r+1)%3], ts[(i+r)%3])
				}
			})
		}
		wg.Go(func() { // a tool's own records
			<-start
			for r := range rounds {
				tn := ts[r%3]
				if _, err := w.db.InsertAuditRecord(ctx, tn, &store.AuditRecord{Decision: store.Allowed, Tool: "add_todo", Subject: "s"}); err != nil {
					t.Error(err)
					continue
				}
				v, _ := unchained.LoadOrStore(tn.ID, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}
		})
		wg.Go(func() { // the chainer
			<-start
			for range rounds {
				for _, r := range w.db.ChainAuditTenants(ctx, ts, key, 100, store.ChainLimits{}) {
					if r.Err != nil {
						t.Error(r.Err)
					}
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if ws[0].chained.Load()+ws[1].chained.Load() == 0 {
		t.Fatal("no record was chained as it was written")
	}
	for _, tn := range ts {
		want := stored(tn)
		if v, ok := unchained.Load(tn.ID); ok {
			want += v.(*atomic.Int64).Load()
		}
		mustVerify(t, dbs[1], key, tn, want)
		var rows int64
		if err := dbs[0].Pool().QueryRow(ctx, "SELECT count(*) FROM "+tn.Schema+".audit_log").Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows != want {
			t.Errorf("%s: %d records stored, want %d", tn.Key, rows, want)
		}
	}
	t.Logf("chained as written: %d and %d of %d records", ws[0].chained.Load(), ws[1].chained.Load(), ws[0].n.Load()+ws[1].n.Load())
}
