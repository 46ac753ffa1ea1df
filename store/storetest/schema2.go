package storetest

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// BackToSchema2 puts tenant tn of db back where the previous releases left
// a tenant at tenant schema 2 (before the workspace migration), so that a
// test can bring it up to date again.
func BackToSchema2(tb testing.TB, db *store.DB, tn *tenancy.Tenant) {
	tb.Helper()
	schema := pgx.Identifier{tn.Schema}.Sanitize()
	tag := strings.TrimPrefix(tn.Schema, "t_")
	for _, sql := range []string{
		"DROP TABLE " + schema + ".document_chunks",
		"DROP TABLE " + schema + ".documents",
		"DROP FUNCTION " + schema + ".document_tags_text_" + tag + "(text[]), " + schema + ".document_tags_valid_" + tag + "(text[])",
		"ALTER TABLE " + schema + ".todos DROP COLUMN project_id, DROP COLUMN due_on, DROP COLUMN priority, DROP COLUMN updated_at",
		"DROP TABLE " + schema + ".projects",
		"ALTER TABLE " + schema + ".audit_log DROP COLUMN via",
		"UPDATE gatehouse.tenants SET schema_version = 2 WHERE id = '" + tn.ID + "'",
	} {
		if _, err := db.Pool().Exec(context.Background(), sql); err != nil {
			tb.Fatalf("%s: %v", sql, err)
		}
	}
}
