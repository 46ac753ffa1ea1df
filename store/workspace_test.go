package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/migrations"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// inTenant runs fn in tn, failing the test on error.
func inTenant(t *testing.T, db *store.DB, tn *tenancy.Tenant, fn func(ctx context.Context, tx pgx.Tx) error) {
	t.Helper()
	ctx := context.Background()
	if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatal(err)
	}
}

// TestWorkspaceMigrationKeepsTodos: todos written before 0003 stay valid
// and get the new columns' defaults.
func TestWorkspaceMigrationKeepsTodos(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "acme.com")
	schema := pgx.Identifier{tn.Schema}.Sanitize()
	role := pgx.Identifier{tn.DBRole}.Sanitize()
	// Rebuild the schema at version 2 with a todo in it, as the previous
	// release left it.
	sql := fmt.Sprintf("DROP SCHEMA %[1]s CASCADE; CREATE SCHEMA %[1]s; GRANT USAGE ON SCHEMA %[1]s TO %[2]s; SET LOCAL search_path = %[1]s", schema, role)
	for _, m := range migrations.Tenant()[:2] {
		sql += ";\n" + strings.ReplaceAll(m.SQL, "{{tenant_role}}", role)
	}
	sql += fmt.Sprintf(`; INSERT INTO todos (title, created_by, done, completed_at, created_at)
		VALUES ('old', 'test', true, '2026-01-02T00:00:00Z', '2026-01-01T00:00:00Z');
		UPDATE gatehouse.tenants SET schema_version = 2 WHERE id = '%s'`, tn.ID)
	if err := pgx.BeginFunc(ctx, db.Pool(), func(tx pgx.Tx) error { _, err := tx.Exec(ctx, sql); return err }); err != nil {
		t.Fatal(err)
	}
	if err := db.MigrateTenants(ctx, 1, nil); err != nil {
		t.Fatal(err)
	}
	tn, err := db.FindTenantByID(ctx, tn.ID)
	if err != nil || tn.SchemaVersion != len(migrations.Tenant()) {
		t.Fatalf("tenant after migration: %+v, %v", tn, err)
	}
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
		todos, _, err := store.ListTodos(ctx, tx, store.TodoFilter{Limit: 10})
		if err != nil {
			return err
		}
		if len(todos) != 1 {
			t.Fatalf("todos after migration: %+v", todos)
		}
		old := todos[0]
		if old.Priority != "normal" || old.ProjectID != nil || old.DueOn != nil || !old.UpdatedAt.Equal(*old.CompletedAt) {
			t.Errorf("old todo after migration: %+v", old)
		}
		return nil
	})
}

// TestWorkspaceConstraints: the database refuses what the tools refuse,
// and the tenant role has exactly the privileges the tools need.
func TestWorkspaceConstraints(t *testing.T) {
	db := storetest.MustOpenDB(t)
	tn := mustTenant(t, db, "acme.com")
	other := mustTenant(t, db, "globex.com")
	var projectID string
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
		p, err := store.CreateProject(ctx, tx, "Website", "", "test")
		projectID = p.ID
		return err
	})
	tags21 := make([]string, 21)
	for i := range tags21 {
		tags21[i] = fmt.Sprint("t", i)
	}
	for name, exec := range map[string]func(context.Context, pgx.Tx) error{
		"empty title": func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.CreateDocument(ctx, tx, store.NewDocument{Title: "", Body: "b", CreatedBy: "t"})
			return err
		},
		"long title": func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.CreateDocument(ctx, tx, store.NewDocument{Title: strings.Repeat("x", 301), Body: "b", CreatedBy: "t"})
			return err
		},
		"body over 1 MiB": func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.CreateDocument(ctx, tx, store.NewDocument{Title: "t", Body: strings.Repeat("é", store.MaxDocumentBody/2+1), CreatedBy: "t"})
			return err
		},
		"21 tags": func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.CreateDocument(ctx, tx, store.NewDocument{Title: "t", Body: "b", Tags: tags21, CreatedBy: "t"})
			return err
		},
		"long tag": func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.CreateDocument(ctx, tx, store.NewDocument{Title: "t", Body: "b", Tags: []string{strings.Repeat("x", 51)}, CreatedBy: "t"})
			return err
		},
		"empty tag": func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.CreateDocument(ctx, tx, store.NewDocument{Title: "t", Body: "b", Tags: []string{""}, CreatedBy: "t"})
			return err
		},
		"bad priority": func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.CreateTodo(ctx, tx, store.NewTodo{Title: "t", Priority: "critical", CreatedBy: "t"})
			return err
		},
		"duplicate project name": func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.CreateProject(ctx, tx, "WEBSITE", "", "t")
			if !errors.Is(err, store.ErrProjectNameTaken) {
				return fmt.Errorf("want ErrProjectNameTaken, got %w", err)
			}
			return err
		},
		"delete a project": func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "DELETE FROM projects")
			return err
		},
		"missing project": func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.CreateTodo(ctx, tx, store.NewTodo{Title: "t", ProjectID: new("00000000-0000-4000-8000-000000000000"), CreatedBy: "t"})
			if !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("want ErrNotFound, got %w", err)
			}
			return err
		},
		"other tenant's documents": func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT count(*) FROM "+pgx.Identifier{other.Schema, "documents"}.Sanitize())
			return err
		},
	} {
		if err := db.WithTenant(context.Background(), tn, func(tx pgx.Tx) error { return exec(context.Background(), tx) }); err == nil {
			t.Errorf("%s: succeeded", name)
		} else if strings.HasPrefix(err.Error(), "want ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Archiving frees the name.
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := store.ArchiveProject(ctx, tx, projectID); err != nil {
			return err
		}
		_, err := store.CreateProject(ctx, tx, "website", "", "test")
		return err
	})
}

// TestSearchIndexLimits: a 1 MiB body of distinct words (more than a
// tsvector can hold) is stored whole; its beginning is searchable.
func TestSearchIndexLimits(t *testing.T) {
	db := storetest.MustOpenDB(t)
	tn := mustTenant(t, db, "acme.com")
	var b strings.Builder
	for i := 0; b.Len() < store.MaxDocumentBody-16; i++ {
		fmt.Fprintf(&b, "w%x ", i*7919)
	}
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
		d, err := store.CreateDocument(ctx, tx, store.NewDocument{Title: "big", Body: b.String(), CreatedBy: "test"})
		if err != nil {
			return err
		}
		if d.Size != b.Len() {
			t.Errorf("size %d, want %d", d.Size, b.Len())
		}
		hits, _, err := store.SearchDocuments(ctx, tx, store.DocumentSearch{Query: "w0", Limit: 5})
		if err != nil || len(hits) != 1 {
			t.Errorf("search of the beginning: %v, %v", hits, err)
		}
		return err
	})
}

// TestWorkspaceStore exercises the repositories: updates with clearing,
// pagination by name and newest first, search ranking and stop words.
func TestWorkspaceStore(t *testing.T) {
	db := storetest.MustOpenDB(t)
	tn := mustTenant(t, db, "acme.com")
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
		p, err := store.CreateProject(ctx, tx, "Ops", "", "test")
		if err != nil {
			return err
		}
		due := time.Date(2026, 12, 1, 23, 30, 0, 0, time.FixedZone("far east", 14*3600))
		td, err := store.CreateTodo(ctx, tx, store.NewTodo{Title: "t", ProjectID: &p.ID, DueOn: &due, Priority: "high", CreatedBy: "test"})
		if err != nil {
			return err
		}
		if td.DueOn == nil || *td.DueOn != "2026-12-01" || td.Priority != "high" || td.ProjectID == nil || *td.ProjectID != p.ID {
			t.Errorf("created todo %+v", td)
		}
		td, err = store.UpdateTodo(ctx, tx, td.ID, store.TodoUpdate{ClearDueOn: true, ClearProject: true, Title: new("t2")})
		if err != nil {
			return err
		}
		if td.DueOn != nil || td.ProjectID != nil || td.Title != "t2" || td.Priority != "high" {
			t.Errorf("updated todo %+v", td)
		}
		for _, name := range []string{"beta", "Alpha", "gamma", "Delta"} {
			if _, err := store.CreateProject(ctx, tx, name, "", "test"); err != nil {
				return err
			}
		}
		var names []string
		f := store.ProjectFilter{Limit: 2}
		for {
			ps, more, err := store.ListProjects(ctx, tx, f)
			if err != nil {
				return err
			}
			for _, p := range ps {
				names = append(names, p.Name)
			}
			if !more {
				break
			}
			f.After = &store.ProjectPosition{Name: ps[len(ps)-1].Name, ID: ps[len(ps)-1].ID}
		}
		if got := strings.Join(names, " "); got != "Alpha beta Delta gamma Ops" {
			t.Errorf("projects by name: %s", got)
		}
		for _, d := range []store.NewDocument{
			{Title: "Weekly notes", Body: "We deploy on Fridays."},
			{Title: "Deploy guide", Body: "Steps."},
			{Title: "Misc", Body: "Nothing here.", Tags: []string{"deployment"}},
		} {
			d.CreatedBy = "test"
			if _, err := store.CreateDocument(ctx, tx, d); err != nil {
				return err
			}
		}
		hits, _, err := store.SearchDocuments(ctx, tx, store.DocumentSearch{Query: "deploying", Limit: 10})
		if err != nil {
			return err
		}
		var titles []string
		for _, h := range hits {
			titles = append(titles, h.Title)
		}
		if got := strings.Join(titles, ", "); got != "Deploy guide, Misc, Weekly notes" {
			t.Errorf("ranking: %s", got)
		}
		if len(hits) == 3 && !strings.Contains(hits[2].Snippet, "«deploy»") {
			t.Errorf("snippet %q lacks the marked match", hits[2].Snippet)
		}
		for _, q := range []string{"the and of", "!!! ???", "-"} {
			if n, err := store.CountSearchTerms(ctx, tx, q); err != nil || n != 0 {
				t.Errorf("terms of %q: %d, %v", q, n, err)
			}
		}
		return nil
	})
}
