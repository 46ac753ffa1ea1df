package mcp_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestRollingDeploy: during a rolling deploy both releases run on one
// database. The new release must serve a tenant the previous release
// created (at the previous tenant schema version) without an operator
// running `gatehouse migrate` again, and stay ready meanwhile; the
// previous release must stay ready, and start, on the migrated database.
func TestRollingDeploy(t *testing.T) {
	g := newGatehouse(t)
	ctx := context.Background()
	key := g.key(t, "old-release.example", tenancy.Admin)
	tn, err := g.db.FindTenantByKey(ctx, "old-release.example")
	if err != nil {
		t.Fatal(err)
	}
	storetest.BackToSchema2(t, g.db, tn)
	status, body := getBody(t, g.ts.URL+"/readyz")
	if status != http.StatusOK || !strings.Contains(body, `"tenant_schemas_catching_up":"1"`) {
		t.Errorf("readyz with a tenant behind: %d %s", status, body)
	}
	// Its first request brings it up to date and uses the new tables.
	cs := g.connect(t, key, "")
	if res := call(t, cs, "create_project", map[string]any{"name": "after the rollout"}, nil); res.IsError {
		t.Fatalf("create_project on a tenant of the previous release: %+v", res.Content)
	}
	if after, _ := g.db.FindTenantByID(ctx, tn.ID); after.SchemaVersion != store.TenantSchemaVersion() {
		t.Errorf("tenant schema at %d after its first request, want %d", after.SchemaVersion, store.TenantSchemaVersion())
	}

	// The next release adds a control migration: this (now previous)
	// release still migrates (a no-op), starts and stays ready.
	if _, err := g.db.Pool().Exec(ctx, "INSERT INTO gatehouse.schema_migrations (version, name) VALUES (9999, 'from_the_next_release')"); err != nil {
		t.Fatal(err)
	}
	if err := g.db.MigrateControl(ctx); err != nil {
		t.Errorf("migrating a database the next release migrated: %v", err)
	}
	if status, body := getBody(t, g.ts.URL+"/readyz"); status != http.StatusOK {
		t.Errorf("readyz on a database the next release migrated: %d %s", status, body)
	}
}

func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(res.Body).Decode(&v)
	b, _ := json.Marshal(v)
	return res.StatusCode, string(b)
}

// TestMigrationBehindALock: a tenant left behind by the previous release
// whose todos another session is reading (a long query, a dump: ACCESS
// SHARE held) is not brought up to date while that lasts, and nothing
// waits on it for long: its calls answer 503 with Retry-After (its
// migration's ALTER TABLE gave up after a bounded wait, so its queued
// ACCESS EXCLUSIVE no longer holds every other statement on the table), a
// reader of its table is served, another tenant behind is brought up to
// date and served, and MigrateTenants reports only a lock (serve starts on
// that). Calls arriving together share one try of its migration, and a
// call soon after is refused without one. Once the reader is gone, a call
// after the pause brings it up to date.
func TestMigrationBehindALock(t *testing.T) {
	g := newGatehouse(t)
	ctx := context.Background()
	keys := map[string]string{}
	tenants := map[string]*tenancy.Tenant{}
	for _, k := range []string{"behind.example", "other.example"} {
		keys[k] = g.key(t, k, tenancy.Admin)
		tn, err := g.db.FindTenantByKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		storetest.BackToSchema2(t, g.db, tn)
		tenants[k] = tn
	}
	todos := pgx.Identifier{tenants["behind.example"].Schema, "todos"}.Sanitize()
	reader, err := g.db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Rollback(ctx) //nolint:errcheck
	if _, err := reader.Exec(ctx, "SELECT count(*) FROM "+todos); err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		lastBody string // of the latest answer
	)
	initialize := func(key string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, g.ts.URL+"/mcp", strings.NewReader(
			`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		res, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("a call of a tenant whose migration meets a lock: %v", err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		mu.Lock()
		lastBody = string(b)
		mu.Unlock()
		return res
	}
	// Calls released together share one try; a call after it is refused
	// without another (each try holds up the table for a lock wait).
	start := make(chan struct{})
	var wg sync.WaitGroup
	codes := make([]*http.Response, 4)
	for i := range codes {
		wg.Go(func() { <-start; codes[i] = initialize(keys["behind.example"]) })
	}
	close(start)
	wg.Wait()
	for _, res := range append(codes, initialize(keys["behind.example"])) {
		if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
			t.Fatalf("a call of the tenant behind a lock: %d, Retry-After %q; want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
		}
	}
	if n := strings.Count(g.logs.String(), "held up by a lock"); n != 1 {
		t.Errorf("%d tries of the migration for 5 calls, want 1", n)
	}
	// A lock is not an outage: the answer says what it is, and operators
	// count it apart from the database's outages.
	if !strings.Contains(lastBody, "held by another database session") || !strings.Contains(lastBody, `"unavailable":"database"`) {
		t.Errorf("the answer of a call behind the lock: %s", lastBody)
	}
	_, metrics := getText(t, g.ts.URL+"/metrics")
	if !strings.Contains(metrics, `gatehouse_unavailable_total{dependency="database_lock"} 5`) || strings.Contains(metrics, `gatehouse_unavailable_total{dependency="database"}`) {
		t.Errorf("the calls behind the lock, counted:\n%s", grepLines(metrics, "gatehouse_unavailable_total"))
	}
	if strings.Contains(g.logs.String(), "a dependency cannot be reached") {
		t.Errorf("the calls behind the lock were logged as an outage:\n%s", grepLines(g.logs.String(), "cannot be reached"))
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := g.db.Pool().Exec(rctx, "SELECT count(*) FROM "+todos); err != nil {
		t.Fatalf("another reader of the table after the migration gave up: %v", err)
	}
	if res := initialize(keys["other.example"]); res.StatusCode != http.StatusOK {
		t.Fatalf("a call of the other tenant behind: %d", res.StatusCode)
	}
	err = g.db.MigrateTenants(ctx, 2, nil)
	if !store.MigrationsOnlyLocked(err) || !store.Unavailable(err) {
		t.Fatalf("MigrateTenants beside the reader: %v; want only the lock, as transient", err)
	}
	for k, want := range map[string]int{"behind.example": 2, "other.example": store.TenantSchemaVersion()} {
		if tn, _ := g.db.FindTenantByID(ctx, tenants[k].ID); tn.SchemaVersion != want {
			t.Errorf("%s at schema %d, want %d", k, tn.SchemaVersion, want)
		}
	}
	if err := reader.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// As a client does after a 503: again after Retry-After (the tenant
	// is refused without a try for a few seconds after the last one).
	refused := len(codes) + 1
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if initialize(keys["behind.example"]).StatusCode == http.StatusOK {
			break
		}
		refused++
		if time.Now().After(deadline) {
			t.Fatal("the tenant is still refused 20 s after the reader went")
		}
	}
	cs := g.connect(t, keys["behind.example"], "")
	if res := call(t, cs, "create_project", map[string]any{"name": "after the reader"}, nil); res.IsError {
		t.Fatalf("create_project once the reader is gone: %+v", res.Content)
	}
	behind, _ := g.db.FindTenantByID(ctx, tenants["behind.example"].ID)
	if behind.SchemaVersion != store.TenantSchemaVersion() {
		t.Errorf("behind.example at schema %d after its call, want %d", behind.SchemaVersion, store.TenantSchemaVersion())
	}
	// Each refusal is a decision on the tenant's behalf, in its audit log:
	// one ERROR record per principal and tool, with the count.
	g.srv.FlushAudit(ctx)
	var (
		records, count int
		reason, tool   string
	)
	if err := g.db.WithTenant(ctx, behind, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*), coalesce(sum(count), 0), coalesce(min(reason), ''), coalesce(min(tool), '')
			FROM audit_log WHERE decision = 'ERROR'`).Scan(&records, &count, &reason, &tool)
	}); err != nil {
		t.Fatal(err)
	}
	if count != refused || records == 0 || !strings.Contains(reason, "another database session holds its tables") || tool != "initialize" {
		t.Errorf("the refused requests' records: %d records counting %d requests (%q, tool %q); want %d requests, held by another session, initialize",
			records, count, reason, tool, refused)
	}
	if rep, err := g.db.VerifyAudit(ctx, behind, testAuditKey); err != nil || !rep.OK() {
		t.Errorf("behind.example's audit log: %+v, %v", rep, err)
	}
}
