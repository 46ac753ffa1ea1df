package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// laneStatementModes are the ways a tenant's audit statements run on a
// control lane: prepared for it; prepared for some tenants only (the
// others' through the statements shared by every tenant); none prepared;
// behind a transaction pooler (nothing prepared, multi-row statements).
var laneStatementModes = []struct {
	name string
	opts store.Options
}{
	{"prepared", store.Options{ControlPreparedStatements: 100}},
	{"some prepared", store.Options{ControlPreparedStatements: 4}},
	{"off", store.Options{ControlPreparedStatements: -1}},
	{"pooler", store.Options{TransactionPooler: true}},
}

// TestControlLaneSearchPathDoesNotLeak: the search_path set for tenants
// whose statements are not prepared, and the plan_cache_mode set for the
// prepared ones, end with the group commit's or the chain pass's
// transaction: the lane connections' sessions keep their own.
func TestControlLaneSearchPathDoesNotLeak(t *testing.T) {
	for i, tc := range laneStatementModes {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			_, db, ts := openLaneStatements(t, fmt.Sprintf("rvpath%d-", i), 5, tc.opts)
			before, err := store.ControlLaneSettings(ctx, db, "search_path")
			if err != nil {
				t.Fatal(err)
			}
			for round := range 3 {
				auditRoundNoFallBack(t, db, ts, round)
				after, err := store.ControlLaneSettings(ctx, db, "search_path")
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(after) != fmt.Sprint(before) {
					t.Fatalf("round %d: search_path %v after, %v before", round, after, before)
				}
				pcm, _ := store.ControlLaneSettings(ctx, db, "plan_cache_mode")
				if fmt.Sprint(pcm) != "[auto]" {
					t.Fatalf("round %d: plan_cache_mode %v", round, pcm)
				}
			}
			verifyAll(t, db, ts, 3)
		})
	}
}

// TestControlLaneOddRecords: records with NUL bytes, invalid UTF-8, a
// MiB-long request id, a count of zero or below, and empty fields go
// through every kind of statement without a fall-back; each is stored
// under the id it was given, and the chains verify.
func TestControlLaneOddRecords(t *testing.T) {
	for i, tc := range laneStatementModes {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			_, db, ts := openLaneStatements(t, fmt.Sprintf("rvodd%d-", i), 3, tc.opts)
			auditRoundNoFallBack(t, db, ts, 0) // warm: some statements prepared
			auditRoundNoFallBack(t, db, ts, 1)
			var es []store.AuditEntry
			for j, tn := range ts {
				for k, r := range []*store.AuditRecord{
					{RequestID: "nul\x00byte", Decision: store.Allowed, Subject: "s\x00"},
					{RequestID: strings.Repeat("x", 1<<20), Decision: store.Denied, Subject: "s", UserAgent: strings.Repeat("é", 1<<18)},
					{RequestID: "zero", Decision: store.RateLimited, Subject: "s", Count: 0},
					{RequestID: "neg", Decision: store.RateLimited, Subject: "s", Count: -5},
					{RequestID: "bad\xff\xfeutf8", Decision: store.Allowed, Subject: "\xc3"},
					{RequestID: "", Decision: store.Allowed, Subject: ""},
				} {
					r.Via = fmt.Sprint(j, k)
					es = append(es, store.AuditEntry{Tenant: tn, Rec: r})
				}
			}
			writeNoFallBack(t, db, es)
			for _, e := range es {
				var via string
				var count int
				if err := db.Pool().QueryRow(ctx, "SELECT via, count FROM "+pgx.Identifier{e.Tenant.Schema, "audit_log"}.Sanitize()+" WHERE id = $1", e.Rec.ID).Scan(&via, &count); err != nil || via != e.Rec.Via || count < 1 {
					t.Errorf("%s id %d: via %q count %d %v; want %q", e.Tenant.Key, e.Rec.ID, via, count, err, e.Rec.Via)
				}
			}
			for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 100, store.ChainLimits{}) {
				if r.Err != nil || r.Group < 0 || r.N != 6 {
					t.Errorf("chain %s: %+v", r.Tenant.Key, r)
				}
			}
			verifyAll(t, db, ts, 8)
		})
	}
}

// TestControlLaneManyRecordsOneTenant: 20,000 records of one tenant in one
// group commit, beside another tenant's few, and then chained, in every
// mode: no fall-back, the ids in the order given, the chains verify.
func TestControlLaneManyRecordsOneTenant(t *testing.T) {
	for i, tc := range laneStatementModes {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			_, db, ts := openLaneStatements(t, fmt.Sprintf("rvmany%d-", i), 2, tc.opts)
			const n = 20000
			es := laneEntries("many", ts[:1], n)
			es = append(es, laneEntries("other", ts[1:], 3)...)
			writeNoFallBack(t, db, es)
			var last int64
			for _, e := range es[:n] {
				if e.Rec.ID <= last {
					t.Fatalf("id %d after %d", e.Rec.ID, last)
				}
				last = e.Rec.ID
			}
			total := 0
			for pass := 0; ; pass++ {
				res := db.ChainAuditTenants(ctx, ts, testKey, 2000, store.ChainLimits{Records: 4000})
				more := false
				for _, r := range res {
					if r.Err != nil || r.Group < 0 {
						t.Fatalf("pass %d: chain %s: %+v", pass, r.Tenant.Key, r)
					}
					total += r.N
					more = more || r.More
				}
				if !more {
					break
				}
			}
			if total != n+3 {
				t.Errorf("chained %d records, want %d", total, n+3)
			}
			for tn, want := range map[*tenancy.Tenant]int{ts[0]: n, ts[1]: 3} {
				rep, err := db.VerifyAudit(ctx, tn, testKey)
				if err != nil || !rep.OK() || rep.Verified != want {
					t.Errorf("%s: %+v %v; want %d", tn.Key, rep, err, want)
				}
			}
		})
	}
}

// TestControlLaneChainColumnMigrations: migrations of the chain's columns
// and of count in some tenants' audit logs, under the statements prepared
// for them and under those shared by every tenant (the migrated tenant
// first, the one the shared statements are prepared under, and among
// others): no fall-back, no refused plan, every chain verifies.
func TestControlLaneChainColumnMigrations(t *testing.T) {
	ctx := context.Background()
	migrations := []struct{ name, alter string }{
		{"key_id varchar", "ALTER COLUMN key_id TYPE varchar(64)"},
		{"count bigint", "ALTER COLUMN count TYPE bigint"},
		{"count smallint", "ALTER COLUMN count TYPE smallint"},
		{"chain_seq numeric", "ALTER COLUMN chain_seq TYPE numeric"},
		{"prev_hash/hash domain", "ALTER COLUMN hash TYPE bytea, ALTER COLUMN prev_hash TYPE bytea"},
		{"request_id varchar", "ALTER COLUMN request_id TYPE varchar(300)"},
		{"at timestamptz(6)", "ALTER COLUMN at TYPE timestamptz(6)"},
		{"dropped column", "ADD COLUMN x int|DROP COLUMN x"},
	}
	for i, m := range migrations {
		for j, tc := range laneStatementModes {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				opts := tc.opts
				opts.PrepareAfter = store.DefaultPrepareAfter
				base, db, ts := openLaneStatements(t, fmt.Sprintf("rvmig%d-%d-", i, j), 4, opts)
				for round := range 3 {
					auditRound(t, db, ts, round)
				}
				for _, tn := range []*tenancy.Tenant{ts[0], ts[2]} {
					for _, alter := range strings.Split(m.alter, "|") {
						if _, err := base.Pool().Exec(ctx, "ALTER TABLE "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+" "+alter); err != nil {
							t.Fatal(err)
						}
					}
				}
				for round := 3; round < 7; round++ {
					auditRoundNoFallBack(t, db, ts, round)
					// the migrated tenants alone, then with others in another order
					writeNoFallBack(t, db, laneEntries(fmt.Sprint("alone", round), []*tenancy.Tenant{ts[2], ts[0]}, 2))
					for _, r := range db.ChainAuditTenants(ctx, []*tenancy.Tenant{ts[3], ts[2], ts[0]}, testKey, 100, store.ChainLimits{}) {
						if r.Err != nil || r.Group < 0 {
							t.Errorf("round %d: chain %s: %+v", round, r.Tenant.Key, r)
						}
					}
				}
				for k, tn := range ts {
					want := 7
					if k == 0 || k == 2 {
						want += 4 * 2
					}
					rep, err := db.VerifyAudit(ctx, tn, testKey)
					if err != nil || !rep.OK() || rep.Verified != want {
						t.Errorf("%s: %+v %v; want %d", tn.Key, rep, err, want)
					}
				}
			})
		}
	}
}

// TestControlLaneConcurrentWritesAndChains: group commits and chain passes
// at once over the same tenants, on two lanes of two connections, in every
// mode: every record stored once, no fall-back, every chain verifies. Run
// with -race.
func TestControlLaneConcurrentWritesAndChains(t *testing.T) {
	for i, tc := range laneStatementModes {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			base := storetest.MustOpenDB(t)
			var ts []*tenancy.Tenant
			for j := range 10 {
				ts = append(ts, mustTenant(t, base, fmt.Sprintf("rvconc%d-%d.example", i, j)))
			}
			opts := tc.opts
			opts.ControlLanes, opts.ControlConnMaxTenants = 2, -1
			opts.PrepareAfter = store.DefaultPrepareAfter
			db, err := store.Open(ctx, base.Pool().Config().ConnString(), &opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(db.Close)
			store.SetControlLaneTenants(db, 3)
			const writers, batches = 3, 40
			var wg sync.WaitGroup
			var mu sync.Mutex
			written := map[string]int{}
			fellBack := 0
			done := make(chan struct{})
			for w := range writers {
				wg.Go(func() {
					for b := range batches {
						var sub []*tenancy.Tenant
						for j, tn := range ts {
							if (j+b+w)%3 != 0 {
								sub = append(sub, tn)
							}
						}
						es := laneEntries(fmt.Sprintf("w%d-%d", w, b), sub, 1+(b%3))
						errs, retried := db.WriteAuditEntries(ctx, es)
						mu.Lock()
						if retried != nil {
							fellBack++
						}
						for k, e := range es {
							if errs[k] != nil {
								t.Errorf("lost: %v", errs[k])
								continue
							}
							written[e.Tenant.ID]++
						}
						mu.Unlock()
					}
				})
			}
			chainErrs := 0
			var cw sync.WaitGroup
			cw.Go(func() {
				for {
					select {
					case <-done:
						return
					default:
					}
					for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 7, store.ChainLimits{Tenants: 4}) {
						if r.Err != nil || r.Group < 0 {
							chainErrs++
							t.Logf("chain %s: %+v", r.Tenant.Key, r)
						}
					}
				}
			})
			wg.Wait()
			close(done)
			cw.Wait()
			for {
				more := false
				for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 1000, store.ChainLimits{}) {
					if r.Err != nil {
						t.Fatal(r.Err)
					}
					more = more || r.More
				}
				if !more {
					break
				}
			}
			if fellBack > 0 || chainErrs > 0 {
				t.Errorf("%d group commits fell back, %d chain results failed", fellBack, chainErrs)
			}
			for _, tn := range ts {
				rep, err := db.VerifyAudit(ctx, tn, testKey)
				if err != nil || !rep.OK() || rep.Verified != written[tn.ID] || rep.Pending != 0 {
					t.Errorf("%s: %+v %v; want %d", tn.Key, rep, err, written[tn.ID])
				}
			}
		})
	}
}
