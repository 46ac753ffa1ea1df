package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestNestedTenantConnectionRefused: inside a tenant transaction, asking
// for a second tenant connection (another WithTenant, or a query login)
// fails at once instead of waiting on a pool the caller itself may be
// exhausting; control work (a look-up) is still allowed.
func TestNestedTenantConnectionRefused(t *testing.T) {
	db := storetest.MustOpenDB(t)
	tn := mustTenant(t, db, "acme.com")
	ctx := context.Background()
	err := db.InTenant(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
		if err := db.WithTenant(ctx, tn, func(pgx.Tx) error { return nil }); !errors.Is(err, store.ErrNestedConnection) {
			t.Errorf("nested WithTenant: %v, want ErrNestedConnection", err)
		}
		if _, err := db.Query(ctx, tn, "select 1", queryLimits); !errors.Is(err, store.ErrNestedConnection) {
			t.Errorf("Query inside a tenant transaction: %v, want ErrNestedConnection", err)
		}
		_, err := db.FindTenantByID(ctx, tn.ID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// twoQueryProcesses opens two DBs on one new database, as two Gatehouse
// processes, each allowed 2 query logins per tenant: together the query
// role's own connection limit of 4.
func twoQueryProcesses(t *testing.T) []*store.DB {
	t.Helper()
	conn := storetest.ConnString(t)
	var dbs []*store.DB
	for range 2 {
		db, err := store.Open(context.Background(), conn, &store.Options{TenantQueryConns: 2, QueryConns: 8})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		dbs = append(dbs, db)
	}
	return dbs
}

// TestQueryConcurrentFirstCalls: the first queries of a tenant, started at
// once on a cold process, set its query role up once: none fails (the
// race made one fail with "tuple concurrently updated", SQLSTATE XX000).
// Two processes (two DBs on one database) race as well.
func TestQueryConcurrentFirstCalls(t *testing.T) {
	dbs := twoQueryProcesses(t)
	tn := mustTenant(t, dbs[0], "acme.com")
	release := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Go(func() {
			<-release
			_, err := dbs[i%2].Query(context.Background(), tn, "select 1", queryLimits)
			errs <- err
		})
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent first query: %v", err)
		}
	}
}

// TestQueryLoginsBackToBack: two processes each running as many queries
// at once as their share of the role's CONNECTION LIMIT, one after another
// without pause, are never refused: a login closed a moment ago still
// counts in PostgreSQL until its backend has exited, and a refusal then is
// not the limit being reached.
func TestQueryLoginsBackToBack(t *testing.T) {
	dbs := twoQueryProcesses(t)
	tn := mustTenant(t, dbs[0], "backtoback.example")
	release := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for i := range 4 {
		wg.Go(func() {
			<-release
			for range 25 {
				if _, err := dbs[i%2].Query(context.Background(), tn, "select 1", queryLimits); err != nil {
					mu.Lock()
					refused++
					mu.Unlock()
					t.Logf("query: %v", err)
				}
			}
		})
	}
	close(release)
	wg.Wait()
	if refused > 0 {
		t.Errorf("%d of 100 queries refused although no process was over its share of the role's limit", refused)
	}
}

// TestQueryLoginsBounded: a tenant's query logins are bounded in this
// process, and so are all tenants' together; a query over a bound waits
// briefly, then is refused with a BusyError, and the others are served.
func TestQueryLoginsBounded(t *testing.T) {
	conn := storetest.ConnString(t)
	db, err := store.Open(context.Background(), conn, &store.Options{TenantQueryConns: 1, QueryConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	a, b, c := mustTenant(t, db, "a.example"), mustTenant(t, db, "b.example"), mustTenant(t, db, "c.example")
	slow := queryLimits
	slow.Timeout = 10 * time.Second
	for _, tt := range []struct {
		name     string
		first    []string // tenants whose slow queries hold the slots
		then     string
		wantBusy string
	}{
		{"per tenant", []string{"a"}, "a", "your organisation's concurrent queries"},
		{"in all", []string{"a", "b"}, "c", "this server's concurrent queries"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var wg sync.WaitGroup
			started := time.Now()
			for _, name := range tt.first {
				wg.Go(func() {
					target := a
					switch name {
					case "b":
						target = b
					}
					if _, err := db.Query(context.Background(), target, "select pg_sleep(4)", slow); err != nil {
						t.Errorf("slow query: %v", err)
					}
				})
			}
			time.Sleep(500 * time.Millisecond) // let them take their slots (a refusal below proves they did)
			target := a
			if tt.then == "c" {
				target = c
			}
			_, err := db.Query(context.Background(), target, "select 1", queryLimits)
			var busy *store.BusyError
			if !errors.As(err, &busy) || busy.What != tt.wantBusy {
				t.Errorf("query over the bound: %v, want BusyError %q", err, tt.wantBusy)
			}
			wg.Wait()
			if _, err := db.Query(context.Background(), target, "select 1", queryLimits); err != nil {
				t.Errorf("after the slow ones: %v", err)
			}
			t.Logf("took %s", time.Since(started))
		})
	}
}

// TestPoolSizes: the two pools are sized by Options; an unset tenant pool
// takes pool_max_conns from the connection string, else the default.
func TestPoolSizes(t *testing.T) {
	conn := storetest.ConnString(t)
	for _, tt := range []struct {
		conn          string
		opts          store.Options
		tenant, contr int32
	}{
		{conn, store.Options{TenantConns: 5, ControlConns: 3, AffinityConns: -1}, 5, 3},
		{conn + " pool_max_conns=6", store.Options{ControlConns: 2, AffinityConns: -1}, 6, 2},
		{conn + " pool_max_conns=6", store.Options{TenantConns: 9, ControlConns: 2, AffinityConns: -1}, 9, 2},
	} {
		db, err := store.Open(context.Background(), tt.conn, &tt.opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := db.Limits(); got.TenantConns != tt.tenant || got.ControlConns != tt.contr ||
			db.TenantPoolSize() != tt.tenant || db.Pool().Config().MaxConns != tt.contr {
			t.Errorf("%+v with %q: limits %+v, pools %d and %d", tt.opts, tt.conn, got, db.TenantPoolSize(), db.Pool().Config().MaxConns)
		}
		db.Close()
	}
	// Affinity connections come on top of TenantConns (as many, at most 16, by default).
	for _, tt := range []struct {
		opts store.Options
		pool int32
	}{
		{store.Options{TenantConns: 8}, 16},
		{store.Options{TenantConns: 32}, 48},
		{store.Options{TenantConns: 8, AffinityConns: 8}, 16},
		{store.Options{TenantConns: 8, AffinityConns: -1}, 8},
		{store.Options{TenantConns: 8, TransactionPooler: true}, 8}, // PgBouncer chooses the server connections
	} {
		db, err := store.Open(context.Background(), conn, &tt.opts)
		if err != nil {
			t.Fatal(err)
		}
		if db.TenantPoolSize() != tt.pool || db.Limits().TenantConns != tt.opts.TenantConns {
			t.Errorf("%+v: tenant pool of %d, limits %+v; want %d", tt.opts, db.TenantPoolSize(), db.Limits(), tt.pool)
		}
		db.Close()
	}
}
