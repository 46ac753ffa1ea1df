package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// writeAudit writes n records in tn's audit log, each in its own tenant
// transaction.
func writeAudit(t testing.TB, db *store.DB, tn *tenancy.Tenant, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: store.Allowed, Tool: "whoami", Subject: fmt.Sprint("s", i)})
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// mustChainIntact checks that tn's chain verifies, holds want records at
// positions 1…want (each once) with none left unchained, and that its
// head in the control schema is the last of them.
func mustChainIntact(t testing.TB, db *store.DB, tn *tenancy.Tenant, want int64) {
	t.Helper()
	ctx := context.Background()
	rep, err := db.VerifyAudit(ctx, tn, testKey)
	if err != nil || !rep.OK() || int64(rep.Verified) != want || rep.Pending != 0 {
		t.Fatalf("%s: verify %+v, %v; want %d records chained", tn.Key, rep, err, want)
	}
	var records, distinct, first, last, head int64
	if err := db.Pool().QueryRow(ctx, "SELECT count(*), count(DISTINCT chain_seq), coalesce(min(chain_seq), 0), coalesce(max(chain_seq), 0), "+
		"coalesce((SELECT chain_seq FROM gatehouse.audit_heads WHERE tenant_id = $1), 0) FROM "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize(), tn.ID).
		Scan(&records, &distinct, &first, &last, &head); err != nil {
		t.Fatal(err)
	}
	if records != want || distinct != want || last != want || head != want || (want > 0 && first != 1) {
		t.Fatalf("%s: %d records, %d positions from %d to %d, head %d; want %d", tn.Key, records, distinct, first, last, head, want)
	}
}

// TestChainAuditTenantsBounds: many tenants are chained together, at most
// limits.Tenants a transaction and limits.Records records read in each;
// a tenant that had more than its share is reported with More and chained
// on the next call; the chains are what one tenant at a time would give.
func TestChainAuditTenantsBounds(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	var ts []*tenancy.Tenant
	for i := range 7 {
		tn := mustTenant(t, db, fmt.Sprintf("many%d.example", i))
		writeAudit(t, db, tn, i%3+1) // 1, 2 or 3 records
		ts = append(ts, tn)
	}
	idle := mustTenant(t, db, "idle.example")
	ts = append(ts, idle, ts[0]) // an idle tenant, and one named twice

	// 8 distinct tenants, 3 a transaction: groups of 3, 3 and 2;
	// 4 records a transaction: 1 each in the groups of 3, 2 in
	// the last.
	res := db.ChainAuditTenants(ctx, ts, testKey, 1000, store.ChainLimits{Tenants: 3, Records: 4})
	if len(res) != len(ts) {
		t.Fatalf("%d results for %d tenants", len(res), len(ts))
	}
	groups := map[int]int{}
	chained := 0
	for i, r := range res[:len(res)-1] {
		if r.Tenant != ts[i] || r.Err != nil || r.Group < 0 {
			t.Fatalf("result %d: %+v", i, r)
		}
		groups[r.Group]++
		limit := 1
		if r.Group == 2 {
			limit = 2
		}
		have := 0 // the idle tenant
		if i < 7 {
			have = i%3 + 1
		}
		if want := min(have, limit); r.N != want || r.More != (r.N == limit) {
			t.Errorf("%s (group %d): chained %d, more %v; want %d of %d", r.Tenant.Key, r.Group, r.N, r.More, want, have)
		}
		chained += r.N
	}
	if len(groups) != 3 || groups[0] != 3 || groups[1] != 3 || groups[2] != 2 {
		t.Errorf("tenants per transaction: %v; want 3, 3, 2", groups)
	}
	if dup := res[len(res)-1]; dup.Tenant != ts[0] || dup.N != res[0].N || dup.Group != res[0].Group {
		t.Errorf("the tenant named twice: %+v and %+v", res[0], dup)
	}
	// Again for those with More, as mcp's flush does, until none.
	for round := 0; ; round++ {
		var more []*tenancy.Tenant
		seen := map[string]bool{}
		for _, r := range res {
			if r.More && !seen[r.Tenant.ID] {
				seen[r.Tenant.ID] = true
				more = append(more, r.Tenant)
			}
		}
		if len(more) == 0 {
			break
		}
		if round > 5 {
			t.Fatalf("still more to chain after %d rounds: %d tenants", round, len(more))
		}
		res = db.ChainAuditTenants(ctx, more, testKey, 1000, store.ChainLimits{Tenants: 3, Records: 4})
		for _, r := range res {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			chained += r.N
		}
	}
	if chained != 13 {
		t.Errorf("chained %d records in all; want 13", chained)
	}
	for i, tn := range ts[:7] {
		mustChainIntact(t, db, tn, int64(i%3+1))
	}
	mustChainIntact(t, db, idle, 0)
	// New records chain onto the chains left, by either path.
	writeAudit(t, db, ts[1], 2)
	if n, err := db.ChainAudit(ctx, ts[1], testKey, 1); err != nil || n != 1 {
		t.Fatalf("ChainAudit: %d, %v", n, err)
	}
	if res := db.ChainAuditTenants(ctx, ts[:2], testKey, 10, store.ChainLimits{}); res[0].N != 0 || res[1].N != 1 || res[1].Err != nil {
		t.Fatalf("after ChainAudit: %+v", res)
	}
	mustChainIntact(t, db, ts[1], 4)
}

// TestChainAuditTenantsBrokenTenant: a tenant whose chaining fails (its
// audit log renamed away) fails its group's transaction; the others of
// the group are then chained one at a time, and only the broken one
// reports an error. Once repaired, it chains.
func TestChainAuditTenantsBrokenTenant(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	var ts []*tenancy.Tenant
	for i := range 5 {
		tn := mustTenant(t, db, fmt.Sprintf("b%d.example", i))
		writeAudit(t, db, tn, 2)
		ts = append(ts, tn)
	}
	broken := ts[2]
	table := pgx.Identifier{broken.Schema, "audit_log"}.Sanitize()
	if _, err := db.Pool().Exec(ctx, "ALTER TABLE "+table+" RENAME TO audit_log_away"); err != nil {
		t.Fatal(err)
	}
	res := db.ChainAuditTenants(ctx, ts, testKey, 1000, store.ChainLimits{})
	for _, r := range res {
		if r.Group != -1 {
			t.Errorf("%s: group %d; want -1 (chained alone after the group failed)", r.Tenant.Key, r.Group)
		}
		switch {
		case r.Tenant == broken:
			if r.Err == nil || !strings.Contains(r.Err.Error(), broken.Key) {
				t.Errorf("the broken tenant: %+v", r)
			}
		case r.Err != nil || r.N != 2:
			t.Errorf("%s: %+v", r.Tenant.Key, r)
		default:
			mustChainIntact(t, db, r.Tenant, 2)
		}
	}
	if _, err := db.Pool().Exec(ctx, "ALTER TABLE "+pgx.Identifier{broken.Schema, "audit_log_away"}.Sanitize()+" RENAME TO audit_log"); err != nil {
		t.Fatal(err)
	}
	res = db.ChainAuditTenants(ctx, ts, testKey, 1000, store.ChainLimits{})
	for _, r := range res {
		if r.Err != nil || r.Group != 0 || (r.Tenant == broken) != (r.N == 2) {
			t.Errorf("after the repair: %s %+v", r.Tenant.Key, r)
		}
	}
	mustChainIntact(t, db, broken, 2)
}

// TestChainAuditTenantsClearsStaleMarks: in a group, a tenant's pending
// mark goes once nothing is left to chain and it has not been renewed for
// ten minutes, as with ChainAudit; a tenant with records left keeps it.
func TestChainAuditTenantsClearsStaleMarks(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	a, b, c := mustTenant(t, db, "a.example"), mustTenant(t, db, "b.example"), mustTenant(t, db, "c.example")
	writeAudit(t, db, a, 1)
	writeAudit(t, db, b, 3)
	writeAudit(t, db, c, 1)
	marked := func() int {
		var n int
		if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM gatehouse.audit_pending WHERE tenant_id = ANY($1::uuid[])",
			[]string{a.ID, b.ID, c.ID}).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Fresh marks stay.
	db.ChainAuditTenants(ctx, []*tenancy.Tenant{a}, testKey, 1000, store.ChainLimits{})
	if n := marked(); n != 3 {
		t.Fatalf("marks after chaining a: %d", n)
	}
	if _, err := db.Pool().Exec(ctx, "UPDATE gatehouse.audit_pending SET marked_at = now() - interval '11 minutes'"); err != nil {
		t.Fatal(err)
	}
	// b has records left after its 2: it keeps its mark.
	res := db.ChainAuditTenants(ctx, []*tenancy.Tenant{a, b, c}, testKey, 2, store.ChainLimits{})
	if res[0].N != 0 || res[1].N != 2 || !res[1].More || res[2].N != 1 {
		t.Fatalf("results %+v", res)
	}
	var left []string
	rows, _ := db.Pool().Query(ctx, "SELECT t.key FROM gatehouse.audit_pending p JOIN gatehouse.tenants t ON t.id = p.tenant_id WHERE t.id = ANY($1::uuid[])",
		[]string{a.ID, b.ID, c.ID})
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(left) != 1 || left[0] != "b.example" {
		t.Fatalf("marks left: %v, %v; want b.example", left, err)
	}
	db.ChainAuditTenants(ctx, []*tenancy.Tenant{b}, testKey, 2, store.ChainLimits{})
	if n := marked(); n != 0 {
		t.Fatalf("marks at the end: %d", n)
	}
	mustChainIntact(t, db, b, 3)
}

// TestChainAuditTenantsConcurrentChainers: three replicas' chainers (each
// its own store.DB, as separate processes have) chain overlapping sets of
// tenants, each in its own order, released together with writers that
// keep committing, some transactions taking their ids first and
// committing last. No transaction deadlocks (none falls back to one
// tenant at a time), no record is chained twice or skipped, and every
// chain verifies. ChainAudit runs beside them too, as an older replica
// would.
func TestChainAuditTenantsConcurrentChainers(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	replicas := withReplicas(t, db, 2)
	var ts []*tenancy.Tenant
	for i := range 8 {
		ts = append(ts, mustTenant(t, db, fmt.Sprintf("c%d.example", i)))
	}
	written := make([]int64, len(ts))
	var mu sync.Mutex
	write := func(i int, hold bool) {
		err := db.WithTenant(ctx, ts[i], func(tx pgx.Tx) error {
			if err := store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: store.Allowed, Tool: "whoami", Subject: "w"}); err != nil {
				return err
			}
			if hold { // took its id, commits after later ones
				_, err := tx.Exec(ctx, "SELECT pg_sleep(0.005)")
				return err
			}
			return nil
		})
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		written[i]++
		mu.Unlock()
	}
	for round := range 4 {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				<-start
				rng := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				for k := range 12 {
					write(rng.IntN(len(ts)), k%3 == 0)
				}
			})
		}
		for c, r := range replicas {
			wg.Go(func() {
				<-start
				rng := rand.New(rand.NewPCG(uint64(round), uint64(100+c)))
				for range 6 {
					// An overlapping window of 5 of the 8 tenants, shuffled.
					first := rng.IntN(len(ts))
					set := make([]*tenancy.Tenant, 5)
					for j := range set {
						set[j] = ts[(first+j)%len(ts)]
					}
					rng.Shuffle(len(set), func(a, b int) { set[a], set[b] = set[b], set[a] })
					for _, res := range r.ChainAuditTenants(ctx, set, testKey, 3, store.ChainLimits{Tenants: 3, Records: 5}) {
						if res.Err != nil || res.Group < 0 {
							t.Errorf("replica %d: %s: %+v", c, res.Tenant.Key, res)
						}
					}
				}
			})
		}
		wg.Go(func() {
			<-start
			for i := range 6 {
				if _, err := db.ChainAudit(ctx, ts[(i+round)%len(ts)], testKey, 2); err != nil {
					t.Error(err)
				}
			}
		})
		close(start)
		wg.Wait()
	}
	for range 100 {
		more := false
		for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 1000, store.ChainLimits{}) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			more = more || r.N > 0
		}
		if !more {
			break
		}
	}
	for i, tn := range ts {
		mustChainIntact(t, db, tn, written[i])
	}
}

// TestChainAuditTenantsCountsTenants: a chaining transaction over n
// tenants counts all n towards its control lane connection's
// ControlConnMaxTenants, as n transactions of one tenant do: the backend
// gathers the caches of every tenant it meets.
func TestChainAuditTenantsCountsTenants(t *testing.T) {
	store.OneConnPerControlLane(t)
	base := storetest.MustOpenDB(t)
	ctx := context.Background()
	var ts []*tenancy.Tenant
	for i := range 12 {
		ts = append(ts, mustTenant(t, base, fmt.Sprintf("u%d.example", i)))
	}
	db, err := store.Open(ctx, base.Pool().Config().ConnString(), &store.Options{ControlConns: 1, ControlLanes: 1, ControlConnMaxTenants: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pid := func() int { return lanePID(t, db) }
	chain := func(ts []*tenancy.Tenant) {
		t.Helper()
		for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 10, store.ChainLimits{}) {
			if r.Err != nil || r.Group != 0 {
				t.Fatalf("%+v", r)
			}
		}
	}
	first := pid()
	chain(ts[:3])
	chain(ts[:3]) // the same 3 again: still 3 tenants met
	if p := pid(); p != first {
		t.Fatalf("connection replaced after meeting 3 tenants of at most 10")
	}
	chain(ts) // 12 tenants met
	if p := pid(); p == first {
		t.Fatalf("connection kept after a transaction over 12 tenants with at most 10")
	}
}
