package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse-mcp/gatehouse/identity/apikey"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// openLanes opens db with 4 control lanes, each meant to serve 2 recently
// met tenants, over n new tenants.
func openLanes(t *testing.T, prefix string, n int) (*store.DB, []*tenancy.Tenant) {
	t.Helper()
	base := storetest.MustOpenDB(t)
	var ts []*tenancy.Tenant
	for i := range n {
		ts = append(ts, mustTenant(t, base, fmt.Sprintf("%s%d.example", prefix, i)))
	}
	// No bound on the tenants a connection serves: a connection replaced
	// mid-test would forget what it served (ControlLaneMet).
	db, err := store.Open(context.Background(), base.Pool().Config().ConnString(),
		&store.Options{ControlConns: 2, ControlLanes: 4, ControlConnMaxTenants: -1})
	if err != nil {
		t.Fatal(err)
	}
	store.SetControlLaneTenants(db, 2)
	t.Cleanup(db.Close)
	return db, ts
}

// reopenLanes opens another DB over db's database, as openLanes does but
// with each lane meant to serve laneTenants recently met tenants, warms
// its lanes with ts (warmLanes) and fails unless wantLanes are in use.
// Its group commits go straight into the tenants' audit logs, not through
// the audit intake (store.SkipIntake).
func reopenLanes(t *testing.T, db *store.DB, ts []*tenancy.Tenant, laneTenants, wantLanes int) *store.DB {
	t.Helper()
	other, err := store.Open(context.Background(), db.Pool().Config().ConnString(),
		&store.Options{ControlConns: 2, ControlLanes: 4, ControlConnMaxTenants: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	store.SetControlLaneTenants(other, laneTenants)
	store.SkipIntake(other, time.Hour)
	if k := warmLanes(t, other, ts); k != wantLanes {
		t.Fatalf("lanes in use: %d, want %d", k, wantLanes)
	}
	return other
}

// warmLanes writes one record in each tenant of ts (which spreads them over
// the lanes in use) and returns the lanes in use then.
func warmLanes(t *testing.T, db *store.DB, ts []*tenancy.Tenant) int {
	t.Helper()
	errs, retried := db.WriteAuditEntries(context.Background(), laneEntries("warm", ts, 1))
	for _, err := range append(errs, retried) {
		if err != nil {
			t.Fatal(err)
		}
	}
	return db.ControlLanesInUse()
}

// entries returns one record per tenant of ts and round, request ids
// prefix-<tenant>-<round>.
func laneEntries(prefix string, ts []*tenancy.Tenant, rounds int) []store.AuditEntry {
	var es []store.AuditEntry
	for r := range rounds {
		for i, tn := range ts {
			es = append(es, store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{
				RequestID: fmt.Sprintf("%s-%d-%d", prefix, i, r), Decision: store.Allowed, Tool: "whoami", Subject: "s"}})
		}
	}
	return es
}

// auditTxs returns tn's audit records' request ids → the transaction that
// wrote them (xmin), failing on a request id stored twice.
func auditTxs(t *testing.T, db *store.DB, tn *tenancy.Tenant) map[string]string {
	t.Helper()
	rows, _ := db.Pool().Query(context.Background(), "SELECT request_id, xmin::text FROM "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize())
	got := map[string]string{}
	var id, xmin string
	_, err := pgx.ForEachRow(rows, []any{&id, &xmin}, func() error {
		if _, dup := got[id]; dup {
			return fmt.Errorf("request %s stored twice", id)
		}
		got[id] = xmin
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", tn.Key, err)
	}
	return got
}

// TestControlLanesSplitGroupCommit: while few tenants are busy, a group
// commit over them is one transaction on one control connection; once
// more tenants are busy than a lane serves, a group commit is split into
// one transaction per lane, each tenant's records in its own lane's, and
// each lane's connection meets only its lane's tenants.
func TestControlLanesSplitGroupCommit(t *testing.T) {
	ctx := context.Background()
	db, ts := openLanes(t, "lanes", 10)
	store.SkipIntake(db, time.Hour) // the way straight into the logs; TestControlLaneIntake has the intake's
	if k := db.ControlLanesInUse(); k != 1 {
		t.Fatalf("lanes in use before any work: %d", k)
	}
	// Two tenants, two records each: one lane, one transaction.
	errs, retried := db.WriteAuditEntries(ctx, laneEntries("few", ts[:2], 2))
	for _, err := range append(errs, retried) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if k := db.ControlLanesInUse(); k != 1 {
		t.Fatalf("lanes in use after 2 tenants: %d", k)
	}
	xmins := map[string]bool{}
	for _, tn := range ts[:2] {
		for _, x := range auditTxs(t, db, tn) {
			xmins[x] = true
		}
	}
	if len(xmins) != 1 {
		t.Fatalf("a group commit over 2 tenants took %d transactions", len(xmins))
	}

	// Ten tenants, three records each: 4 lanes (10 tenants at 2 a lane,
	// at most 4), a transaction per lane.
	errs, retried = db.WriteAuditEntries(ctx, laneEntries("many", ts, 3))
	for _, err := range append(errs, retried) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if k := db.ControlLanesInUse(); k != 4 {
		t.Fatalf("lanes in use after 10 tenants: %d, want 4", k)
	}
	laneTx := map[int]string{}
	used := map[int]bool{}
	for i, tn := range ts {
		lane := store.ControlLaneOf(db, tn.ID)
		used[lane] = true
		txs := auditTxs(t, db, tn)
		for r := range 3 {
			x, ok := txs[fmt.Sprintf("many-%d-%d", i, r)]
			if !ok {
				t.Fatalf("%s: record %d missing", tn.Key, r)
			}
			if prev, seen := laneTx[lane]; seen && prev != x {
				t.Errorf("lane %d's records were written in transactions %s and %s", lane, prev, x)
			}
			laneTx[lane] = x
		}
	}
	if len(used) < 2 {
		t.Fatalf("10 tenants all on one of 4 lanes: the test shows nothing")
	}
	distinct := map[string]bool{}
	for _, x := range laneTx {
		distinct[x] = true
	}
	if len(distinct) != len(used) {
		t.Errorf("%d lanes used, %d transactions", len(used), len(distinct))
	}
	met, err := store.ControlLaneMet(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for conn, set := range met {
		lane := conn / 2
		for id := range set {
			if store.ControlLaneOf(db, id) != lane && id != ts[0].ID && id != ts[1].ID { // the first two went to lane 0 with one lane in use
				t.Errorf("lane %d's connection served tenant %s of lane %d", lane, id, store.ControlLaneOf(db, id))
			}
		}
	}
}

// TestControlLanesPartFails: when one lane's part of a group commit fails
// (a record its tenant's log refuses, a tenant whose log is gone), the
// other lanes' records are stored once, in their own transactions, and
// the failed part's other records are written one by one; only the bad
// record is lost, and it is reported.
func TestControlLanesPartFails(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		prefix string // of the tenants' keys
		break_ string // SQL that breaks tenant 3's log (%s: its table)
		bad    func(store.AuditEntry) bool
	}{
		{"a record refused", "partrec", "ALTER TABLE %s ADD CONSTRAINT no_boom CHECK (tool <> 'boom')", func(e store.AuditEntry) bool { return e.Rec.Tool == "boom" }},
		{"a log gone", "partgone", "DROP TABLE %s", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			db, ts := openLanes(t, c.prefix, 10)
			// Warm up to 4 lanes.
			warmLanes(t, db, ts)
			store.SkipIntake(db, time.Hour) // the way straight into the logs; TestAuditIntakeRefused has the intake's
			broken := ts[3]
			if _, err := db.Pool().Exec(ctx, fmt.Sprintf(c.break_, pgx.Identifier{broken.Schema, "audit_log"}.Sanitize())); err != nil {
				t.Fatal(err)
			}
			es := laneEntries("x", ts, 2)
			bad := c.bad
			if bad == nil {
				bad = func(e store.AuditEntry) bool { return e.Tenant == broken }
			} else {
				es[3].Rec.Tool = "boom" // tenant 3's first record
			}
			errs, retried := db.WriteAuditEntries(ctx, es)
			// The error says how many records were written one by one: the
			// failed part's, not the whole group commit's (the log line).
			part := 0
			for _, e := range es {
				if store.ControlLaneOf(db, e.Tenant.ID) == store.ControlLaneOf(db, broken.ID) {
					part++
				}
			}
			if want := fmt.Sprintf("%d of %d records", part, len(es)); retried == nil || !strings.Contains(retried.Error(), want) {
				t.Errorf("the failed part's error: %v, want it to say %q", retried, want)
			}
			for i, e := range es {
				if (errs[i] != nil) != bad(e) {
					t.Errorf("entry %d (%s, %s): error %v", i, e.Tenant.Key, e.Rec.Tool, errs[i])
				}
			}
			for i, tn := range ts {
				if tn == broken && c.bad == nil {
					continue
				}
				txs := auditTxs(t, db, tn) // fails on a record stored twice
				for r := range 2 {
					id := fmt.Sprintf("x-%d-%d", i, r)
					if _, ok := txs[id]; !ok && !(tn == broken && r == 0) {
						t.Errorf("%s lost", id)
					}
				}
			}
		})
	}
}

// TestControlLanesConcurrent: group commits from goroutines released
// together, over lanes shared with chain passes, store every record once
// and leave every tenant's chain intact.
func TestControlLanesConcurrent(t *testing.T) {
	ctx := context.Background()
	db, ts := openLanes(t, "conc", 12)
	const writers = 8
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			<-start
			for r := range 5 {
				errs, retried := db.WriteAuditEntries(ctx, laneEntries(fmt.Sprintf("w%d.%d", w, r), ts[w%3:], 1))
				for _, err := range append(errs, retried) {
					if err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Go(func() {
		<-start
		for range 5 {
			for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{Tenants: 3}) {
				if r.Err != nil {
					t.Error(r.Err)
				}
			}
		}
	})
	close(start)
	wg.Wait()
	for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 1000, store.ChainLimits{}) {
		if r.Err != nil || r.More {
			t.Fatalf("%+v", r)
		}
	}
	for i, tn := range ts {
		txs := auditTxs(t, db, tn)
		want := 0
		for w := range writers {
			if i >= w%3 {
				want += 5
			}
		}
		if len(txs) != want {
			t.Errorf("%s: %d records, want %d", tn.Key, len(txs), want)
		}
		rep, err := db.VerifyAudit(ctx, tn, testKey)
		if err != nil || rep.Problem != "" || rep.Verified != want || rep.Pending != 0 {
			t.Errorf("%s: %+v, %v", tn.Key, rep, err)
		}
	}
}

// TestChainAuditTenantsByLane: with several control lanes in use, each
// chaining transaction holds tenants of one lane only.
func TestChainAuditTenantsByLane(t *testing.T) {
	ctx := context.Background()
	db, ts := openLanes(t, "chainlane", 10)
	if errs, _ := db.WriteAuditEntries(ctx, laneEntries("c", ts, 2)); errs[0] != nil {
		t.Fatal(errs[0])
	}
	if k := db.ControlLanesInUse(); k != 4 {
		t.Fatalf("lanes in use: %d", k)
	}
	laneOfGroup := map[int]int{}
	groups := map[int]bool{}
	for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
		if r.Err != nil || r.N != 2 || r.Group < 0 {
			t.Fatalf("%s: %+v", r.Tenant.Key, r)
		}
		lane := store.ControlLaneOf(db, r.Tenant.ID)
		if l, ok := laneOfGroup[r.Group]; ok && l != lane {
			t.Errorf("transaction %d chained tenants of lanes %d and %d", r.Group, l, lane)
		}
		laneOfGroup[r.Group] = lane
		groups[r.Group] = true
	}
	if len(groups) < 2 {
		t.Errorf("10 tenants over 4 lanes chained in %d transaction(s)", len(groups))
	}
}

// TestControlLanesCountEveryPath: the lanes in use grow with the tenants
// met by any control work in tenant schemas, not only by the group
// commit's: calls that write their records in their own transactions
// (tools that change data, on the tenant pool) leave the chainer and the
// anomaly detector to meet their tenants on the control lanes, and a lane
// chosen among too few would serve them all (past ControlConnMaxTenants,
// replaced: cold).
func TestControlLanesCountEveryPath(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		run  func(db *store.DB, ts []*tenancy.Tenant) error
	}{
		{"chain passes", func(db *store.DB, ts []*tenancy.Tenant) error {
			for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
				if r.Err != nil {
					return r.Err
				}
			}
			return nil
		}},
		{"chain one tenant", func(db *store.DB, ts []*tenancy.Tenant) error {
			for _, tn := range ts {
				if _, err := db.ChainAudit(ctx, tn, testKey, 100); err != nil {
					return err
				}
			}
			return nil
		}},
		{"anomaly passes", func(db *store.DB, ts []*tenancy.Tenant) error {
			for _, tn := range ts {
				if _, _, err := db.DetectAnomalies(ctx, tn, 0, 10, nil, func(store.AnomalyInput) (store.AnomalyOutput, error) {
					return store.AnomalyOutput{}, nil
				}); err != nil {
					return err
				}
			}
			return nil
		}},
		{"records alone", func(db *store.DB, ts []*tenancy.Tenant) error {
			for i, tn := range ts {
				if _, err := db.InsertAuditRecord(ctx, tn, &store.AuditRecord{RequestID: fmt.Sprintf("alone-%d", i),
					Decision: store.Failed, Tool: "t", Subject: "s"}); err != nil {
					return err
				}
			}
			return nil
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			db, ts := openLanes(t, "every"+strings.ReplaceAll(c.name, " ", ""), 10)
			// Records written by the calls themselves, on the tenant pool.
			for i, tn := range ts {
				if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
					return store.InsertAudit(ctx, tx, &store.AuditRecord{RequestID: fmt.Sprintf("own-%d", i), Decision: store.Allowed, Tool: "t", Subject: "s"})
				}); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.run(db, ts); err != nil {
				t.Fatal(err)
			}
			if k := db.ControlLanesInUse(); k != 4 {
				t.Fatalf("lanes in use after 10 tenants met: %d, want 4", k)
			}
		})
	}
}

// TestLaneWorkWithoutControlPool: once warm (the tenant's audit mark
// fresh, each path run once), work on a control lane never
// waits for a control-pool connection while it holds its lane and its
// transaction's locks: the control pool's holders may be waiting for those
// locks (calls touching the API key an alert is revoking), and would wait
// for ever. Each lane path runs while every control-pool connection is
// taken (the anomaly pass: from inside its transaction, where it holds
// its lane, the first time it revokes a key).
func TestLaneWorkWithoutControlPool(t *testing.T) {
	ctx := context.Background()
	base := storetest.MustOpenDB(t)
	tn := mustTenant(t, base, "nopool.example")
	_, key := apikey.New(tn.ID, "developer", []string{"mcp:read"}, "ci", "test", time.Now().Add(time.Hour))
	if err := base.CreateAPIKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	const controlConns = 2
	// A database handle of its own: no instance secret read yet.
	db, err := store.Open(ctx, base.Pool().Config().ConnString(), &store.Options{ControlConns: controlConns, ControlLanes: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rec := func(id string) *store.AuditRecord {
		return &store.AuditRecord{RequestID: id, Decision: store.Allowed, Tool: "t", Subject: "s", APIKeyID: key.ID}
	}
	// Warm: the tenant marked, the advisory locks' seed read, an anomaly
	// pass run (that revoked no key).
	if _, err := db.InsertAuditRecord(ctx, tn, rec("warm")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ChainAudit(ctx, tn, testKey, 100); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.DetectAnomalies(ctx, tn, 0, 10, nil, func(store.AnomalyInput) (store.AnomalyOutput, error) {
		return store.AnomalyOutput{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		// run runs the path, calling take (which takes every control-pool
		// connection) before or during its lane work.
		run func(ctx context.Context, take func()) error
	}{
		{"group commit", func(ctx context.Context, take func()) error {
			take()
			errs, _ := db.WriteAuditEntries(ctx, []store.AuditEntry{{Tenant: tn, Rec: rec("batch")}})
			return errs[0]
		}},
		{"record alone", func(ctx context.Context, take func()) error {
			take()
			_, err := db.InsertAuditRecord(ctx, tn, rec("alone"))
			return err
		}},
		{"chain pass", func(ctx context.Context, take func()) error {
			take()
			return db.ChainAuditTenants(ctx, []*tenancy.Tenant{tn}, testKey, 100, store.ChainLimits{})[0].Err
		}},
		{"chain one tenant", func(ctx context.Context, take func()) error {
			take()
			_, err := db.ChainAudit(ctx, tn, testKey, 100)
			return err
		}},
		{"anomaly pass", func(ctx context.Context, take func()) error {
			take()
			_, _, err := db.DetectAnomalies(ctx, tn, 0, 10, nil, func(store.AnomalyInput) (store.AnomalyOutput, error) {
				return store.AnomalyOutput{}, nil
			})
			return err
		}},
		{"anomaly pass revoking a key", func(ctx context.Context, take func()) error {
			_, written, err := db.DetectAnomalies(ctx, tn, 0, 10, nil, func(store.AnomalyInput) (store.AnomalyOutput, error) {
				take()
				return store.AnomalyOutput{Alerts: []*store.NewAlert{{Record: rec("alert"), Kind: "test", Summary: "s",
					Evidence: json.RawMessage(`{}`), Suspend: true}}}, nil
			})
			if err == nil && (len(written) != 1 || !written[0].Suspended) {
				err = fmt.Errorf("alerts written: %+v", written)
			}
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var held []*pgxpool.Conn
			defer func() {
				for _, conn := range held {
					conn.Release()
				}
			}()
			take := func() {
				for range controlConns {
					conn, err := db.Pool().Acquire(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					held = append(held, conn)
				}
			}
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second) // a deadlock's bound, not a timing
			defer cancel()
			if err := c.run(rctx, take); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestControlLanesBusyLane: work whose lane has one connection taken (by
// a chain pass, say) takes the lane's other connection, not another lane's
// (whose backend would then meet tenants not its own); with both taken it
// takes another lane's free connection rather than wait.
func TestControlLanesBusyLane(t *testing.T) {
	ctx := context.Background()
	db, ts := openLanes(t, "busy", 10)
	if k := warmLanes(t, db, ts); k != 4 {
		t.Fatalf("lanes in use: %d", k)
	}
	busy := store.ControlLaneOf(db, ts[5].ID)
	write := func(prefix string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second) // waiting for a held lane would end here
		defer cancel()
		errs, retried := db.WriteAuditEntries(wctx, laneEntries(prefix, ts, 1))
		for _, err := range append(errs, retried) {
			if err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.ChainAudit(wctx, ts[5], testKey, 100); err != nil {
			t.Fatal(err)
		}
	}
	release, err := store.HoldControlLane(ctx, db, busy, true)
	if err != nil {
		t.Fatal(err)
	}
	write("one-held")
	release()
	met, err := store.ControlLaneMet(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for conn, set := range met {
		for id := range set {
			if own := store.ControlLaneOf(db, id); own != conn/2 {
				t.Errorf("lane %d's connection served tenant %s of lane %d", conn/2, id, own)
			}
		}
	}

	// Both of the lane's connections taken: another lane's, at once.
	r1, err := store.HoldControlLane(ctx, db, busy, true)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := store.HoldControlLane(ctx, db, busy, true)
	if err != nil {
		t.Fatal(err)
	}
	write("both-held")
	r1()
	r2()
	met, err = store.ControlLaneMet(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := false
	for conn, set := range met {
		if _, ok := set[ts[5].ID]; ok && conn/2 != busy {
			elsewhere = true
		}
	}
	if !elsewhere {
		t.Errorf("with lane %d's connections taken, tenant %s's work was not served by another lane", busy, ts[5].Key)
	}
}

// TestControlLanesRoles: each lane's first connection takes the work a
// call waits for (the group commit's parts, records written alone) and
// its second the background work (chain passes, the anomaly detector), so
// that both serve the lane's tenants' tables and neither waits for the
// other kind; with its own connection taken, work takes the lane's other
// one before any other lane's.
func TestControlLanesRoles(t *testing.T) {
	ctx := context.Background()
	db, ts := openLanes(t, "roles", 10)
	store.SkipIntake(db, time.Hour) // the way straight into the logs: the intake touches no tenant's relations
	if k := warmLanes(t, db, ts); k != 4 {
		t.Fatalf("lanes in use: %d", k)
	}
	ids := func(set map[string]struct{}) (out []string) {
		for _, tn := range ts {
			if _, ok := set[tn.ID]; ok {
				out = append(out, tn.Key)
			}
		}
		return out
	}
	met, err := store.ControlLaneMet(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(met) != 8 {
		t.Fatalf("%d control lane connections, want 8", len(met))
	}
	// warmLanes went through the group commit only.
	for conn, set := range met {
		if got := ids(set); conn%2 == 1 && len(got) > 0 {
			t.Errorf("lane %d's background connection served group commits of %v", conn/2, got)
		}
	}
	if _, _, err := db.DetectAnomalies(ctx, ts[3], 0, 10, nil, func(store.AnomalyInput) (store.AnomalyOutput, error) {
		return store.AnomalyOutput{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if met, err = store.ControlLaneMet(ctx, db); err != nil {
		t.Fatal(err)
	}
	if lane := store.ControlLaneOf(db, ts[3].ID); len(ids(met[2*lane+1])) != 1 {
		t.Errorf("after an anomaly pass over %s (lane %d), the lane's background connection served %v", ts[3].Key, lane, ids(met[2*lane+1]))
	}
	for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
		if r.Err != nil || r.N != 1 {
			t.Fatalf("%s: chained %d, %v", r.Tenant.Key, r.N, r.Err)
		}
	}
	met, err = store.ControlLaneMet(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range ts {
		lane := store.ControlLaneOf(db, tn.ID)
		if _, ok := met[2*lane+1][tn.ID]; !ok {
			t.Errorf("%s (lane %d): its chain pass was not on the lane's background connection", tn.Key, lane)
		}
		for conn, set := range met {
			if _, ok := set[tn.ID]; ok && conn/2 != lane {
				t.Errorf("%s (lane %d) served by lane %d's connection %d", tn.Key, lane, conn/2, conn)
			}
		}
	}

	// Either of the lane's connections held (a long chain pass, a slow
	// group commit): the work of both kinds keeps to the lane.
	busy := store.ControlLaneOf(db, ts[5].ID)
	for i, background := range []bool{true, false} {
		release, err := store.HoldControlLane(ctx, db, busy, background)
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second) // waiting for a held connection would end here
		errs, retried := db.WriteAuditEntries(wctx, laneEntries(fmt.Sprintf("held%d", i), ts, 1))
		for _, err := range append(errs, retried) {
			if err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.ChainAudit(wctx, ts[5], testKey, 100); err != nil {
			t.Fatal(err)
		}
		cancel()
		release()
		met, err = store.ControlLaneMet(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		for conn, set := range met {
			if _, ok := set[ts[5].ID]; ok && conn/2 != busy {
				t.Errorf("background held %v: %s (lane %d) served by lane %d", background, ts[5].Key, busy, conn/2)
			}
		}
	}
	verifyAll(t, db, ts[5:6], 3)

	// On fresh connections: with the lane's call connection held, the
	// lane's part of a group commit goes to its background connection,
	// not to another lane's.
	fresh := reopenLanes(t, db, ts, 2, 4)
	busy = store.ControlLaneOf(fresh, ts[5].ID)
	release, err := store.HoldControlLane(ctx, fresh, busy, false)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	errs, retried := fresh.WriteAuditEntries(wctx, laneEntries("callheld", ts[5:6], 1))
	cancel()
	release()
	for _, err := range append(errs, retried) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if met, err = store.ControlLaneMet(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	for conn, set := range met {
		_, ok := set[ts[5].ID]
		if want := conn == 2*busy || conn == 2*busy+1; ok != want {
			t.Errorf("call connection of lane %d held: %s served by connection %d: %v, want %v", busy, ts[5].Key, conn, ok, want)
		}
	}

	// The same with one lane in use, which is not the lane each tenant
	// would rank first among all four (the one its work would take next
	// were the lane's other connection not preferred).
	one := reopenLanes(t, db, ts, 1000, 1)
	release, err = store.HoldControlLane(ctx, one, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, tn := range ts {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		errs, retried := one.WriteAuditEntries(wctx, laneEntries(fmt.Sprintf("oneheld%d", i), []*tenancy.Tenant{tn}, 1))
		cancel()
		for _, err := range append(errs, retried) {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	release()
	if met, err = store.ControlLaneMet(ctx, one); err != nil {
		t.Fatal(err)
	}
	if got := ids(met[1]); len(got) != len(ts) {
		t.Errorf("lane 0's call connection held: its background connection served %v, want all %d tenants", got, len(ts))
	}
	for conn, set := range met[2:] {
		if got := ids(set); len(got) > 0 {
			t.Errorf("lane 0's call connection held: lane %d's connection %d served %v", (conn+2)/2, conn+2, got)
		}
	}
}

// TestControlLanesBehindPooler: behind a transaction pooler (which
// chooses the backend: no affinity to keep) the control lanes still run
// the audit work of several tenants at once, as the control pool did
// before there were lanes: a chain pass and an anomaly pass waiting for
// one tenant's lock (a replica or `gatehouse audit verify` chaining it, a
// migration altering its log) hold a connection each, and the other
// tenants' group commits, records written alone and anomaly passes go on. Many busy tenants do not split the group commit: there
// is no backend to keep warm.
func TestControlLanesBehindPooler(t *testing.T) {
	ctx := context.Background()
	base := storetest.MustOpenDB(t)
	var ts []*tenancy.Tenant
	for i := range 6 {
		ts = append(ts, mustTenant(t, base, fmt.Sprintf("pooled%d.example", i)))
	}
	db, err := store.Open(ctx, base.Pool().Config().ConnString(), &store.Options{TransactionPooler: true, ControlConnMaxTenants: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if k := warmLanes(t, db, ts); k != 1 {
		t.Errorf("lanes in use behind a pooler after 6 tenants: %d, want 1", k)
	}
	// Tenant 0's audit log locked, as a long chaining transaction elsewhere
	// would hold its chain lock; a chain pass over it waits, on its lane.
	locker, err := base.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = locker.Rollback(ctx) }()
	if _, err := locker.Exec(ctx, "LOCK TABLE "+pgx.Identifier{ts[0].Schema, "audit_log"}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	chained, detected := make(chan error, 1), make(chan error, 1)
	go func() { chained <- db.ChainAuditTenants(ctx, ts[:1], testKey, 100, store.ChainLimits{})[0].Err }()
	go func() {
		_, _, err := db.DetectAnomalies(ctx, ts[0], 0, 10, nil, func(store.AnomalyInput) (store.AnomalyOutput, error) {
			return store.AnomalyOutput{}, nil
		})
		detected <- err
	}()
	for { // both waiting, each on a control connection
		var waiting int
		if err := base.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%audit_log%' AND pid <> pg_backend_pid()`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting >= 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second) // a deadlock's bound, not a timing
	defer cancel()
	errs, retried := db.WriteAuditEntries(rctx, laneEntries("meanwhile", ts[1:], 1))
	for _, err := range append(errs, retried) {
		if err != nil {
			t.Errorf("group commit while a chain pass waits: %v", err)
		}
	}
	if _, err := db.InsertAuditRecord(rctx, ts[2], &store.AuditRecord{RequestID: "alone", Decision: store.Failed, Tool: "t", Subject: "s"}); err != nil {
		t.Errorf("record alone while a chain pass waits: %v", err)
	}
	if _, _, err := db.DetectAnomalies(rctx, ts[3], 0, 10, nil, func(store.AnomalyInput) (store.AnomalyOutput, error) {
		return store.AnomalyOutput{}, nil
	}); err != nil {
		t.Errorf("anomaly pass while a chain pass waits: %v", err)
	}
	if err := locker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-chained; err != nil {
		t.Fatal(err)
	}
	if err := <-detected; err != nil {
		t.Fatal(err)
	}
}

// TestControlLanesWaitEnds: a group commit whose parts wait for lanes
// (every connection held, as by chain passes) fails each entry with its
// context's end once that comes, stores nothing, and leaves no lane
// reserved: once the lanes are back, a group commit over every lane
// stores every record.
func TestControlLanesWaitEnds(t *testing.T) {
	ctx := context.Background()
	db, ts := openLanes(t, "waitends", 10)
	warmLanes(t, db, ts)
	var releases []func()
	for lane := range 4 {
		for range 2 {
			release, err := store.HoldControlLane(ctx, db, lane, true)
			if err != nil {
				t.Fatal(err)
			}
			releases = append(releases, release)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	errs, _ := db.WriteAuditEntries(wctx, laneEntries("waited", ts, 1))
	cancel()
	for i, err := range errs {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("entry %d: %v, want the context's end", i, err)
		}
	}
	for _, release := range releases {
		release()
	}
	for i, tn := range ts {
		if _, ok := auditTxs(t, db, tn)[fmt.Sprintf("waited-%d-0", i)]; ok {
			t.Errorf("%s: a record whose write failed was stored", tn.Key)
		}
	}
	// Every lane's two connections can be taken again: none was left
	// reserved by the parts that gave up.
	hctx, hcancel := context.WithTimeout(ctx, 5*time.Second) // a leak's bound, not a timing
	releases = nil
	for lane := range 4 {
		for range 2 {
			release, err := store.HoldControlLane(hctx, db, lane, true)
			if err != nil {
				t.Fatalf("lane %d: %v", lane, err)
			}
			releases = append(releases, release)
		}
	}
	hcancel()
	for _, release := range releases {
		release()
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			<-start
			errs, retried := db.WriteAuditEntries(ctx, laneEntries(fmt.Sprintf("after%d", w), ts, 1))
			for _, err := range append(errs, retried) {
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	close(start)
	wg.Wait()
}
