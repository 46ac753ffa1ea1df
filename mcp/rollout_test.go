package mcp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
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
	// Put the tenant back where the previous release (tenant schema 2,
	// before the workspace migration) left it.
	schema := pgx.Identifier{tn.Schema}.Sanitize()
	for _, sql := range []string{
		"DROP TABLE " + schema + ".document_chunks",
		"DROP TABLE " + schema + ".documents",
		"DROP FUNCTION " + schema + ".document_tags_text_" + strings.TrimPrefix(tn.Schema, "t_") + "(text[]), " + schema + ".document_tags_valid_" + strings.TrimPrefix(tn.Schema, "t_") + "(text[])",
		"ALTER TABLE " + schema + ".todos DROP COLUMN project_id, DROP COLUMN due_on, DROP COLUMN priority, DROP COLUMN updated_at",
		"DROP TABLE " + schema + ".projects",
		"ALTER TABLE " + schema + ".audit_log DROP COLUMN via",
		"UPDATE gatehouse.tenants SET schema_version = 2 WHERE id = '" + tn.ID + "'",
	} {
		if _, err := g.db.Pool().Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
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
