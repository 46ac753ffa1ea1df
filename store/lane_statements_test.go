package store_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// openLaneStatements opens db over n new tenants with one control lane of
// one connection (so that one connection runs all the audit work) whose
// audit statements are prepared on their first use (unless opts says
// otherwise), at most opts.ControlPreparedStatements of them.
func openLaneStatements(t *testing.T, prefix string, n int, opts store.Options) (*store.DB, *store.DB, []*tenancy.Tenant) {
	t.Helper()
	base := storetest.MustOpenDB(t)
	var ts []*tenancy.Tenant
	for i := range n {
		ts = append(ts, mustTenant(t, base, fmt.Sprintf("%s%d.example", prefix, i)))
	}
	store.OneConnPerControlLane(t)
	opts.ControlConns, opts.ControlLanes, opts.ControlConnMaxTenants = 1, 1, -1
	if opts.PrepareAfter == 0 {
		opts.PrepareAfter = 1
	}
	db, err := store.Open(context.Background(), base.Pool().Config().ConnString(), &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	// These tests are of the group commit's way straight into the
	// tenants' audit logs, its per-tenant statements, and the chain pass
	// of records written that way: the way when the intake cannot be used
	// (audit_intake.go). TestControlLaneIntake is the intake's.
	store.SkipIntake(db, time.Hour)
	return base, db, ts
}

// auditRound writes one record in each tenant of ts through the group
// commit and chains them, failing unless every record is stored and
// chained; it returns the chain results, and the error of a group commit
// that fell back to writing its records one by one (each of them stored).
func auditRound(t *testing.T, db *store.DB, ts []*tenancy.Tenant, round int) ([]store.ChainResult, error) {
	t.Helper()
	ctx := context.Background()
	errs, retried := db.WriteAuditEntries(ctx, laneEntries(fmt.Sprintf("round%d", round), ts, 1))
	for _, err := range errs {
		if err != nil {
			t.Fatalf("round %d: record lost: %v", round, err)
		}
	}
	res := db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{})
	for _, r := range res {
		if r.Err != nil || r.N != 1 {
			t.Fatalf("round %d: %s chained %d records, %v; want 1", round, r.Tenant.Key, r.N, r.Err)
		}
	}
	return res, retried
}

// writeNoFallBack writes es through the group commit, failing on any
// record lost and when a batch fell back to writing its records one by
// one.
func writeNoFallBack(t *testing.T, db *store.DB, es []store.AuditEntry) {
	t.Helper()
	errs, retried := db.WriteAuditEntries(context.Background(), es)
	for _, err := range errs {
		if err != nil {
			t.Fatalf("record lost: %v", err)
		}
	}
	if retried != nil {
		t.Errorf("the group commit fell back: %v", retried)
	}
}

// auditRoundNoFallBack is auditRound, failing also when the group commit
// fell back to writing records one by one or a tenant was chained alone.
func auditRoundNoFallBack(t *testing.T, db *store.DB, ts []*tenancy.Tenant, round int) {
	t.Helper()
	res, retried := auditRound(t, db, ts, round)
	if retried != nil {
		t.Errorf("round %d: the group commit fell back: %v", round, retried)
	}
	for _, r := range res {
		if r.Group < 0 {
			t.Errorf("round %d: %s chained alone (its group failed)", round, r.Tenant.Key)
		}
	}
}

// tenantStatements returns the statements prepared on the only control
// lane connection that name tn's audit log, by their first word.
func tenantStatements(t *testing.T, db *store.DB, tn *tenancy.Tenant) map[string]bool {
	t.Helper()
	all, err := store.ControlLanePrepared(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, conn := range all {
		for _, sql := range conn {
			if strings.Contains(sql, pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()) {
				got[strings.Fields(sql)[0]] = true
			}
		}
	}
	return got
}

func verifyAll(t *testing.T, db *store.DB, ts []*tenancy.Tenant, records int) {
	t.Helper()
	for _, tn := range ts {
		rep, err := db.VerifyAudit(context.Background(), tn, testKey)
		if err != nil || !rep.OK() || rep.Verified != records || rep.Pending != 0 {
			t.Errorf("%s: %+v, %v; want %d records verified", tn.Key, rep, err, records)
		}
	}
}

// TestControlLaneStatementsPrepared: each tenant's group-commit INSERT and
// chain SELECT and UPDATE are prepared on the control lane connection that
// runs them, naming that tenant's table, and the records they write and
// chain verify; with a bound smaller than the statements in use, the
// connection never holds more than the bound, and nothing is lost.
func TestControlLaneStatementsPrepared(t *testing.T) {
	t.Run("room for all", func(t *testing.T) {
		_, db, ts := openLaneStatements(t, "lanestmt", 3, store.Options{ControlPreparedStatements: 100})
		for round := range 3 {
			auditRoundNoFallBack(t, db, ts, round)
		}
		for _, tn := range ts {
			if got := tenantStatements(t, db, tn); !got["INSERT"] || !got["SELECT"] || !got["UPDATE"] {
				t.Errorf("%s: prepared %v, want its INSERT, SELECT and UPDATE", tn.Key, got)
			}
		}
		verifyAll(t, db, ts, 3)
	})
	t.Run("bound", func(t *testing.T) {
		const bound = 4
		_, db, ts := openLaneStatements(t, "lanestmtcap", 4, store.Options{ControlPreparedStatements: bound})
		for round := range 4 {
			auditRound(t, db, ts, round)
			n := 0
			for _, tn := range ts {
				n += len(tenantStatements(t, db, tn))
			}
			if n == 0 || n > bound {
				t.Errorf("round %d: %d tenant statements prepared, want 1 to %d", round, n, bound)
			}
		}
		verifyAll(t, db, ts, 4)
	})
	// Nothing prepared: off, and behind a transaction pooler
	// even with a bound (the next transaction may run on another backend).
	for i, tc := range []struct {
		name string
		opts store.Options
	}{
		{"off", store.Options{ControlPreparedStatements: -1}},
		{"behind a pooler", store.Options{TransactionPooler: true, ControlPreparedStatements: 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, db, ts := openLaneStatements(t, fmt.Sprintf("lanestmtnone%d-", i), 2, tc.opts)
			auditRound(t, db, ts, 0)
			auditRound(t, db, ts, 1)
			for _, tn := range ts {
				if got := tenantStatements(t, db, tn); len(got) > 0 {
					t.Errorf("%s: prepared %v", tn.Key, got)
				}
			}
			verifyAll(t, db, ts, 2)
		})
	}
}

// TestControlLaneStatementsAfterMigration: a migration that changes some
// tenant's audit log under the statements prepared for it, or under the
// group commit's INSERT shared by every tenant, loses no record, breaks no
// chain and sends no batch or chain pass to its fall-back: PostgreSQL
// analyses and plans them again by itself, and their results are cast to
// fixed types, so a column's new type or length (request_id, which the
// chain pass reads; at, which the INSERT returns) does not change their
// row type, which PostgreSQL would refuse in a prepared statement ("cached
// plan must not change result type"; before the casts, the shared INSERT
// was refused at every batch holding a migrated tenant and an unmigrated
// one). With the lanes' statements prepared (at their second use, as a
// server runs) and with them off.
func TestControlLaneStatementsAfterMigration(t *testing.T) {
	ctx := context.Background()
	migrations := []struct{ name, alter string }{
		{"new column", "ADD COLUMN lane_test_note text NOT NULL DEFAULT ''"},
		{"chain SELECT's result type", "ALTER COLUMN request_id TYPE varchar(300)"},
		// timestamptz(6) keeps every value, so the records' hashes still
		// match (a shorter precision would round them: verify reports it)
		{"INSERT's result type", "ALTER COLUMN at TYPE timestamptz(6)"},
	}
	for i, m := range migrations {
		for _, prepared := range []int{100, -1} {
			t.Run(fmt.Sprintf("%s, prepared %d", m.name, prepared), func(t *testing.T) {
				base, db, ts := openLaneStatements(t, fmt.Sprintf("lanemig%d-%d-", i, max(prepared, 0)), 2,
					store.Options{ControlPreparedStatements: prepared, PrepareAfter: store.DefaultPrepareAfter})
				for round := range 3 {
					auditRound(t, db, ts, round)
				}
				if got := tenantStatements(t, db, ts[0]); prepared > 0 && len(got) != 3 {
					t.Fatalf("before the migration: prepared %v, want 3 statements", got)
				}
				// Tenant 0 migrated, tenant 1 not: their records share each
				// batch and chain pass.
				if _, err := base.Pool().Exec(ctx, "ALTER TABLE "+pgx.Identifier{ts[0].Schema, "audit_log"}.Sanitize()+" "+m.alter); err != nil {
					t.Fatal(err)
				}
				for round := 3; round < 6; round++ {
					auditRoundNoFallBack(t, db, ts, round)
				}
				if got := tenantStatements(t, db, ts[0]); prepared > 0 && len(got) != 3 {
					t.Errorf("after the migration: prepared %v, want 3 statements", got)
				}
				verifyAll(t, db, ts, 6)
			})
		}
	}
}

// TestControlLaneStatementsMigratedTenantAmongOthers: a migrated tenant A
// written every few batches beside a busy tenant B, whose INSERT is
// prepared by its own batches in between, while A's runs as the statement
// shared by every tenant or prepared for it: no batch falls back. (Found
// by review: before the INSERT's result was cast, A's prepared INSERT was
// refused, every tenant of the batch forgotten, and A, never reaching its
// second use again, ran the shared INSERT, refused too, in every batch.)
func TestControlLaneStatementsMigratedTenantAmongOthers(t *testing.T) {
	ctx := context.Background()
	base, db, ts := openLaneStatements(t, "lanemigab", 2, store.Options{ControlPreparedStatements: 100, PrepareAfter: store.DefaultPrepareAfter})
	a, b := ts[0], ts[1]
	write := func(label string, tn ...*tenancy.Tenant) error {
		errs, retried := db.WriteAuditEntries(ctx, laneEntries(label, tn, 1))
		for _, e := range errs {
			if e != nil {
				t.Fatalf("%s: record lost: %v", label, e)
			}
		}
		return retried
	}
	for r := range 3 {
		if err := write(fmt.Sprintf("warm%d", r), a, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := base.Pool().Exec(ctx, "ALTER TABLE "+pgx.Identifier{a.Schema, "audit_log"}.Sanitize()+" ALTER COLUMN at TYPE timestamptz(6)"); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for r := range 6 {
		if err := write(fmt.Sprintf("ab%d", r), a, b); err != nil {
			failed++
			t.Logf("batch %d with A and B: fell back: %v", r, err)
		}
		write(fmt.Sprintf("b%d-1", r), b)
		write(fmt.Sprintf("b%d-2", r), b)
	}
	if failed > 0 {
		t.Errorf("%d of 6 batches with the migrated tenant fell back", failed)
	}
	for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
		if r.Err != nil || r.Group < 0 {
			t.Errorf("chaining %s: %+v", r.Tenant.Key, r)
		}
	}
	for tn, want := range map[*tenancy.Tenant]int{a: 3 + 6, b: 3 + 6 + 12} {
		if rep, err := db.VerifyAudit(ctx, tn, testKey); err != nil || !rep.OK() || rep.Verified != want {
			t.Errorf("%s: %+v, %v; want %d records verified", tn.Key, rep, err, want)
		}
	}
}

// TestControlLaneStatementsSeveralRecords: records of one tenant in one
// group commit, and their links in one chain pass, go through the
// statements prepared for that tenant or, for the tenants without any
// (none prepared, or past the bound), one by one through the single-row
// statements shared by every tenant, the two kinds in one transaction:
// either way every record gets its id in the order given, nothing falls
// back, and every chain verifies.
func TestControlLaneStatementsSeveralRecords(t *testing.T) {
	type mode struct {
		name string
		opts store.Options
		per  int // records of each tenant in each round
	}
	var modes []mode
	for _, m := range []mode{
		{name: "prepared", opts: store.Options{ControlPreparedStatements: 100}},
		{name: "some prepared", opts: store.Options{ControlPreparedStatements: 6}},
		{name: "off", opts: store.Options{ControlPreparedStatements: -1}},
		{name: "behind a pooler", opts: store.Options{TransactionPooler: true}},
	} {
		// 3 records of a tenant go one by one when its statements are not
		// prepared, 12 (more than rowPathMax) in one multi-row statement.
		for _, per := range []int{3, 12} {
			modes = append(modes, mode{fmt.Sprintf("%s/records=%d", m.name, per), m.opts, per})
		}
	}
	for i, tc := range modes {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			_, db, ts := openLaneStatements(t, fmt.Sprintf("lanestmtrecs%d-", i), 4, tc.opts)
			perRound, rounds := tc.per, 3
			for round := range rounds {
				es := laneEntries(fmt.Sprint("recs", round), ts, perRound)
				writeNoFallBack(t, db, es)
				last := map[string]int64{}
				for _, e := range es {
					if e.Rec.ID <= last[e.Tenant.ID] || e.Rec.At.IsZero() {
						t.Fatalf("round %d: %s's record %s: id %d after %d, at %v", round, e.Tenant.Key, e.Rec.RequestID, e.Rec.ID, last[e.Tenant.ID], e.Rec.At)
					}
					last[e.Tenant.ID] = e.Rec.ID
				}
				for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
					if r.Err != nil || r.N != perRound || r.Group < 0 {
						t.Fatalf("round %d: %s chained %d records (group %d), %v; want %d in its group", round, r.Tenant.Key, r.N, r.Group, r.Err, perRound)
					}
				}
				// Each record was stored under the id it was given.
				for _, e := range es {
					var requestID string
					if err := db.Pool().QueryRow(ctx, "SELECT request_id FROM "+pgx.Identifier{e.Tenant.Schema, "audit_log"}.Sanitize()+" WHERE id = $1", e.Rec.ID).Scan(&requestID); err != nil || requestID != e.Rec.RequestID {
						t.Fatalf("%s: id %d holds %q, %v; want %q", e.Tenant.Key, e.Rec.ID, requestID, err, e.Rec.RequestID)
					}
				}
			}
			if strings.HasPrefix(tc.name, "some prepared") {
				var with, without int
				for _, tn := range ts {
					if tenantStatements(t, db, tn)["UPDATE"] {
						with++
					} else {
						without++
					}
				}
				if with == 0 || without == 0 {
					t.Errorf("%d tenants with their UPDATE prepared, %d without: the test shows no mix", with, without)
				}
			}
			verifyAll(t, db, ts, perRound*rounds)
		})
	}
}

// TestControlLaneStatementsClearStaleMarks: a chain pass removes the stale
// pending marks of the tenants it leaves with nothing unchained, whether
// their links went through their prepared UPDATEs, one by one through the
// single-row statement shared by every tenant, or through one multi-row
// statement (the mark's removal checks that nothing is left unchained, so
// it must come after the tenant's links in the transaction).
func TestControlLaneStatementsClearStaleMarks(t *testing.T) {
	for i, tc := range []struct {
		name string
		opts store.Options
		per  int
	}{
		{"prepared", store.Options{ControlPreparedStatements: 100}, 2},
		{"off", store.Options{ControlPreparedStatements: -1}, 2},
		{"off, many records", store.Options{ControlPreparedStatements: -1}, 12},
	} {
		prepared := tc.opts.ControlPreparedStatements > 0
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			_, db, ts := openLaneStatements(t, fmt.Sprintf("lanestmtmarks%d-", i), 3, tc.opts)
			ids := make([]string, len(ts))
			for j, tn := range ts {
				ids[j] = tn.ID
			}
			marks := func() int {
				var n int
				if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM gatehouse.audit_pending WHERE tenant_id = ANY($1::uuid[])", ids).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			warm := 0
			if prepared {
				// A pass that chains records first, so that the tenants'
				// UPDATEs are prepared for the one that clears the marks
				// (a chain pass's statements are prepared once passes
				// have chained records: laneStatementIfUsed).
				writeNoFallBack(t, db, laneEntries("warm", ts, 1))
				for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
					if r.Err != nil || r.N != 1 {
						t.Fatalf("%s chained %d, %v", r.Tenant.Key, r.N, r.Err)
					}
				}
				warm = 1
			}
			writeNoFallBack(t, db, laneEntries("marks", ts, tc.per))
			if n := marks(); n != len(ts) {
				t.Fatalf("%d tenants marked, want %d", n, len(ts))
			}
			if _, err := db.Pool().Exec(ctx, "UPDATE gatehouse.audit_pending SET marked_at = now() - interval '11 minutes' WHERE tenant_id = ANY($1::uuid[])", ids); err != nil {
				t.Fatal(err)
			}
			for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
				if r.Err != nil || r.N != tc.per || r.Group < 0 {
					t.Fatalf("%s chained %d (group %d), %v", r.Tenant.Key, r.N, r.Group, r.Err)
				}
			}
			if n := marks(); n != 0 {
				t.Errorf("%d stale marks left after every record was chained", n)
			}
			for _, tn := range ts {
				if got := tenantStatements(t, db, tn); got["UPDATE"] != prepared {
					t.Errorf("%s: prepared %v, want its UPDATE prepared: %v", tn.Key, got, prepared)
				}
			}
			verifyAll(t, db, ts, warm+tc.per)
		})
	}
}

// TestAuditCountBeyondInteger: a record whose count (aggregated floods)
// exceeds the column's integer is stored with the largest count the column
// holds, in the group commit, without a fall-back, whichever statement
// writes it; before, it wrapped to a negative count, failed the whole
// batch and then its own record.
func TestAuditCountBeyondInteger(t *testing.T) {
	for i, tc := range []struct {
		name string
		opts store.Options
	}{
		{"prepared", store.Options{ControlPreparedStatements: 100}},
		{"off", store.Options{ControlPreparedStatements: -1}},
		{"behind a pooler", store.Options{TransactionPooler: true}},
	} {
		ctx := context.Background()
		_, db, ts := openLaneStatements(t, fmt.Sprintf("lanecount%d-", i), 2, tc.opts)
		es := laneEntries("count", ts, 1)
		es[0].Rec.Count = 1 << 40
		es[1].Rec.Count = math.MaxInt32 + 1
		writeNoFallBack(t, db, es)
		for _, e := range es {
			if err := db.SettleAudit(ctx, e.Tenant); err != nil { // from the intake into the log
				t.Fatal(err)
			}
			var count int64
			if err := db.Pool().QueryRow(ctx, "SELECT count FROM "+pgx.Identifier{e.Tenant.Schema, "audit_log"}.Sanitize()+" WHERE request_id = $1", e.Rec.RequestID).Scan(&count); err != nil || count != math.MaxInt32 {
				t.Errorf("%s: count %d, %v; want %d", tc.name, count, err, math.MaxInt32)
			}
		}
	}
}

// TestControlLaneStatementsIdleTenants: chain passes over tenants with
// nothing to chain (as the chainer's sweep of marked tenants visits them,
// after a start and every five minutes) prepare none of their statements,
// however often they come, so the connection's bound, which nothing
// evicts, is left to the tenants whose records are chained there: their
// SELECT and UPDATE are prepared once two passes have chained records of
// theirs on it.
func TestControlLaneStatementsIdleTenants(t *testing.T) {
	ctx := context.Background()
	// Room for the busy tenants' INSERT, SELECT and UPDATE, not for any
	// idle tenant's statement besides.
	_, db, ts := openLaneStatements(t, "lanestmtidle", 6, store.Options{ControlPreparedStatements: 6, PrepareAfter: 2})
	idle, busy := ts[:4], ts[4:]
	for pass := range 3 {
		for _, r := range db.ChainAuditTenants(ctx, idle, testKey, 100, store.ChainLimits{}) {
			if r.Err != nil || r.N != 0 {
				t.Fatalf("pass %d: %s chained %d records, %v; want none", pass, r.Tenant.Key, r.N, r.Err)
			}
		}
	}
	for _, tn := range idle {
		if got := tenantStatements(t, db, tn); len(got) > 0 {
			t.Errorf("%s, never with anything to chain: prepared %v", tn.Key, got)
		}
	}
	for round := range 3 {
		auditRoundNoFallBack(t, db, busy, round)
		// The idle tenants come again between the busy ones' passes.
		for _, r := range db.ChainAuditTenants(ctx, idle, testKey, 100, store.ChainLimits{}) {
			if r.Err != nil || r.N != 0 {
				t.Fatalf("round %d: %s chained %d records, %v; want none", round, r.Tenant.Key, r.N, r.Err)
			}
		}
		for _, tn := range busy {
			got := tenantStatements(t, db, tn)
			// Due at the third pass: the two before it chained records.
			if want := round == 2; got["SELECT"] != want || got["UPDATE"] != want {
				t.Errorf("round %d: %s prepared %v, want its SELECT and UPDATE %v", round, tn.Key, got, map[bool]string{true: "prepared", false: "not yet"}[want])
			}
		}
	}
	for _, tn := range idle {
		if got := tenantStatements(t, db, tn); len(got) > 0 {
			t.Errorf("%s, never with anything to chain: prepared %v", tn.Key, got)
		}
	}
	verifyAll(t, db, busy, 3)
}
