package mcp_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func TestProjectTools(t *testing.T) {
	g := newGatehouse(t)
	cs := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	var web, ops project
	mustCall(t, cs, "create_project", args{"name": " Website ", "description": "the public site"}, &web)
	mustCall(t, cs, "create_project", args{"name": "Ops"}, &ops)
	if web.Name != "Website" || web.Description != "the public site" || web.Archived {
		t.Errorf("created %+v", web)
	}
	var td store.Todo
	mustCall(t, cs, "add_todo", args{"title": "open", "project_id": web.ID}, nil)
	mustCall(t, cs, "add_todo", args{"title": "done", "project_id": web.ID}, &td)
	mustCall(t, cs, "complete_todo", args{"id": td.ID}, nil)
	mustCall(t, cs, "save_document", args{"title": "Spec", "body": "x", "project_id": web.ID}, nil)
	var got project
	mustCall(t, cs, "get_project", args{"id": web.ID}, &got)
	if got.Name != "Website" || got.OpenTodos != 1 || got.Documents != 1 {
		t.Errorf("get_project = %+v, want 1 open todo and 1 document", got)
	}

	mustCall(t, cs, "update_project", args{"id": ops.ID, "description": "runbooks"}, &got)
	if got.Name != "Ops" || got.Description != "runbooks" {
		t.Errorf("update_project(description) = %+v", got)
	}
	mustCall(t, cs, "update_project", args{"id": ops.ID, "name": "Operations"}, &got)
	if got.Name != "Operations" || got.Description != "runbooks" {
		t.Errorf("update_project(name) = %+v", got)
	}
	for range 2 { // archiving is idempotent
		mustCall(t, cs, "archive_project", args{"id": ops.ID}, &got)
		if !got.Archived {
			t.Errorf("archive_project = %+v", got)
		}
	}
	var list projectList
	mustCall(t, cs, "list_projects", nil, &list)
	if len(list.Projects) != 1 || list.Projects[0].ID != web.ID {
		t.Errorf("list_projects = %+v, want only Website", list)
	}
	mustCall(t, cs, "list_projects", args{"include_archived": true}, &list)
	if len(list.Projects) != 2 {
		t.Errorf("list_projects(include_archived) = %+v", list)
	}
	mustCall(t, cs, "create_project", args{"name": "operations"}, nil) // the archived project freed its name

	for _, name := range []string{"delta", "Alpha", "charlie"} {
		mustCall(t, cs, "create_project", args{"name": name}, nil)
	}
	var names []string
	for cursor, pages := "", 0; ; pages++ {
		a := args{"limit": 2}
		if cursor != "" {
			a["cursor"] = cursor
		}
		var page projectList
		mustCall(t, cs, "list_projects", a, &page)
		for _, p := range page.Projects {
			names = append(names, p.Name)
		}
		if cursor = page.NextCursor; cursor == "" {
			if pages != 2 {
				t.Errorf("%d pages, want 3", pages+1)
			}
			break
		}
	}
	if got := strings.Join(names, ","); got != "Alpha,charlie,delta,operations,Website" {
		t.Errorf("paged by name: %s", got)
	}

	expectFailures(t, cs, []badCall{
		{"create_project", args{}, "name"},
		{"create_project", args{"name": ""}, "name"},
		{"create_project", args{"name": "   "}, "blank"},
		{"create_project", args{"name": strings.Repeat("x", 201)}, "name"},
		{"create_project", args{"name": "x", "description": strings.Repeat("x", 10001)}, "description"},
		{"create_project", args{"name": "WEBSITE"}, "already exists"},
		{"update_project", args{"id": web.ID}, "nothing to change"},
		{"update_project", args{"id": web.ID, "name": "ALPHA"}, "already exists"},
		{"update_project", args{"id": web.ID, "name": " "}, "blank"},
		{"update_project", args{"id": missingID, "name": "x"}, "not found"},
		{"get_project", args{"id": missingID}, "not found"},
		{"get_project", args{"id": "not-a-uuid"}, "not found"},
		{"archive_project", args{}, "id"},
		{"archive_project", args{"id": missingID}, "not found"},
		{"list_projects", args{"limit": 0}, "limit"},
		{"list_projects", args{"limit": 201}, "limit"},
		{"list_projects", args{"cursor": "bogus"}, "cursor"},
		{"add_todo", args{"title": "x", "project_id": ops.ID}, "archived"},
		{"save_document", args{"title": "x", "body": "y", "project_id": ops.ID}, "archived"},
	})
}

func TestTodoToolsWorkspace(t *testing.T) {
	g := newGatehouse(t)
	cs := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	var p project
	mustCall(t, cs, "create_project", args{"name": "Launch"}, &p)
	var a, b, c store.Todo
	mustCall(t, cs, "add_todo", args{"title": "a", "project_id": p.ID, "due_on": "2026-12-01", "priority": "urgent"}, &a)
	mustCall(t, cs, "add_todo", args{"title": "b", "due_on": "2026-11-01"}, &b)
	mustCall(t, cs, "add_todo", args{"title": "c"}, &c)
	if a.ProjectID == nil || *a.ProjectID != p.ID || a.DueOn == nil || *a.DueOn != "2026-12-01" || a.Priority != "urgent" {
		t.Errorf("add_todo = %+v", a)
	}
	if c.Priority != "normal" || c.DueOn != nil || c.ProjectID != nil {
		t.Errorf("add_todo defaults = %+v", c)
	}
	ids := func(a args) []string {
		var l todoList
		mustCall(t, cs, "list_todos", a, &l)
		var out []string
		for _, td := range l.Todos {
			out = append(out, td.Title)
		}
		return out
	}
	for _, tt := range []struct {
		args args
		want string
	}{
		{args{}, "c b a"},
		{args{"project_id": p.ID}, "a"},
		{args{"due_before": "2026-12-01"}, "b"},
		{args{"due_before": "2026-12-02"}, "b a"},
		{args{"status": "done"}, ""},
	} {
		if got := strings.Join(ids(tt.args), " "); got != tt.want {
			t.Errorf("list_todos(%v) = %q, want %q", tt.args, got, tt.want)
		}
	}

	var u store.Todo
	mustCall(t, cs, "update_todo", args{"id": a.ID, "title": "a2", "notes": "n", "priority": "low"}, &u)
	if u.Title != "a2" || u.Notes != "n" || u.Priority != "low" || u.DueOn == nil || u.ProjectID == nil || !u.UpdatedAt.After(a.UpdatedAt) {
		t.Errorf("update_todo(title, notes, priority) = %+v", u)
	}
	u = store.Todo{}
	mustCall(t, cs, "update_todo", args{"id": a.ID, "clear_due_on": true, "clear_project": true}, &u)
	if u.DueOn != nil || u.ProjectID != nil || u.Title != "a2" {
		t.Errorf("update_todo(clear) = %+v", u)
	}
	mustCall(t, cs, "update_todo", args{"id": c.ID, "project_id": p.ID, "due_on": "2027-01-31"}, &u)
	if u.ProjectID == nil || *u.ProjectID != p.ID || u.DueOn == nil || *u.DueOn != "2027-01-31" {
		t.Errorf("update_todo(set) = %+v", u)
	}
	var del struct{ Deleted store.Todo }
	mustCall(t, cs, "delete_todo", args{"id": b.ID}, &del)
	if del.Deleted.ID != b.ID {
		t.Errorf("delete_todo = %+v", del)
	}
	if got := ids(args{"status": "all"}); slices.Contains(got, "b") {
		t.Errorf("deleted todo still listed: %v", got)
	}

	expectFailures(t, cs, []badCall{
		{"add_todo", args{"title": "x", "due_on": "2026-13-01"}, "due_on"},
		{"add_todo", args{"title": "x", "due_on": "2026-02-30"}, "due_on"},
		{"add_todo", args{"title": "x", "due_on": "tomorrow"}, "due_on"},
		{"add_todo", args{"title": "x", "due_on": "0000-01-01"}, "due_on"},
		{"add_todo", args{"title": "x", "priority": "critical"}, "priority"},
		{"add_todo", args{"title": "x", "project_id": missingID}, "not found"},
		{"add_todo", args{"title": "x", "project_id": "nope"}, "not found"},
		{"list_todos", args{"due_before": "12/01/2026"}, "due_before"},
		{"list_todos", args{"project_id": missingID}, "not found"},
		{"update_todo", args{"id": a.ID}, "nothing to change"},
		{"update_todo", args{"id": a.ID, "due_on": "2026-01-01", "clear_due_on": true}, "not both"},
		{"update_todo", args{"id": a.ID, "project_id": p.ID, "clear_project": true}, "not both"},
		{"update_todo", args{"id": a.ID, "title": ""}, "title"},
		{"update_todo", args{"id": a.ID, "title": strings.Repeat("x", 501)}, "title"},
		{"update_todo", args{"id": a.ID, "notes": strings.Repeat("x", 10001)}, "notes"},
		{"update_todo", args{"id": a.ID, "priority": "HIGH"}, "priority"},
		{"update_todo", args{"id": a.ID, "due_on": "2026-1-1"}, "due_on"},
		{"update_todo", args{"id": a.ID, "due_on": nil}, "due_on"},
		{"update_todo", args{"id": a.ID, "project_id": missingID}, "project"},
		{"update_todo", args{"id": missingID, "title": "x"}, "not found"},
		{"delete_todo", args{"id": b.ID}, "not found"},
		{"delete_todo", args{}, "id"},
	})
}
