package mcp_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

type project struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Archived    bool   `json:"archived"`
	OpenTodos   int    `json:"open_todos"`
	Documents   int    `json:"documents"`
}

type projectList struct {
	Projects   []project `json:"projects"`
	NextCursor string    `json:"next_cursor"`
}

type document struct {
	ID        string   `json:"id"`
	Title     string   `json:"title"`
	Body      string   `json:"body"`
	Excerpt   string   `json:"excerpt"` // save_document answers with the body's start, not the body
	Tags      []string `json:"tags"`
	ProjectID *string  `json:"project_id"`
	Size      int      `json:"size"`
}

type documentList struct {
	Documents  []document `json:"documents"`
	NextCursor string     `json:"next_cursor"`
}

type searchHit struct {
	document
	Rank    float64 `json:"rank"`
	Snippet string  `json:"snippet"`
}

type searchResults struct {
	Results    []searchHit `json:"results"`
	NextCursor string      `json:"next_cursor"`
	Note       string      `json:"note"`
}

type args = map[string]any

// mustCall calls a tool that must succeed.
func mustCall(t *testing.T, cs *sdk.ClientSession, tool string, a args, out any) {
	t.Helper()
	if res := call(t, cs, tool, a, out); res.IsError {
		t.Fatalf("%s(%v): %s", tool, a, text(res))
	}
}

// badCall is a call that must fail with a tool error mentioning want.
type badCall struct {
	tool string
	args args
	want string
}

func expectFailures(t *testing.T, cs *sdk.ClientSession, calls []badCall) {
	t.Helper()
	for _, c := range calls {
		res := call(t, cs, c.tool, c.args, nil)
		msg := text(res)
		if !res.IsError || !strings.Contains(msg, c.want) {
			t.Errorf("%s(%.200v) = error %v %q; want a tool error mentioning %q", c.tool, c.args, res.IsError, msg, c.want)
		}
		if strings.Contains(strings.ToLower(msg), "sqlstate") || strings.Contains(msg, "internal error") {
			t.Errorf("%s(%.200v) leaks or fails internally: %q", c.tool, c.args, msg)
		}
	}
}

const missingID = "00000000-0000-4000-8000-000000000000"

func withArg(a args, k string, v any) args {
	b := args{}
	for k, v := range a {
		b[k] = v
	}
	b[k] = v
	return b
}

func TestWorkspaceIsolation(t *testing.T) {
	g := newGatehouse(t)
	ctx := context.Background()
	acme := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	globex := g.connect(t, g.key(t, "globex.com", tenancy.Admin), "")

	var p project
	var td store.Todo
	var d document
	mustCall(t, acme, "create_project", args{"name": "Merger", "description": "confidential"}, &p)
	mustCall(t, acme, "add_todo", args{"title": "sign the merger", "project_id": p.ID, "due_on": "2026-12-24", "priority": "urgent"}, &td)
	mustCall(t, acme, "save_document", args{"title": "Merger plan", "body": "Acquisition of globex.", "tags": []string{"secret"}, "project_id": p.ID}, &d)
	for i := range 2 {
		mustCall(t, acme, "create_project", args{"name": fmt.Sprint("filler ", i)}, nil)
		mustCall(t, acme, "add_todo", args{"title": "filler", "project_id": p.ID}, nil)
		mustCall(t, acme, "save_document", args{"title": fmt.Sprint("Acquisition ", i), "body": "acquisition", "project_id": p.ID}, nil)
	}
	addDocuments(t, g, "acme.com", 100)
	cursors := map[string]string{} // tool → acme's genuine cursor
	var pl projectList
	mustCall(t, acme, "list_projects", args{"limit": 1}, &pl)
	cursors["list_projects"] = pl.NextCursor
	var tl todoList
	mustCall(t, acme, "list_todos", args{"limit": 1, "project_id": p.ID}, &tl)
	cursors["list_todos"] = tl.NextCursor
	var dl documentList
	mustCall(t, acme, "list_documents", args{"limit": 1, "project_id": p.ID}, &dl)
	cursors["list_documents"] = dl.NextCursor
	var sr searchResults
	mustCall(t, acme, "search_documents", args{"query": "acquisition", "limit": 1}, &sr)
	cursors["search_documents"] = sr.NextCursor
	_, resourceCursor := listResources(t, acme)
	for tool, c := range cursors {
		if c == "" {
			t.Fatalf("no cursor from acme's %s", tool)
		}
	}

	// globex has data of its own, and so genuine cursors of its own.
	var own store.Todo
	mustCall(t, globex, "add_todo", args{"title": "globex todo"}, &own)
	mustCall(t, globex, "add_todo", args{"title": "globex todo 2"}, nil)
	var gl todoList
	mustCall(t, globex, "list_todos", args{"limit": 1}, &gl)

	calls := []badCall{
		{"get_project", args{"id": p.ID}, "not found"},
		{"update_project", args{"id": p.ID, "name": "pwned"}, "not found"},
		{"archive_project", args{"id": p.ID}, "not found"},
		{"add_todo", args{"title": "x", "project_id": p.ID}, "not found"},
		{"list_todos", args{"project_id": p.ID}, "not found"},
		{"update_todo", args{"id": td.ID, "title": "pwned"}, "not found"},
		{"update_todo", args{"id": own.ID, "project_id": p.ID}, "not found"},
		{"complete_todo", args{"id": td.ID}, "not found"},
		{"delete_todo", args{"id": td.ID}, "not found"},
		{"save_document", args{"id": d.ID, "body": "pwned"}, "not found"},
		{"save_document", args{"title": "x", "body": "y", "project_id": p.ID}, "not found"},
		{"get_document", args{"id": d.ID}, "not found"},
		{"delete_document", args{"id": d.ID}, "not found"},
		{"list_documents", args{"project_id": p.ID}, "not found"},
		{"search_documents", args{"query": "acquisition", "project_id": p.ID}, "not found"},
		// A cursor of this tenant's own, for another list.
		{"list_documents", args{"cursor": gl.NextCursor}, "cursor"},
		{"list_projects", args{"cursor": gl.NextCursor}, "cursor"},
	}
	for tool, c := range cursors {
		a := args{"cursor": c}
		if tool == "search_documents" {
			a["query"] = "acquisition"
		}
		payload, mac, _ := strings.Cut(c, ".")
		calls = append(calls, badCall{tool, a, "cursor"},
			badCall{tool, withArg(a, "cursor", payload), "cursor"},
			badCall{tool, withArg(a, "cursor", payload+".AAAAAAAAAAAAAAAAAAAAAA"), "cursor"},
			badCall{tool, withArg(a, "cursor", "e30."+mac), "cursor"})
	}
	expectFailures(t, globex, calls)
	for _, tt := range []struct {
		tool string
		args args
	}{
		{"list_projects", args{"include_archived": true}},
		{"list_todos", args{"status": "all"}},
		{"list_documents", args{}},
		{"search_documents", args{"query": "acquisition merger secret"}},
		{"search_documents", args{"query": "acquisition or merger or secret or filler"}},
	} {
		res := call(t, globex, tt.tool, tt.args, nil)
		if s := text(res); res.IsError || strings.Contains(strings.ToLower(s), "merger") || strings.Contains(s, "cquisition") || strings.Contains(s, "filler") {
			t.Errorf("globex %s(%v) = %q", tt.tool, tt.args, s)
		}
	}
	if _, err := globex.ReadResource(ctx, &sdk.ReadResourceParams{URI: documentURI(d.ID)}); err == nil {
		t.Error("globex read acme's document resource")
	}
	if _, err := globex.ListResources(ctx, &sdk.ListResourcesParams{Cursor: resourceCursor}); err == nil {
		t.Error("globex accepted acme's resources/list cursor")
	}

	// acme's data is as it was.
	var gp project
	mustCall(t, acme, "get_project", args{"id": p.ID}, &gp)
	if gp.Name != "Merger" || gp.Description != "confidential" || gp.Archived || gp.OpenTodos != 3 || gp.Documents != 3 {
		t.Errorf("acme's project after globex: %+v", gp)
	}
	var todos todoList
	mustCall(t, acme, "list_todos", args{"project_id": p.ID}, &todos)
	i := slices.IndexFunc(todos.Todos, func(x store.Todo) bool { return x.ID == td.ID })
	if i < 0 || todos.Todos[i].Title != "sign the merger" || todos.Todos[i].Done || *todos.Todos[i].DueOn != "2026-12-24" {
		t.Errorf("acme's todo after globex: %+v", todos.Todos)
	}
	var gd document
	mustCall(t, acme, "get_document", args{"id": d.ID}, &gd)
	if gd.Title != "Merger plan" || gd.Body != "Acquisition of globex." || !slices.Equal(gd.Tags, []string{"secret"}) || gd.ProjectID == nil {
		t.Errorf("acme's document after globex: %+v", gd)
	}
}
