package store_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/migrations"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestTenantFunctionNames: a tenant provisioned before its functions were
// named after its schema (document_tags_text, document_tags_valid: the
// same names in every schema, which PostgreSQL resolves by reading every
// function of that name) gets them renamed by the tenant migration
// tenant_function_names; one already named so is left alone; documents
// keep their tag check and search column either way.
func TestTenantFunctionNames(t *testing.T) {
	ctx := context.Background()
	db := storetest.MustOpenDB(t)
	version := slices.IndexFunc(migrations.Tenant(), func(m migrations.Migration) bool { return m.Name == "tenant_function_names" })
	if version < 0 {
		t.Fatal("no tenant migration tenant_function_names")
	}
	old, current := mustTenant(t, db, "old-names.example"), mustTenant(t, db, "new-names.example")
	oldSchema := pgx.Identifier{old.Schema}.Sanitize()
	for _, f := range []string{"document_tags_text", "document_tags_valid"} {
		sql := "ALTER FUNCTION " + oldSchema + "." + f + "_" + strings.TrimPrefix(old.Schema, "t_") + "(text[]) RENAME TO " + f
		if _, err := db.Pool().Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// Both back to the version before the migration (version is its index).
	if _, err := db.Pool().Exec(ctx, "UPDATE gatehouse.tenants SET schema_version = $1 WHERE id IN ($2, $3)", version, old.ID, current.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.MigrateTenants(ctx, 2, nil); err != nil {
		t.Fatal(err)
	}
	for _, tn := range []struct{ schema, id string }{{old.Schema, old.ID}, {current.Schema, current.ID}} {
		rows, _ := db.Pool().Query(ctx, "SELECT proname FROM pg_proc WHERE pronamespace = $1::regnamespace ORDER BY proname", tn.schema)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		hex := strings.TrimPrefix(tn.schema, "t_")
		if want := []string{"document_tags_text_" + hex, "document_tags_valid_" + hex}; err != nil || !slices.Equal(names, want) {
			t.Errorf("functions of %s: %v (%v), want %v", tn.schema, names, err, want)
		}
		tenant, err := db.FindTenantByID(ctx, tn.id)
		if err != nil {
			t.Fatal(err)
		}
		err = db.WithTenant(ctx, tenant, func(tx pgx.Tx) error {
			if _, err := store.CreateDocument(ctx, tx, store.NewDocument{Title: "notes", Tags: []string{"quarterly"}, CreatedBy: "test"}); err != nil {
				return err
			}
			hits, _, err := store.SearchDocuments(ctx, tx, store.DocumentSearch{Query: "quarterly", Limit: 5})
			if err == nil && len(hits) != 1 {
				t.Errorf("%s: search by tag found %d documents", tn.schema, len(hits))
			}
			return err
		})
		if err != nil {
			t.Errorf("%s: %v", tn.schema, err)
		}
		err = db.WithTenant(ctx, tenant, func(tx pgx.Tx) error {
			_, err := store.CreateDocument(ctx, tx, store.NewDocument{Title: "bad", Tags: []string{""}, CreatedBy: "test"})
			return err
		})
		if err == nil {
			t.Errorf("%s: an empty tag passed the check", tn.schema)
		}
	}
}
