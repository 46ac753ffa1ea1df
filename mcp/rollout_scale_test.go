package mcp_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/migrations"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestServingWhileTenantsMigrate: a rolling deploy at scale. The running
// release serves calls spread over many tenants while the next release's
// `gatehouse migrate` (another process: its own connections) applies a
// tenant migration that locks each tenant's todos table in turn; every
// call succeeds, calls keep completing while the migration runs, and every
// schema ends at the new version. (The figure at 10,000 tenants is in
// bench/README.md; this is the CI-sized proof.)
func TestServingWhileTenantsMigrate(t *testing.T) {
	const tenants, workers = 80, 6
	ctx := context.Background()
	url := storetest.ConnString(t)
	serving, err := store.Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serving.Close)
	if err := serving.MigrateControl(ctx); err != nil {
		t.Fatal(err)
	}
	g := newGatehouse(t, func(s *setup) { s.db = serving })
	old := store.TenantSchemaVersion() // the running release's version, fixed from here on
	var sessions []*sdk.ClientSession
	for i := range tenants {
		sessions = append(sessions, g.connect(t, g.key(t, fmt.Sprintf("rollout%03d.example", i), tenancy.Admin), ""))
	}

	// The next release's migration, in this process only.
	remove := migrations.AddTenantForBenchmark("rollout_flag", "ALTER TABLE todos ADD COLUMN IF NOT EXISTS rollout_flag boolean NOT NULL DEFAULT false")
	t.Cleanup(remove)
	if len(migrations.Tenant()) != old+1 {
		t.Fatalf("next release at tenant schema %d, want %d", len(migrations.Tenant()), old+1)
	}

	var (
		stop       atomic.Bool
		migrating  atomic.Bool
		calls      atomic.Int64
		duringMigr atomic.Int64
		mu         sync.Mutex
		failures   []string
		wg         sync.WaitGroup
	)
	start := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			<-start
			for i := w; !stop.Load(); i += workers {
				cs := sessions[i%tenants]
				tool, args := "list_todos", map[string]any{}
				if i%2 == 0 {
					tool, args = "add_todo", map[string]any{"title": fmt.Sprintf("during the rollout %d", i)}
				}
				during := migrating.Load()
				res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
				if err == nil && res.IsError {
					err = fmt.Errorf("tool error: %s", text(res))
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s in tenant %d: %v", tool, i%tenants, err))
					mu.Unlock()
					continue
				}
				calls.Add(1)
				if during && migrating.Load() {
					duringMigr.Add(1)
				}
			}
		})
	}
	close(start)

	// The next release's `gatehouse migrate`, on connections of its own.
	next, err := store.Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	migrating.Store(true)
	var reported atomic.Int64
	err = next.MigrateTenants(ctx, 4, func(done, total int) { reported.Store(int64(done)) })
	migrating.Store(false)
	if err != nil {
		t.Fatalf("migrating while serving: %v", err)
	}
	// A few more calls on the migrated schemas, then stop.
	for after := calls.Load(); calls.Load() < after+int64(2*workers) && len(failures) == 0; {
	}
	stop.Store(true)
	wg.Wait()

	for _, f := range failures[:min(len(failures), 10)] {
		t.Error(f)
	}
	if reported.Load() < tenants {
		t.Errorf("progress reported %d of at least %d schemas", reported.Load(), tenants)
	}
	if duringMigr.Load() == 0 {
		t.Error("no call completed while the migration ran: it did not overlap serving")
	}
	st, err := next.MigrationStatus(ctx)
	if err != nil || st.TenantsBehind != 0 {
		t.Errorf("after the migration: %v, %v", st, err)
	}
	var missing int
	if err := serving.Pool().QueryRow(ctx, `SELECT count(*) FROM gatehouse.tenants t WHERE NOT EXISTS (
		SELECT 1 FROM information_schema.columns c WHERE c.table_schema = t.schema_name AND c.table_name = 'todos' AND c.column_name = 'rollout_flag')`).Scan(&missing); err != nil || missing != 0 {
		t.Errorf("%d tenant schemas without the new column (%v)", missing, err)
	}
	t.Logf("%d calls over %d tenants, %d of them while %d schemas migrated", calls.Load(), tenants, duringMigr.Load(), reported.Load())
}
