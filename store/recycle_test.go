package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestConnMaxUses: a tenant-pool connection is closed after its
// ConnMaxUses-th transaction and the next one gets a new backend; a
// negative bound never recycles.
func TestConnMaxUses(t *testing.T) {
	ctx := context.Background()
	url := storetest.ConnString(t)
	pids := func(maxUses, n int) []int {
		t.Helper()
		db, err := store.Open(ctx, url, &store.Options{TenantConns: 1, AffinityConns: -1, ConnMaxUses: maxUses})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		tn := mustTenant(t, db, "acme.com")
		var out []int
		for range n {
			var pid int
			if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error { return tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid) }); err != nil {
				t.Fatal(err)
			}
			out = append(out, pid)
		}
		return out
	}
	got := pids(3, 7)
	for i := range got {
		if same := got[i] == got[i/3*3]; !same {
			t.Errorf("use %d on backend %d, want the backend of use %d (%d): %v", i, got[i], i/3*3, got[i/3*3], got)
		}
	}
	if got[0] == got[3] || got[3] == got[6] {
		t.Errorf("backends not replaced after 3 uses: %v", got)
	}
	never := pids(-1, 5)
	for _, p := range never {
		if p != never[0] {
			t.Errorf("ConnMaxUses -1 replaced a backend: %v", never)
		}
	}
}

// TestControlConnMaxUses: a control-pool connection is closed after
// ControlConnMaxUses uses when that bound is set; with no bound (the
// default) more than a thousand uses keep their backend.
func TestControlConnMaxUses(t *testing.T) {
	ctx := context.Background()
	url := storetest.ConnString(t)
	pids := func(maxUses, n int) []int {
		t.Helper()
		db, err := store.Open(ctx, url, &store.Options{ControlConns: 1, ControlConnMaxUses: maxUses})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var out []int
		for range n {
			out = append(out, controlPID(t, db))
		}
		return out
	}
	got := pids(3, 7)
	if got[0] == got[3] || got[3] == got[6] || got[1] != got[0] || got[4] != got[3] {
		t.Errorf("want a new backend every 3 uses: %v", got)
	}
	for _, bound := range []int{-1, 0} {
		never := pids(bound, 1001)
		for _, p := range never {
			if p != never[0] {
				t.Errorf("ControlConnMaxUses %d replaced a backend within 1,001 uses", bound)
				break
			}
		}
	}
}

// controlPID is the backend process id of a control-pool connection.
func controlPID(t *testing.T, db *store.DB) int {
	t.Helper()
	var pid int
	if err := db.Pool().QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// lanePID is the backend of db's one control lane, opened after
// store.OneConnPerControlLane.
func lanePID(t *testing.T, db *store.DB) int {
	t.Helper()
	pids, err := db.ControlLaneBackendPIDs(context.Background())
	if err != nil || len(pids) != 1 {
		t.Fatalf("control lane's backends: %v, %v", pids, err)
	}
	return pids[0]
}

// TestControlConnMaxTenants: a control lane's connection is closed once it
// has served ControlConnMaxTenants different tenants' schemas, whichever
// of the control plane's tenant paths served them (the group commit, the
// chainer, WithTenantControl and the per-record fall-back, the anomaly
// detector), however often it served the same ones; a negative bound
// never replaces it.
func TestControlConnMaxTenants(t *testing.T) {
	store.OneConnPerControlLane(t)
	ctx := context.Background()
	url := storetest.ConnString(t)
	setup, err := store.Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ts []*tenancy.Tenant
	for i := range 5 {
		ts = append(ts, mustTenant(t, setup, fmt.Sprintf("control-met-%d.example", i)))
	}
	setup.Close()
	rec := func(tn *tenancy.Tenant) *store.AuditRecord {
		return &store.AuditRecord{RequestID: "r-" + tn.Key, Decision: store.Allowed, Tool: "whoami", Subject: "s"}
	}
	key := store.NewAuditKey([]byte("control-conn-max-tenants-test-key"))
	// Each step serves some tenants on the one control connection; want
	// is the number of different tenants it has served after the step.
	type step struct {
		name string
		run  func(db *store.DB) error
	}
	batch := func(is ...int) func(db *store.DB) error {
		return func(db *store.DB) error {
			var es []store.AuditEntry
			for _, i := range is {
				es = append(es, store.AuditEntry{Tenant: ts[i], Rec: rec(ts[i])})
			}
			return db.InsertAuditBatch(ctx, es)
		}
	}
	chain := func(i int) func(db *store.DB) error {
		return func(db *store.DB) error { _, err := db.ChainAudit(ctx, ts[i], key, 100); return err }
	}
	control := func(i int) func(db *store.DB) error {
		return func(db *store.DB) error {
			return db.WithTenantControl(ctx, ts[i], func(tx pgx.Tx) error { return store.InsertAudit(ctx, tx, rec(ts[i])) })
		}
	}
	record := func(i int) func(db *store.DB) error {
		return func(db *store.DB) error { _, err := db.InsertAuditRecord(ctx, ts[i], rec(ts[i])); return err }
	}
	detect := func(i int) func(db *store.DB) error {
		return func(db *store.DB) error {
			_, _, err := db.DetectAnomalies(ctx, ts[i], 0, 10, nil, func(store.AnomalyInput) (store.AnomalyOutput, error) {
				return store.AnomalyOutput{}, nil
			})
			return err
		}
	}
	for _, c := range []struct {
		name     string
		steps    []step
		replaced int // the step after which the backend must be new (-1: none)
	}{
		{"group commit", []step{{"batch 0", batch(0)}, {"batch 0 1", batch(0, 1)}, {"batch 1 0", batch(1, 0)}, {"batch 2", batch(2)}, {"batch 3", batch(3)}}, 3},
		{"one batch of three", []step{{"batch 0 1 2", batch(0, 1, 2)}, {"batch 3", batch(3)}}, 0},
		{"chainer", []step{{"chain 0", chain(0)}, {"chain 1", chain(1)}, {"chain 0", chain(0)}, {"chain 4", chain(4)}}, 3},
		{"control transactions", []step{{"control 2", control(2)}, {"record 3", record(3)}, {"control 3", control(3)}, {"record 4", record(4)}}, 3},
		{"anomaly detector", []step{{"detect 0", detect(0)}, {"detect 1", detect(1)}, {"detect 1", detect(1)}, {"detect 2", detect(2)}}, 3},
		{"mixed", []step{{"batch 0", batch(0)}, {"chain 1", chain(1)}, {"detect 0", detect(0)}, {"control 1", control(1)}, {"record 4", record(4)}}, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, bound := range []int{3, -1} {
				db, err := store.Open(ctx, url, &store.Options{ControlConns: 1, ControlLanes: 1, ControlConnMaxTenants: bound})
				if err != nil {
					t.Fatal(err)
				}
				before := lanePID(t, db)
				for i, s := range c.steps {
					if err := s.run(db); err != nil {
						t.Fatalf("%s: %v", s.name, err)
					}
					pid := lanePID(t, db)
					if want := bound > 0 && i == c.replaced; (pid != before) != want {
						t.Errorf("bound %d, after %q (step %d): backend replaced %v, want %v", bound, s.name, i, pid != before, want)
					}
					before = pid
				}
				db.Close()
			}
		})
	}
}
