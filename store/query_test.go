package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

var queryLimits = store.QueryLimits{Timeout: 2 * time.Second, MaxRows: 50, MaxBytes: 64 << 10}

func queryFixture(t *testing.T) (*store.DB, *tenancy.Tenant, *tenancy.Tenant) {
	t.Helper()
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	a, b := mustTenant(t, db, "acme.com"), mustTenant(t, db, "globex.com")
	for _, tn := range []*tenancy.Tenant{a, b} {
		err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			_, err := store.AddTodo(ctx, tx, tn.Key+" secret", "", "test")
			if err == nil {
				err = store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: store.Allowed, Subject: "x"})
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return db, a, b
}

func TestQueryReadsOwnWorkspace(t *testing.T) {
	db, a, _ := queryFixture(t)
	res, err := db.Query(context.Background(), a, "SELECT title, done, 1 AS n, 2 AS n FROM todos;", queryLimits)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Columns, ",") != "title,done,n,n" || len(res.Rows) != 1 || string(res.Rows[0][0]) != `"acme.com secret"` || string(res.Rows[0][3]) != "2" {
		t.Errorf("result = %+v", res)
	}
	big, err := db.Query(context.Background(), a, "SELECT g FROM generate_series(1, 100000) g", queryLimits)
	if err != nil {
		t.Fatalf("long result: %v", err)
	}
	if len(big.Rows) != 50 || !strings.Contains(big.Truncated, "more than 50 rows") {
		t.Errorf("huge result: %d rows, %q, %v", len(big.Rows), big.Truncated, err)
	}
	// A query whose intermediate result outgrows the role's temp_file_limit
	// is refused by Postgres (a set-returning function materialises). The
	// timeout is generous so that a busy machine reaches the limit first.
	var qe *store.QueryError
	patient := queryLimits
	patient.Timeout = 25 * time.Second
	if _, err := db.Query(context.Background(), a, "SELECT g FROM generate_series(1, 1000000000) g", patient); !errors.As(err, &qe) || !strings.Contains(qe.Msg, "temp_file_limit") {
		t.Errorf("huge intermediate result: %v", err)
	}
	wide, err := db.Query(context.Background(), a, "SELECT repeat('x', 10000) FROM generate_series(1, 40)", queryLimits)
	if err != nil {
		t.Fatalf("wide result: %v", err)
	}
	if len(wide.Rows) >= 40 || !strings.Contains(wide.Truncated, "bytes") {
		t.Errorf("wide result: %d rows, %q, %v", len(wide.Rows), wide.Truncated, err)
	}
}

// TestQueryEscapes: every way out we know of fails, and Postgres is what
// stops it.
func TestQueryEscapes(t *testing.T) {
	db, a, b := queryFixture(t)
	other := pgx.Identifier{b.Schema, "todos"}.Sanitize()
	attempts := map[string]string{
		"other tenant by qualified name": "SELECT * FROM " + other,
		"own audit log":                  "SELECT * FROM audit_log",
		"control schema":                 "SELECT * FROM gatehouse.api_keys",
		"reset role":                     "RESET ROLE",
		"set role none":                  "SET ROLE NONE",
		"set_config role none then read": "SELECT set_config('role', 'none', true), (SELECT count(*) FROM " + other + ")",
		"become the tenant role":         fmt.Sprintf("SELECT set_config('role', %s, false)", quote(a.DBRole)),
		"become another tenant's role":   fmt.Sprintf("SELECT set_config('role', %s, false)", quote(b.QueryRole)),
		"session authorization":          "SET SESSION AUTHORIZATION postgres",
		"session authorization function": "SELECT set_config('session_authorization', 'postgres', false)",
		"several statements":             "SELECT 1; DELETE FROM todos",
		"do block":                       "DO $$ BEGIN DELETE FROM todos; END $$",
		"copy":                           "COPY todos TO STDOUT",
		"write through a CTE":            "WITH d AS (DELETE FROM todos RETURNING *) SELECT * FROM d",
		"insert returning":               "INSERT INTO todos (title, created_by) VALUES ('x', 'y') RETURNING id",
		"locking clause":                 "SELECT * FROM todos FOR UPDATE",
		"sequence side effect":           "SELECT nextval('gatehouse.nope')",
		"read a server file":             "SELECT pg_read_file('/etc/passwd')",
		"long-running":                   "SELECT pg_sleep(10)",
		"close our paren":                "SELECT 1) s, " + other + " t --",
		"unterminated comment":           "SELECT 1 /*",
		"empty":                          " ; ",
	}
	for name, sql := range attempts {
		start := time.Now()
		res, err := db.Query(context.Background(), a, sql, queryLimits)
		var qe *store.QueryError
		if !errors.As(err, &qe) {
			t.Errorf("%s: %q gave %+v, %v; want Postgres to refuse it", name, sql, res, err)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("%s: took %v", name, time.Since(start))
		}
	}
	// Nothing changed: each tenant still has its one todo.
	for _, tn := range []*tenancy.Tenant{a, b} {
		var n int
		if err := db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{tn.Schema, "todos"}.Sanitize()).Scan(&n); err != nil || n != 1 {
			t.Errorf("tenant %s has %d todos (%v)", tn.Key, n, err)
		}
	}
	// The session user is the query role, with nothing to fall back to.
	res, err := db.Query(context.Background(), a, "SELECT session_user, current_user, set_config('role', 'none', true) IS NOT NULL, current_user", queryLimits)
	if err != nil || string(res.Rows[0][0]) != `"`+a.QueryRole+`"` || string(res.Rows[0][3]) != `"`+a.QueryRole+`"` {
		t.Errorf("who the session is: %+v, %v", res, err)
	}
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// TestForgedInvalidationsAreIgnored: any database user may NOTIFY, a
// tenant's query session too; only signed invalidations reach the caches.
func TestForgedInvalidationsAreIgnored(t *testing.T) {
	db, a, _ := queryFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan store.Invalidation, 10)
	go db.Listen(ctx, func(inv store.Invalidation) { got <- inv })
	<-got // the reset marker on connect
	for _, payload := range []string{"*:x", "apikey:victim", "apikey:victim:AAAAAAAAAAAAAAAAAAAAAA", "tenant:" + a.ID + ":forged"} {
		if _, err := db.Query(context.Background(), a, "SELECT pg_notify('gatehouse_invalidate', "+quote(payload)+")", queryLimits); err != nil {
			t.Fatalf("notify from a query session: %v", err)
		}
	}
	if err := db.SetTenantRateLimit(context.Background(), a.ID, nil); err != nil { // a genuine, signed one
		t.Fatal(err)
	}
	select {
	case inv := <-got:
		if inv != (store.Invalidation{Kind: store.InvalidateTenant, ID: a.ID}) {
			t.Errorf("first invalidation delivered: %+v; want the genuine one only", inv)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the genuine invalidation did not arrive")
	}
	select {
	case inv := <-got:
		t.Errorf("a forged invalidation was delivered: %+v", inv)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestPolledInvalidations: behind a transaction pooler invalidations are
// polled from a table; only signed rows reach the caches there too.
func TestPolledInvalidations(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := store.Open(ctx, storetest.ConnString(t), &store.Options{TransactionPooler: true, Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tn, _, err := db.EnsureTenant(ctx, "polled.example", tenancy.Organization)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan store.Invalidation, 10)
	go db.Listen(ctx, func(inv store.Invalidation) { got <- inv })
	if inv := <-got; inv.Kind != "*" {
		t.Fatalf("first delivery %+v, want the reset marker", inv)
	}
	if _, err := db.Pool().Exec(ctx, "INSERT INTO gatehouse.invalidations (payload) VALUES ('tenant:"+tn.ID+":forged')"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetTenantRateLimit(ctx, tn.ID, nil); err != nil { // genuine
		t.Fatal(err)
	}
	select {
	case inv := <-got:
		if inv != (store.Invalidation{Kind: store.InvalidateTenant, ID: tn.ID}) {
			t.Errorf("delivered %+v; want the genuine one only", inv)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the genuine invalidation did not arrive by polling")
	}
	select {
	case inv := <-got:
		t.Errorf("delivered again or forged: %+v", inv)
	case <-time.After(600 * time.Millisecond): // three polls
	}
}

// TestQueryRoleSeesEveryTableButTheHidden: the query role may read every
// table a tenant's migrations create except the audit log, by name; a
// table created later (by a migration that does not name it, or by hand)
// is not readable: no default privileges.
func TestQueryRoleSeesEveryTableButTheHidden(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "acme.com")
	// The query role exists once the query tool is first used.
	if _, err := db.Query(ctx, tn, "SELECT 1", queryLimits); err != nil {
		t.Fatal(err)
	}
	tn, err := db.FindTenantByID(ctx, tn.ID)
	if err != nil || tn.QueryRole == "" {
		t.Fatalf("query role: %q, %v", tn.QueryRole, err)
	}
	readable := func() map[string]bool {
		rows, _ := db.Pool().Query(ctx, `SELECT c.relname, has_table_privilege($2, c.oid, 'SELECT')
			FROM pg_class c WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY 1`, tn.Schema, tn.QueryRole)
		m := map[string]bool{}
		for rows.Next() {
			var name string
			var ok bool
			if err := rows.Scan(&name, &ok); err != nil {
				t.Fatal(err)
			}
			m[name] = ok
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return m
	}
	got := readable()
	if len(got) < 4 {
		t.Fatalf("tables of a tenant: %v", got)
	}
	for name, ok := range got {
		// Hidden: the audit log, and semantic search's vectors (derived
		// from documents, which it may read; arrays of hundreds of
		// numbers are no use in a SQL answer).
		if want := name != "audit_log" && name != "document_chunks"; ok != want {
			t.Errorf("query role may read %s: %v, want %v (a new tenant table must be named in store's queryTables)", name, ok, want)
		}
	}
	var defaults int
	if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM pg_default_acl").Scan(&defaults); err != nil || defaults != 0 {
		t.Fatalf("default privileges: %d, %v", defaults, err)
	}
	// A table created afterwards is not readable.
	s := pgx.Identifier{tn.Schema}.Sanitize()
	if _, err := db.Pool().Exec(ctx, "CREATE TABLE "+s+".later (secret text)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Query(ctx, tn, "SELECT * FROM later", queryLimits); err == nil {
		t.Error("the query tool read a table created after the tenant")
	}
	// An older release granted ON ALL TABLES (audit log included) and
	// revoked the audit log by name; the next process's set-up revokes it
	// again, by name.
	if _, err := db.Pool().Exec(ctx, "GRANT SELECT ON ALL TABLES IN SCHEMA "+s+" TO "+pgx.Identifier{tn.QueryRole}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	db2, err := store.Open(ctx, db.Pool().Config().ConnString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if _, err := db2.Query(ctx, tn, "SELECT * FROM audit_log", queryLimits); err == nil {
		t.Error("the query tool read the audit log after an older release's grant")
	}
}
