package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// openLaneStatements opens db over n new tenants with one control lane of
// one connection (so that one connection runs all the audit work) whose
// audit statements are prepared on their first use, at most bound of them.
func openLaneStatements(t *testing.T, prefix string, n int, opts store.Options) (*store.DB, *store.DB, []*tenancy.Tenant) {
	t.Helper()
	base := storetest.MustOpenDB(t)
	var ts []*tenancy.Tenant
	for i := range n {
		ts = append(ts, mustTenant(t, base, fmt.Sprintf("%s%d.example", prefix, i)))
	}
	store.OneConnPerControlLane(t)
	opts.ControlConns, opts.ControlLanes, opts.ControlConnMaxTenants, opts.PrepareAfter = 1, 1, -1, 1
	db, err := store.Open(context.Background(), base.Pool().Config().ConnString(), &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
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
	// Nothing prepared: off, by default, and behind a transaction pooler
	// even with a bound (the next transaction may run on another backend).
	for i, tc := range []struct {
		name string
		opts store.Options
	}{
		{"off", store.Options{ControlPreparedStatements: -1}},
		{"default", store.Options{}},
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

// TestControlLaneStatementsAfterMigration: a migration that changes an
// audit log under its prepared statements loses no record and breaks no
// chain. A change PostgreSQL re-plans by itself (a new column) needs
// nothing; one it refuses in a prepared statement, a result column's type
// (the chain SELECT's request_id, the INSERT's RETURNING at), fails the
// batch and the group, whose fall-backs run unprepared, and the next
// rounds prepare the statements afresh.
func TestControlLaneStatementsAfterMigration(t *testing.T) {
	ctx := context.Background()
	for i, tc := range []struct {
		name, alter string
		// what the first round after the migration meets: the batch's
		// fall-back (its prepared INSERT refused), tenant 0's chaining
		// alone (its group's prepared SELECT refused)
		batchFails, groupFails bool
	}{
		{name: "new column", alter: "ADD COLUMN lane_test_note text NOT NULL DEFAULT ''"},
		{name: "chain SELECT's result type", alter: "ALTER COLUMN request_id TYPE varchar(300)", groupFails: true},
		// (timestamptz(6) keeps every value: the records' hashes still
		// match; the batch's failure drops the tenant's SELECT too, so
		// the chain pass prepares it afresh and does not fail)
		{name: "INSERT's result type", alter: "ALTER COLUMN at TYPE timestamptz(6)", batchFails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, db, ts := openLaneStatements(t, fmt.Sprintf("lanemig%d-", i), 2, store.Options{ControlPreparedStatements: 100})
			auditRound(t, db, ts, 0)
			auditRound(t, db, ts, 1)
			if got := tenantStatements(t, db, ts[0]); len(got) != 3 {
				t.Fatalf("before the migration: prepared %v, want 3 statements", got)
			}
			if _, err := base.Pool().Exec(ctx, "ALTER TABLE "+pgx.Identifier{ts[0].Schema, "audit_log"}.Sanitize()+" "+tc.alter); err != nil {
				t.Fatal(err)
			}
			res, retried := auditRound(t, db, ts, 2)
			if (retried != nil) != tc.batchFails {
				t.Errorf("first round after the migration: group commit's fall-back %v, want one: %v", retried, tc.batchFails)
			}
			if (res[0].Group < 0) != tc.groupFails {
				t.Errorf("first round after the migration: tenant 0 chained in group %d, want alone: %v", res[0].Group, tc.groupFails)
			}
			// The refused statements were dropped: the next rounds prepare
			// them afresh and run them without falling back.
			for round := 3; round < 5; round++ {
				res, retried := auditRound(t, db, ts, round)
				if retried != nil {
					t.Errorf("round %d: the group commit fell back again: %v", round, retried)
				}
				for _, r := range res {
					if r.Group < 0 {
						t.Errorf("round %d: %s chained alone again", round, r.Tenant.Key)
					}
				}
			}
			if got := tenantStatements(t, db, ts[0]); len(got) != 3 {
				t.Errorf("after the migration: prepared %v, want 3 statements again", got)
			}
			verifyAll(t, db, ts, 5)
		})
	}
}
