package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// writeChained writes n records of alternating subjects s-a and s-b in
// each tenant and chains them.
func writeChained(t *testing.T, db *store.DB, n func(i int) int, ts ...*tenancy.Tenant) {
	t.Helper()
	ctx := context.Background()
	var entries []store.AuditEntry
	for i, tn := range ts {
		for j := range n(i) {
			entries = append(entries, store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{Decision: store.Allowed, Tool: "list_todos",
				Subject: []string{"s-a", "s-b"}[j%2], RequestID: fmt.Sprintf("%s-%d", tn.Key, j)}})
		}
	}
	if err := db.InsertAuditBatch(ctx, entries); err != nil {
		t.Fatal(err)
	}
	for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 1000, store.ChainLimits{}) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
}

// TestDetectAnomaliesTenants: a grouped pass gives fn each tenant's own
// new records in chain order with its principals' states, writes what fn
// returns (states, alerts, the cursor's advance) so that the next pass
// reads nothing twice; a tenant named twice is read once; a tenant whose
// audit log is broken, or for which fn fails, fails alone while the others
// of its group are read.
func TestDetectAnomaliesTenants(t *testing.T) {
	db, ts := openLanes(t, "detect-many-", 6)
	ctx := context.Background()
	writeChained(t, db, func(i int) int { return i + 1 }, ts...)
	in := make([]store.DetectInput, 0, len(ts)+1)
	for _, tn := range ts {
		in = append(in, store.DetectInput{Tenant: tn})
	}
	in = append(in, store.DetectInput{Tenant: ts[1]}) // named twice
	var mu sync.Mutex
	seen := map[int][]store.AnomalyInput{}
	counting := func(fail int) func(int, store.AnomalyInput) (store.AnomalyOutput, error) {
		return func(i int, a store.AnomalyInput) (store.AnomalyOutput, error) {
			mu.Lock()
			seen[i] = append(seen[i], a)
			mu.Unlock()
			if i == fail {
				return store.AnomalyOutput{}, errors.New("the model failed")
			}
			out := store.AnomalyOutput{States: map[string][]byte{}}
			for _, r := range a.Records {
				var st struct{ N int }
				if b, ok := out.States[r.Subject]; ok {
					_ = json.Unmarshal(b, &st)
				} else {
					_ = json.Unmarshal(a.States[r.Subject], &st)
				}
				st.N++
				out.States[r.Subject], _ = json.Marshal(st)
			}
			if i == 2 && len(a.Records) > 0 {
				out.Alerts = []*store.NewAlert{{Record: &store.AuditRecord{Subject: "s-a", Tool: "list_todos"}, Kind: "test",
					Summary: "grouped", Evidence: json.RawMessage(`{}`)}}
			}
			return out, nil
		}
	}
	res := db.DetectAnomaliesTenants(ctx, in, 100, counting(-1))
	for i, r := range res[:len(ts)] {
		if r.Err != nil || r.N != i+1 || r.Group < 0 {
			t.Fatalf("%s: %+v, want %d records read in a group", ts[i].Key, r, i+1)
		}
		if len(seen[i]) != 1 || len(seen[i][0].Records) != i+1 {
			t.Fatalf("%s: fn saw %d passes", ts[i].Key, len(seen[i]))
		}
		for j, rec := range seen[i][0].Records {
			if rec.RequestID != fmt.Sprintf("%s-%d", ts[i].Key, j) || (j > 0 && rec.ChainSeq <= seen[i][0].Records[j-1].ChainSeq) {
				t.Fatalf("%s: record %d is %q (seq %d): not its own, or out of chain order", ts[i].Key, j, rec.RequestID, rec.ChainSeq)
			}
		}
	}
	if res[len(ts)].Err == nil || seen[len(ts)] != nil {
		t.Fatalf("a tenant named twice: %+v, fn called %d times for it", res[len(ts)], len(seen[len(ts)]))
	}
	if len(res[2].Written) != 1 || res[2].Written[0].Summary != "grouped" {
		t.Fatalf("alerts written: %+v", res[2].Written)
	}

	// The next pass reads only what is new, with the states written.
	writeChained(t, db, func(int) int { return 2 }, ts...)
	clear(seen)
	res = db.DetectAnomaliesTenants(ctx, in[:len(ts)], 100, counting(-1))
	for i, r := range res {
		// Tenant 2's ALERT record was chained with its new records.
		want := 2
		if i == 2 {
			want = 3
		}
		if r.Err != nil || r.N != want {
			t.Fatalf("%s, second pass: %+v, want %d records", ts[i].Key, r, want)
		}
		var st struct{ N int }
		if err := json.Unmarshal(seen[i][0].States["s-a"], &st); err != nil || st.N != (i+2)/2 {
			t.Fatalf("%s: state of s-a %s, want N=%d (its records of the first pass)", ts[i].Key, seen[i][0].States["s-a"], (i+2)/2)
		}
	}

	// A broken audit log and a failing model: those two fail, alone; the
	// others of their groups are read one at a time.
	writeChained(t, db, func(int) int { return 1 }, ts...)
	if _, err := db.Pool().Exec(ctx, "ALTER TABLE "+pgx.Identifier{ts[3].Schema, "audit_log"}.Sanitize()+" RENAME TO audit_log_away"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := db.Pool().Exec(ctx, "ALTER TABLE "+pgx.Identifier{ts[3].Schema, "audit_log_away"}.Sanitize()+" RENAME TO audit_log"); err != nil {
			t.Fatal(err)
		}
	}()
	clear(seen)
	res = db.DetectAnomaliesTenants(ctx, in[:len(ts)], 100, counting(4))
	for i, r := range res {
		switch {
		case i == 3 || i == 4:
			if r.Err == nil || r.Group != -1 {
				t.Fatalf("%s: %+v, want an error, read alone", ts[i].Key, r)
			}
		case r.Err != nil || r.N != map[bool]int{false: 1, true: 2}[i == 2]: // tenant 2: also the ALERT record of the pass before
			t.Fatalf("%s beside broken tenants: %+v", ts[i].Key, r)
		}
	}
	if !strings.Contains(res[4].Err.Error(), "the model failed") || !strings.Contains(res[3].Err.Error(), "audit_log") {
		t.Fatalf("errors: %v; %v", res[3].Err, res[4].Err)
	}
	clear(seen)
	again := db.DetectAnomaliesTenants(ctx, in[:len(ts)], 100, counting(-1))
	for i, r := range again {
		want := 0
		if i == 4 { // its records are still unread: the failed pass wrote nothing for it
			want = 1
		}
		if i != 3 && (r.Err != nil || r.N != want) {
			t.Fatalf("%s after the failures: %+v, want %d records", ts[i].Key, r, want)
		}
	}
}

// TestDetectAnomaliesTenantsConcurrent: passes over overlapping sets of
// tenants run at once (two replicas whose leases overlapped): no group's
// transaction fails (a deadlock would fail one, and its tenants be read
// alone), and every record is read by exactly one of them (so raises its
// alerts once).
func TestDetectAnomaliesTenantsConcurrent(t *testing.T) {
	db, ts := openLanes(t, "detect-race-", 8)
	ctx := context.Background()
	for round := range 3 {
		writeChained(t, db, func(i int) int { return 1 + (i+round)%3 }, ts...)
		want := 0
		for i := range ts {
			want += 1 + (i+round)%3
		}
		var mu sync.Mutex
		read := map[string]int{}
		fn := func(a store.AnomalyInput) {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range a.Records {
				read[r.RequestID]++
			}
		}
		sets := [][]*tenancy.Tenant{ts[:6], slices.Clone(ts[2:])}
		slices.Reverse(sets[1])
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make([]error, len(sets))
		for k, set := range sets {
			wg.Go(func() {
				in := make([]store.DetectInput, len(set))
				for i, tn := range set {
					in[i] = store.DetectInput{Tenant: tn}
				}
				<-start
				for i, r := range db.DetectAnomaliesTenants(ctx, in, 100, func(_ int, a store.AnomalyInput) (store.AnomalyOutput, error) {
					fn(a)
					return store.AnomalyOutput{}, nil
				}) {
					errs[k] = errors.Join(errs[k], r.Err)
					if r.Group < 0 { // its group's transaction failed (a deadlock, say) and it was read alone
						errs[k] = errors.Join(errs[k], fmt.Errorf("%s: read alone", set[i].Key))
					}
				}
			})
		}
		close(start)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if len(read) != want {
			t.Fatalf("round %d: %d records read, want %d", round, len(read), want)
		}
		for id, n := range read {
			if n != 1 {
				t.Fatalf("round %d: record %s read %d times", round, id, n)
			}
		}
	}
}

// TestDetectorBesideLockedControlRow: a row the detector writes for a
// tenant (here its cursor) held locked by another session fails that
// tenant's read within the detector's lock bound, as ErrDetectorBusy (not
// as a locked audit log, which it is not), while the other tenants of the
// pass are read; once the row is free the tenant is read as usual.
func TestDetectorBesideLockedControlRow(t *testing.T) {
	db, ts := openLanes(t, "detect-row-", 3)
	ctx := context.Background()
	writeChained(t, db, func(int) int { return 2 }, ts...)
	in := make([]store.DetectInput, len(ts))
	for i, tn := range ts {
		in[i] = store.DetectInput{Tenant: tn}
	}
	none := func(int, store.AnomalyInput) (store.AnomalyOutput, error) { return store.AnomalyOutput{}, nil }
	for _, r := range db.DetectAnomaliesTenants(ctx, in, 100, none) { // every tenant gets its cursor
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	writeChained(t, db, func(int) int { return 2 }, ts...)
	holder, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx) //nolint:errcheck
	if _, err := holder.Exec(ctx, "SELECT 1 FROM gatehouse.anomaly_cursors WHERE tenant_id = $1 FOR UPDATE", ts[1].ID); err != nil {
		t.Fatal(err)
	}
	done := make(chan []store.DetectResult, 1)
	go func() { done <- db.DetectAnomaliesTenants(ctx, in, 100, none) }()
	var res []store.DetectResult
	select {
	case res = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the detector's pass waits for the locked row")
	}
	for i, r := range res {
		switch {
		case i == 1 && (!errors.Is(r.Err, store.ErrDetectorBusy) || errors.Is(r.Err, store.ErrAuditLogBusy) || !store.Locked(r.Err)):
			t.Errorf("the tenant whose cursor is locked: %v; want ErrDetectorBusy", r.Err)
		case i != 1 && (r.Err != nil || r.N != 2):
			t.Errorf("tenant %d beside it: read %d, %v; want its 2 new records", i, r.N, r.Err)
		}
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if r := db.DetectAnomaliesTenants(ctx, in[1:2], 100, none)[0]; r.Err != nil || r.N != 2 {
		t.Errorf("once the row is free: read %d, %v; want its 2 new records", r.N, r.Err)
	}
}

// TestDetectorMarksOnlyWithAlerts: a detector pass marks a tenant as
// having unchained records (gatehouse.audit_pending) only when it writes
// an ALERT record into its log, and in the same transaction: a pass that
// raises nothing leaves the tenant unmarked (so chain passes do not read
// its log), grouped or alone; a pass whose transaction fails after the
// record, grouped (and then alone) or alone, leaves neither the record nor
// the mark; a stale mark is renewed, not removed by the chain pass after;
// and the ALERT records are found and chained through their marks. The
// passes run on a DB handle of their own, which has marked nothing before
// (marks are remembered per process for a minute).
func TestDetectorMarksOnlyWithAlerts(t *testing.T) {
	db, ts := openLanes(t, "detect-mark-", 6)
	ctx := context.Background()
	writeChained(t, db, func(int) int { return 2 }, ts...)
	ids := make([]string, len(ts))
	for i, tn := range ts {
		ids[i] = tn.ID
	}
	// As the chainer leaves them once the writers' marks are stale.
	if _, err := db.Pool().Exec(ctx, "DELETE FROM gatehouse.audit_pending WHERE tenant_id = ANY($1)", ids); err != nil {
		t.Fatal(err)
	}
	det, err := store.Open(ctx, db.Pool().Config().ConnString(), &store.Options{ControlConns: 2, ControlLanes: 4, ControlConnMaxTenants: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(det.Close)
	marked := func() map[string]bool {
		t.Helper()
		rows, _ := db.Pool().Query(ctx, "SELECT tenant_id::text FROM gatehouse.audit_pending WHERE tenant_id = ANY($1)", ids)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, id := range got {
			m[id] = true
		}
		return m
	}
	raise := func(a store.AnomalyInput, why string) (store.AnomalyOutput, error) {
		if why == "" || len(a.Records) == 0 {
			return store.AnomalyOutput{}, nil
		}
		return store.AnomalyOutput{Alerts: []*store.NewAlert{{Record: &store.AuditRecord{Subject: "s-a", Tool: "list_todos"},
			Kind: "test", Summary: why, Evidence: json.RawMessage(`{}`)}}}, nil
	}
	alerts := func(why string) func(store.AnomalyInput) (store.AnomalyOutput, error) {
		return func(a store.AnomalyInput) (store.AnomalyOutput, error) { return raise(a, why) }
	}
	alertRecords := func(tn *tenancy.Tenant) (all, unchained int) {
		t.Helper()
		if err := db.Pool().QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE chain_seq IS NULL) FROM "+
			pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+" WHERE decision = 'ALERT'").Scan(&all, &unchained); err != nil {
			t.Fatal(err)
		}
		return all, unchained
	}
	alertsAway := func(away bool) {
		t.Helper()
		q := "ALTER TABLE gatehouse.alerts RENAME TO alerts_away"
		if !away {
			q = "ALTER TABLE gatehouse.alerts_away RENAME TO alerts"
		}
		if _, err := db.Pool().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}

	// Grouped, failing after tenant 4's ALERT record (the admins' table
	// is gone): its group's transaction fails, it fails again alone, and
	// nothing of it stays, the mark included; tenant 5 beside it raises
	// nothing and stays unmarked too.
	alertsAway(true)
	res := det.DetectAnomaliesTenants(ctx, []store.DetectInput{{Tenant: ts[4]}, {Tenant: ts[5]}}, 100,
		func(i int, a store.AnomalyInput) (store.AnomalyOutput, error) {
			return raise(a, map[int]string{0: "failing"}[i])
		})
	alertsAway(false)
	if res[0].Err == nil || res[0].Group != -1 || res[1].Err != nil {
		t.Fatalf("a grouped pass whose alert cannot be written: %+v", res)
	}
	if m := marked(); len(m) != 0 {
		t.Fatalf("a failed grouped pass left marks: %v", m)
	}
	if all, _ := alertRecords(ts[4]); all != 0 {
		t.Fatalf("a failed grouped pass left %d ALERT records", all)
	}
	// Alone, failing the same way.
	alertsAway(true)
	if _, _, err := det.DetectAnomalies(ctx, ts[2], 0, 100, nil, alerts("failing")); err == nil {
		t.Fatal("a pass whose alert cannot be written succeeded")
	}
	alertsAway(false)
	if m := marked(); len(m) != 0 {
		t.Fatalf("a failed pass left marks: %v", m)
	}
	if all, _ := alertRecords(ts[2]); all != 0 {
		t.Fatalf("a failed pass left %d ALERT records", all)
	}

	// Grouped: tenants 1 and 3 raise an alert, 0 nothing.
	in := []store.DetectInput{{Tenant: ts[0]}, {Tenant: ts[1]}, {Tenant: ts[3]}}
	res = det.DetectAnomaliesTenants(ctx, in, 100, func(i int, a store.AnomalyInput) (store.AnomalyOutput, error) {
		return raise(a, map[int]string{1: "one", 2: "three"}[i])
	})
	for i, r := range res {
		if r.Err != nil || r.N != 2 || r.Group < 0 {
			t.Fatalf("grouped pass, %s: %+v", in[i].Tenant.Key, r)
		}
	}
	if m := marked(); len(m) != 2 || !m[ts[1].ID] || !m[ts[3].ID] {
		t.Fatalf("after a grouped pass raising alerts in %s and %s: marked %v", ts[1].Key, ts[3].Key, m)
	}
	// Alone, raising nothing, then raising one over a stale mark, which
	// it renews.
	if n, w, err := det.DetectAnomalies(ctx, ts[0], 0, 100, nil, alerts("")); err != nil || n != 0 || len(w) != 0 {
		t.Fatalf("a pass with nothing new: %d read, %d alerts, %v", n, len(w), err)
	}
	if _, err := db.Pool().Exec(ctx, "INSERT INTO gatehouse.audit_pending (tenant_id, marked_at) VALUES ($1, now() - interval '1 hour')", ts[2].ID); err != nil {
		t.Fatal(err)
	}
	if n, w, err := det.DetectAnomalies(ctx, ts[2], 0, 100, nil, alerts("two")); err != nil || n != 2 || len(w) != 1 {
		t.Fatalf("a pass raising an alert: %d read, %d alerts, %v", n, len(w), err)
	}
	var fresh bool
	if err := db.Pool().QueryRow(ctx, "SELECT marked_at > now() - interval '1 minute' FROM gatehouse.audit_pending WHERE tenant_id = $1", ts[2].ID).Scan(&fresh); err != nil || !fresh {
		t.Fatalf("the stale mark of a tenant given an ALERT record: renewed %v, %v", fresh, err)
	}
	want := []string{ts[1].ID, ts[2].ID, ts[3].ID}
	if m := marked(); len(m) != 3 || !m[want[0]] || !m[want[1]] || !m[want[2]] {
		t.Fatalf("after the single passes: marked %v, want %s, %s and %s", m, ts[1].Key, ts[2].Key, ts[3].Key)
	}

	// The marks are how a pass after a start finds the ALERT records.
	pending, err := db.TenantsWithUnchainedAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, tn := range pending {
		if slices.Contains(ids, tn.ID) {
			found = append(found, tn.ID)
		}
	}
	slices.Sort(found)
	slices.Sort(want)
	if !slices.Equal(found, want) {
		t.Fatalf("tenants listed as unchained: %v, want %v", found, want)
	}
	for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 1000, store.ChainLimits{}) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	for _, tn := range ts {
		all, unchained := alertRecords(tn)
		n := map[bool]int{true: 1}[slices.Contains(want, tn.ID)]
		if all != n || unchained != 0 {
			t.Fatalf("%s: %d ALERT records, %d unchained; want %d, all chained", tn.Key, all, unchained, n)
		}
	}
	if m := marked(); len(m) != 3 {
		t.Fatalf("fresh marks removed by the chain pass: %v left", m)
	}
}
