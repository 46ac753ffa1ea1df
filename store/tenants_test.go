package store_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/migrations"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func mustTenant(t testing.TB, db *store.DB, key string) *tenancy.Tenant {
	t.Helper()
	tn, _, err := db.EnsureTenant(context.Background(), key, tenancy.Organization)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

func TestEnsureTenantConcurrentFirstUse(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	const n = 16
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ids     = map[string]int{}
		created int
	)
	for range n {
		wg.Go(func() {
			tn, c, err := db.EnsureTenant(ctx, "acme.com", tenancy.Organization)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[tn.ID]++
			if c {
				created++
			}
		})
	}
	wg.Wait()
	if len(ids) != 1 || created != 1 {
		t.Fatalf("got tenant ids %v and %d creations; want one id and one creation", ids, created)
	}
	var schemas, roles, rows int
	err := db.Pool().QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\_%'),
		(SELECT count(*) FROM pg_roles r JOIN gatehouse.tenants t ON t.role_name = r.rolname),
		(SELECT count(*) FROM gatehouse.tenants)`).Scan(&schemas, &roles, &rows)
	if err != nil {
		t.Fatal(err)
	}
	if schemas != 1 || roles != 1 || rows != 1 {
		t.Errorf("schemas=%d roles=%d tenant rows=%d; want 1 each", schemas, roles, rows)
	}
}

func TestTenantNamesAreOpaque(t *testing.T) {
	db := storetest.MustOpenDB(t)
	a := mustTenant(t, db, "acme.com")
	b := mustTenant(t, db, "globex.com")
	re := regexp.MustCompile(`^t_[0-9a-f]{32}$`)
	for _, tn := range []*tenancy.Tenant{a, b} {
		if !re.MatchString(tn.Schema) || tn.DBRole != "gatehouse_"+tn.Schema {
			t.Errorf("tenant %s: schema %q role %q; want opaque t_<32 hex> names", tn.Key, tn.Schema, tn.DBRole)
		}
		if strings.Contains(tn.Schema, "acme") || strings.Contains(tn.Schema, "globex") {
			t.Errorf("schema name %q reveals the tenant", tn.Schema)
		}
		if tn.SchemaVersion != len(migrations.Tenant()) {
			t.Errorf("tenant %s at schema version %d", tn.Key, tn.SchemaVersion)
		}
	}
	if a.Schema == b.Schema {
		t.Error("two tenants share a schema")
	}
}

// TestWithTenantConfinement tries to reach another tenant and the control
// schema from inside a tenant transaction, and checks that nothing of the
// tenant settings survives on the pooled connection afterwards.
func TestWithTenantConfinement(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	a := mustTenant(t, db, "acme.com")
	b := mustTenant(t, db, "globex.com")
	err := db.WithTenant(ctx, a, func(tx pgx.Tx) error {
		_, err := store.AddTodo(ctx, tx, "acme secret plan", "", "test")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Each attempt runs in its own transaction (a failed statement aborts one).
	// Not listed: SET ROLE / RESET ROLE, which Postgres checks against the
	// session user and so do escape; see the store package doc.
	attempts := map[string]string{
		"other tenant's table":   `SELECT count(*) FROM ` + pgx.Identifier{a.Schema, "todos"}.Sanitize(),
		"control tenants":        `SELECT count(*) FROM gatehouse.tenants`,
		"control api keys":       `SELECT count(*) FROM gatehouse.api_keys`,
		"create in own schema":   `CREATE TABLE ` + pgx.Identifier{b.Schema, "evil"}.Sanitize() + ` (x int)`,
		"create in public":       `CREATE TABLE public.evil (x int)`,
		"drop own table":         `DROP TABLE todos`,
		"alter own table":        `ALTER TABLE todos ADD COLUMN x int`,
		"grant self other role":  `GRANT ` + pgx.Identifier{a.DBRole}.Sanitize() + ` TO ` + pgx.Identifier{b.DBRole}.Sanitize(),
		"read other via catalog": `SELECT count(*) FROM ` + pgx.Identifier{a.Schema}.Sanitize() + `.todos`,
	}
	for name, sql := range attempts {
		err := db.WithTenant(ctx, b, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, sql)
			return err
		})
		if err == nil {
			t.Errorf("%s: %q succeeded inside tenant %s", name, sql, b.Key)
		}
	}
	// Tenant B sees only its own (empty) todos.
	err = db.WithTenant(ctx, b, func(tx pgx.Tx) error {
		todos, _, err := store.ListTodos(ctx, tx, store.TodoFilter{Limit: 10})
		if len(todos) != 0 {
			t.Errorf("tenant B sees %d todos", len(todos))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing of the tenant settings survives on any pooled connection.
	conns := make([]*pgx.Conn, 0)
	for range 4 {
		c, err := db.Pool().Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		conns = append(conns, c.Conn())
	}
	for _, c := range conns {
		var user, path string
		if err := c.QueryRow(ctx, "SELECT current_user, current_setting('search_path')").Scan(&user, &path); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(user, "gatehouse_t_") || strings.Contains(path, "t_") {
			t.Errorf("pooled connection left as user %q with search_path %q", user, path)
		}
	}
}

func TestMigrateTenantsBringsSchemasCurrent(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	var tenants []*tenancy.Tenant
	for _, k := range []string{"a.com", "b.com", "c.com"} {
		tenants = append(tenants, mustTenant(t, db, k))
	}
	// Pretend two tenants were provisioned before any tenant migration existed.
	for _, tn := range tenants[:2] {
		_, err := db.Pool().Exec(ctx, "DROP SCHEMA "+pgx.Identifier{tn.Schema}.Sanitize()+" CASCADE; CREATE SCHEMA "+pgx.Identifier{tn.Schema}.Sanitize()+
			"; GRANT USAGE ON SCHEMA "+pgx.Identifier{tn.Schema}.Sanitize()+" TO "+pgx.Identifier{tn.DBRole}.Sanitize()+
			"; UPDATE gatehouse.tenants SET schema_version = 0 WHERE id = '"+tn.ID+"'")
		if err != nil {
			t.Fatal(err)
		}
	}
	st, err := db.MigrationStatus(ctx)
	if err != nil || st.Current() || st.TenantsBehind != 2 {
		t.Fatalf("status = %v, %v; want 2 tenants behind", st, err)
	}
	var calls int
	if err := db.MigrateTenants(ctx, 4, func(done, total int) { calls++ }); err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Errorf("progress called %d times, want 2", calls)
	}
	if st, err := db.MigrationStatus(ctx); err != nil || !st.Current() {
		t.Fatalf("after MigrateTenants: %v, %v", st, err)
	}
	for _, tn := range tenants {
		err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			_, err := store.AddTodo(ctx, tx, "works", "", "test")
			return err
		})
		if err != nil {
			t.Errorf("tenant %s after migration: %v", tn.Key, err)
		}
	}
}

func TestMigrateControlIsIdempotentAndConcurrent(t *testing.T) {
	db := storetest.MustOpenDB(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := db.MigrateControl(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	st, err := db.MigrationStatus(context.Background())
	if err != nil || !st.Current() {
		t.Fatalf("status %v, %v", st, err)
	}
}

func TestFindTenant(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	a := mustTenant(t, db, "acme.com")
	if got, err := db.FindTenantByID(ctx, a.ID); err != nil || got.Key != "acme.com" {
		t.Errorf("FindTenantByID = %+v, %v", got, err)
	}
	if _, err := db.FindTenantByKey(ctx, "nope.com"); !errors.Is(err, tenancy.ErrTenantNotFound) {
		t.Errorf("FindTenantByKey(unknown) error = %v", err)
	}
	all, err := db.FindTenants(ctx)
	if err != nil || len(all) != 1 {
		t.Errorf("FindTenants = %d, %v", len(all), err)
	}
}

// TestFindTenantsByID: the tenants that exist among the ids, in one
// statement; unknown ids and an empty list are no error.
func TestFindTenantsByID(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	a, b, c := mustTenant(t, db, "a.example"), mustTenant(t, db, "b.example"), mustTenant(t, db, "c.example")
	got, err := db.FindTenantsByID(ctx, []string{a.ID, c.ID, "00000000-0000-4000-8000-000000000000"})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, tn := range got {
		keys[tn.ID] = tn.Key
	}
	if len(got) != 2 || keys[a.ID] != "a.example" || keys[c.ID] != "c.example" {
		t.Errorf("FindTenantsByID(a, c, unknown) = %v, want a and c", keys)
	}
	if _, ok := keys[b.ID]; ok {
		t.Error("FindTenantsByID returned a tenant not asked for")
	}
	if got, err := db.FindTenantsByID(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("FindTenantsByID(none) = %v, %v", got, err)
	}
}

// TestMigrationsOnlyLocked: serve starts when the tenants it could not
// migrate were all held up by locks, and refuses when any migration failed
// for a reason of its own.
func TestMigrationsOnlyLocked(t *testing.T) {
	locked := fmt.Errorf("tenant a: %w", store.ErrMigrationLocked)
	broken := errors.New("tenant b: migration 0009_x: syntax error")
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{locked, true},
		{errors.Join(locked, fmt.Errorf("tenant c: %w", store.ErrMigrationLocked)), true},
		{errors.Join(locked, broken), false},
		{broken, false},
		{errors.Join(broken), false},
	} {
		if got := store.MigrationsOnlyLocked(c.err); got != c.want {
			t.Errorf("MigrationsOnlyLocked(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestMigrateTenantsStopsWhenManyAreLocked: when another session holds
// many tenants' tables (as a pg_dump does), MigrateTenants stops trying
// after a few of them were held up (each try holds up its tenant's calls
// for a lock wait), and says so: the error is only locks, and held back.
func TestMigrateTenantsStopsWhenManyAreLocked(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	reader, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Rollback(ctx) //nolint:errcheck
	const n = 24
	for i := range n {
		tn := mustTenant(t, db, fmt.Sprintf("locked-%d.example", i))
		storetest.BackToSchema2(t, db, tn)
		if _, err := reader.Exec(ctx, "SELECT count(*) FROM "+pgx.Identifier{tn.Schema, "todos"}.Sanitize()); err != nil {
			t.Fatal(err)
		}
	}
	err = db.MigrateTenants(ctx, 4, nil)
	if !store.MigrationsOnlyLocked(err) || !store.MigrationsHeldBack(err) || !store.Unavailable(err) {
		t.Fatalf("MigrateTenants with every tenant's todos read by another session: %v; want only locks, held back", err)
	}
	if !strings.Contains(err.Error(), "not tried after") {
		t.Errorf("the error does not say tenants were not tried: %v", err)
	}
	if st, err := db.MigrationStatus(ctx); err != nil || st.TenantsBehind != n {
		t.Fatalf("status %v, %v; want all %d tenants still behind", st, err, n)
	}
	if err := reader.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// The tenants tried are held back for a moment after their try (each
	// try holds up the table); then every tenant is migrated.
	for deadline := time.Now().Add(3 * store.CatchUpPause); ; time.Sleep(200 * time.Millisecond) {
		err := db.MigrateTenants(ctx, 4, nil)
		if err == nil {
			break
		}
		if !store.MigrationsOnlyLocked(err) || time.Now().After(deadline) {
			t.Fatalf("once the reader is gone: %v", err)
		}
	}
	if st, err := db.MigrationStatus(ctx); err != nil || st.TenantsBehind != 0 {
		t.Fatalf("status %v, %v; want every tenant migrated", st, err)
	}
}

// TestCatchUpHeldBackForEveryProcess: a tenant whose catch-up migration met
// a lock is held back for store.CatchUpPause on every process on the
// database, not only the one that tried: calls of two replicas released
// together make one try between them (each try queues an ACCESS EXCLUSIVE
// request that holds up every statement on the table for its lock wait),
// the hold outlasts the lock by the pause, and a try after it migrates the
// tenant and clears the hold.
func TestCatchUpHeldBackForEveryProcess(t *testing.T) {
	ctx := context.Background()
	url := storetest.ConnString(t)
	var replicas [2]*store.DB
	for i := range replicas {
		db, err := store.Open(ctx, url, &store.Options{Logger: storetest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		replicas[i] = db
	}
	tn := mustTenant(t, replicas[0], "held.example")
	storetest.BackToSchema2(t, replicas[0], tn)
	release := storetest.LockTable(t, replicas[0], tn.Schema, "todos")

	const each = 4
	start := make(chan struct{})
	errs := make([]error, 2*each)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { <-start; errs[i] = replicas[i%2].CatchUpTenant(ctx, tn.ID) })
	}
	close(start)
	wg.Wait()
	tried := 0
	for i, err := range errs {
		var held *store.MigrationLockedError
		if !errors.As(err, &held) || !errors.Is(err, store.ErrMigrationLocked) || !store.Locked(err) || !store.Unavailable(err) {
			t.Fatalf("call %d (replica %d) beside the lock: %v; want a MigrationLockedError", i, i%2, err)
		}
		if held.RetryAfter <= 0 || held.RetryAfter > store.CatchUpPause {
			t.Errorf("call %d: retry after %v, want within (0, %v]", i, held.RetryAfter, store.CatchUpPause)
		}
		if held.Tried {
			tried++
		}
	}
	if tried != 1 {
		t.Errorf("%d tries of the migration for %d calls over two replicas, want 1", tried, len(errs))
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	// The lock is gone, but the hold lasts its pause, on both replicas.
	for i, db := range replicas {
		var held *store.MigrationLockedError
		if err := db.CatchUpTenant(ctx, tn.ID); !errors.As(err, &held) || held.Tried {
			t.Errorf("replica %d right after the lock: %v; want held back without a try", i, err)
		}
	}
	deadline := time.Now().Add(3 * store.CatchUpPause)
	for {
		err := replicas[1].CatchUpTenant(ctx, tn.ID)
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrMigrationLocked) || time.Now().After(deadline) {
			t.Fatalf("after the pause: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, err := replicas[0].FindTenantByID(ctx, tn.ID); err != nil || got.SchemaVersion != store.TenantSchemaVersion() {
		t.Fatalf("tenant after the catch-up: %+v, %v", got, err)
	}
	var holds int
	if err := replicas[0].Pool().QueryRow(ctx, "SELECT count(*) FROM gatehouse.migration_holds").Scan(&holds); err != nil || holds != 0 {
		t.Errorf("holds left after a successful catch-up: %d, %v", holds, err)
	}
}
