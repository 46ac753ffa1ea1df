package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// planCounts is one prepared statement's plans so far
// (pg_prepared_statements, PostgreSQL 14+).
type planCounts struct{ generic, custom int64 }

// plansOf returns the plans of the tools' statements prepared on the
// tenant connection, by the statement's text, read from a read of tn.
func plansOf(t *testing.T, db *store.DB, tn *tenancy.Tenant) map[string]planCounts {
	t.Helper()
	got := map[string]planCounts{}
	err := db.InTenantReadOnly(context.Background(), tn, func(ctx context.Context, tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements WHERE name LIKE 'gh\\_%'")
		var stmt string
		var c planCounts
		_, err := pgx.ForEachRow(rows, []any{&stmt, &c.generic, &c.custom}, func() error { got[stmt] = c; return nil })
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// checkOnlyPlans reports unless pc, the plans of what over runs runs, are
// all generic (generic) or all custom.
func checkOnlyPlans(t *testing.T, what string, pc planCounts, runs int64, generic bool) {
	t.Helper()
	switch {
	case generic && (pc.generic != runs || pc.custom != 0):
		t.Errorf("%s: %d generic and %d custom plans in %d runs, want only generic ones", what, pc.generic, pc.custom, runs)
	case !generic && (pc.custom != runs || pc.generic != 0):
		t.Errorf("%s: %d generic and %d custom plans in %d runs, want only custom ones", what, pc.generic, pc.custom, runs)
	}
}

// plansLike returns the plans of the one prepared statement whose text
// holds each of parts.
func plansLike(t *testing.T, all map[string]planCounts, parts ...string) planCounts {
	t.Helper()
	var found []string
	var c planCounts
	for stmt, pc := range all {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(stmt, p)
		}
		if ok {
			found = append(found, stmt)
			c = pc
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d prepared statements hold %q: %q", len(found), parts, found)
	}
	return c
}

// planMode returns plan_cache_mode as a statement sent with ctx in a read
// of tn sees it.
func planMode(t *testing.T, db *store.DB, tn *tenancy.Tenant, marked bool) string {
	t.Helper()
	var mode string
	err := db.InTenantReadOnly(context.Background(), tn, func(ctx context.Context, tx pgx.Tx) error {
		if marked {
			ctx = store.GenericPlan(ctx)
		}
		return tx.QueryRow(ctx, "SELECT current_setting('plan_cache_mode')").Scan(&mode)
	})
	if err != nil {
		t.Fatal(err)
	}
	return mode
}

func writeRec(tool string) *store.AuditRecord {
	return &store.AuditRecord{RequestID: "plans", Decision: store.Allowed, Tool: tool, Subject: "s", Count: 1}
}

// seedPlans gives tn a project, todos and documents.
func seedPlans(t *testing.T, db *store.DB, tn *tenancy.Tenant) (todoID, projectID string) {
	t.Helper()
	err := db.WithTenant(context.Background(), tn, func(tx pgx.Tx) error {
		ctx := context.Background()
		p, err := store.CreateProject(ctx, tx, "plans", "", "s")
		if err != nil {
			return err
		}
		projectID = p.ID
		for i := range 20 {
			td, err := store.CreateTodo(ctx, tx, store.NewTodo{Title: fmt.Sprint("todo ", i), ProjectID: &p.ID, CreatedBy: "s"})
			if err != nil {
				return err
			}
			todoID = td.ID
			if _, err := store.CreateDocument(ctx, tx, store.NewDocument{Title: fmt.Sprint("doc ", i), Body: "alpha bravo", Tags: []string{"alpha"}, CreatedBy: "s"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return todoID, projectID
}

// TestGenericPlansForMarkedReads: the reads whose plan does not depend on
// their arguments (lists of todos, projects, the audit log; a document by
// id) are planned generically from their first prepared execution; the
// searches and the documents filtered by tag keep custom plans, each
// execution planned for its arguments, as PostgreSQL plans the first five.
func TestGenericPlansForMarkedReads(t *testing.T) {
	db := openOneConn(t, 0)
	ctx := context.Background()
	tn := mustTenant(t, db, "plans-read.example")
	_, projectID := seedPlans(t, db, tn)
	const runs = 4
	for range runs {
		err := db.InTenantReadOnly(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			if _, _, err := store.ListTodos(ctx, tx, store.TodoFilter{Limit: 10}); err != nil {
				return err
			}
			if _, _, err := store.ListTodos(ctx, tx, store.TodoFilter{ProjectID: projectID, Limit: 10}); err != nil {
				return err
			}
			if _, _, err := store.ListProjects(ctx, tx, store.ProjectFilter{Limit: 10}); err != nil {
				return err
			}
			if _, _, err := store.FindAudit(ctx, tx, store.AuditFilter{Tool: "add_todo", Limit: 10}); err != nil {
				return err
			}
			if _, _, err := store.ListDocuments(ctx, tx, store.DocumentFilter{Tag: "alpha", Limit: 10}); err != nil {
				return err
			}
			_, _, err := store.SearchDocuments(ctx, tx, store.DocumentSearch{Query: "bravo", Limit: 10})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	all := plansOf(t, db, tn)
	for _, c := range []struct {
		what    string
		parts   []string
		generic bool
	}{
		{"list_todos", []string{"FROM todos WHERE", "IS NULL OR done = $1) ORDER BY"}, true},
		{"list_todos by project", []string{"FROM todos WHERE", "project_id = $2::uuid"}, true},
		{"list_projects", []string{"FROM projects WHERE", "NOT archived) ORDER BY"}, true},
		{"read_audit_log by tool", []string{"FROM audit_log", "tool = $1"}, true},
		{"list_documents by tag", []string{"FROM documents WHERE true AND tags @>"}, false},
		{"search_documents", []string{"websearch_to_tsquery", "ts_headline"}, false},
	} {
		pc := plansLike(t, all, c.parts...)
		checkOnlyPlans(t, c.what, pc, runs, c.generic)
	}
	// The setting stays in the message that needed it.
	if got := planMode(t, db, tn, true); got != "force_generic_plan" {
		t.Errorf("a marked prepared statement ran with plan_cache_mode %q", got)
	}
	if got := planMode(t, db, tn, false); got != "auto" {
		t.Errorf("after a marked read, an unmarked one ran with plan_cache_mode %q, want auto", got)
	}
}

// TestGenericPlansInWrites: a write whose statements are marked plans them
// and its audit record generically; an unmarked statement after a marked
// one, final (in the same message) or not, returns to custom plans; and
// nothing of it outlives the transaction.
func TestGenericPlansInWrites(t *testing.T) {
	db := openOneConn(t, 0)
	ctx := context.Background()
	tn := mustTenant(t, db, "plans-write.example")
	todoID, _ := seedPlans(t, db, tn)
	const runs = 3
	for i := range runs {
		title := fmt.Sprint("renamed ", i)
		if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.UpdateTodo(store.Final(ctx), tx, todoID, store.TodoUpdate{Title: &title})
			return err
		}, writeRec("update_todo")); err != nil {
			t.Fatal(err)
		}
		// Marked, then unmarked and not final (a round trip of its own),
		// then unmarked and final.
		if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := store.FindTodo(ctx, tx, todoID); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE documents SET title = title WHERE tags @> ARRAY[$1::text] AND false", "plans-mixed"); err != nil {
				return err
			}
			_, _, err := store.ListDocuments(store.Final(ctx), tx, store.DocumentFilter{Tag: "alpha", Limit: 5})
			return err
		}, writeRec("mixed")); err != nil {
			t.Fatal(err)
		}
		// Marked, then unmarked in the final message.
		if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := store.CompleteTodo(ctx, tx, todoID); err != nil {
				return err
			}
			_, err := tx.Exec(store.Final(ctx), "UPDATE documents SET body = body WHERE tags @> ARRAY[$1::text] AND false", "plans-final")
			return err
		}, writeRec("mixed final")); err != nil {
			t.Fatal(err)
		}
	}
	all := plansOf(t, db, tn)
	for _, c := range []struct {
		what    string
		parts   []string
		generic bool
	}{
		{"update_todo", []string{"UPDATE todos SET", "title = coalesce"}, true},
		{"find a todo", []string{"FROM todos WHERE id = $1"}, true},
		{"complete_todo", []string{"UPDATE todos SET done = true"}, true},
		{"the write's audit record", []string{"INSERT INTO audit_log"}, false},
		{"unmarked after marked", []string{"UPDATE documents SET title = title"}, false},
		{"unmarked final after unmarked", []string{"FROM documents WHERE true AND tags @>"}, false},
		{"unmarked final after marked", []string{"UPDATE documents SET body = body"}, false},
	} {
		pc := plansLike(t, all, c.parts...)
		if c.what == "the write's audit record" {
			// Generic in the update_todo writes (marked), custom in the
			// mixed ones (their statement before it was not) until
			// PostgreSQL's own choice after five.
			if pc.generic < runs || pc.custom < 5 {
				t.Errorf("%s: %d generic and %d custom plans, want at least %d and 5", c.what, pc.generic, pc.custom, runs)
			}
			continue
		}
		checkOnlyPlans(t, c.what, pc, runs, c.generic)
	}
	if got := planMode(t, db, tn, false); got != "auto" {
		t.Errorf("after the writes, a read ran with plan_cache_mode %q, want auto", got)
	}
}

// TestCustomPlansWhenNotPrepared: behind a transaction pooler (nothing
// prepared) and with Options.CustomPlans, marked statements run with
// PostgreSQL's own choice; so does a statement on its first use on a
// connection, before it is prepared.
func TestCustomPlansWhenNotPrepared(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		opts store.Options
	}{
		{"pooler", store.Options{TransactionPooler: true, TenantConns: 1, AffinityConns: -1, PrepareAfter: 1}},
		{"custom plans", store.Options{CustomPlans: true, TenantConns: 1, AffinityConns: -1, ConnMaxTenants: -1, PrepareAfter: 1}},
		{"first use", store.Options{TenantConns: 1, AffinityConns: -1, ConnMaxTenants: -1, PrepareAfter: 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Logger = storetest.Logger(t)
			db, err := store.Open(ctx, storetest.ConnString(t), &c.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			tn := mustTenant(t, db, "plans-"+strings.ReplaceAll(c.name, " ", "-")+".example")
			if got := planMode(t, db, tn, true); got != "auto" {
				t.Errorf("a marked statement ran with plan_cache_mode %q, want auto", got)
			}
			if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
				var mode string
				err := tx.QueryRow(store.GenericPlan(ctx), "SELECT current_setting('plan_cache_mode') AS in_write").Scan(&mode)
				if err == nil && mode != "auto" {
					t.Errorf("in a write, a marked statement ran with plan_cache_mode %q, want auto", mode)
				}
				return err
			}, writeRec("mode")); err != nil {
				t.Fatal(err)
			}
			if c.name == "first use" {
				if got := planMode(t, db, tn, true); got != "force_generic_plan" {
					t.Errorf("on its second use (prepared), a marked statement ran with plan_cache_mode %q", got)
				}
			}
		})
	}
}
