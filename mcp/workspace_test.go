package mcp_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
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

func TestDocumentTools(t *testing.T) {
	g := newGatehouse(t)
	cs := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	var p project
	mustCall(t, cs, "create_project", args{"name": "Docs"}, &p)
	var d, got document
	mustCall(t, cs, "save_document", args{"title": "Runbook", "body": "# Runbook\n\nRestart **it**.", "tags": []string{" Ops ", "ops", "Infra"}, "project_id": p.ID}, &d)
	if d.ID == "" || d.Size != len("# Runbook\n\nRestart **it**.") || !slices.Equal(d.Tags, []string{"ops", "infra"}) || d.ProjectID == nil {
		t.Errorf("save_document(create) = %+v", d)
	}
	res := call(t, cs, "get_document", args{"id": d.ID}, &got)
	if got.Body != "# Runbook\n\nRestart **it**." || got.Title != "Runbook" || !strings.Contains(text(res), "Restart **it**.") {
		t.Errorf("get_document = %+v (%s)", got, text(res))
	}
	mustCall(t, cs, "save_document", args{"id": d.ID, "title": "Runbook v2"}, &got)
	if got.Title != "Runbook v2" || got.Body != d.Body || !slices.Equal(got.Tags, d.Tags) || got.ProjectID == nil {
		t.Errorf("save_document(title) = %+v", got)
	}
	got = document{}
	mustCall(t, cs, "save_document", args{"id": d.ID, "tags": []string{}, "clear_project": true, "body": "new"}, &got)
	if len(got.Tags) != 0 || got.ProjectID != nil || got.Body != "new" || got.Title != "Runbook v2" {
		t.Errorf("save_document(clear) = %+v", got)
	}
	var batch document
	for i := range 3 {
		mustCall(t, cs, "save_document", args{"title": fmt.Sprint("doc ", i), "body": "b", "tags": []string{"Batch"}}, &batch)
	}
	var seen []string
	for cursor := ""; ; {
		a := args{"limit": 2, "tag": "BATCH"}
		if cursor != "" {
			a["cursor"] = cursor
		}
		var page documentList
		mustCall(t, cs, "list_documents", a, &page)
		for _, x := range page.Documents {
			seen = append(seen, x.Title)
			if x.Body != "" {
				t.Errorf("list_documents returns bodies")
			}
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if got := strings.Join(seen, ","); got != "doc 2,doc 1,doc 0" {
		t.Errorf("list_documents(tag) pages: %s", got)
	}
	var del struct{ Deleted document }
	mustCall(t, cs, "delete_document", args{"id": d.ID}, &del)
	if del.Deleted.ID != d.ID {
		t.Errorf("delete_document = %+v", del)
	}

	manyTags := make([]string, 21)
	for i := range manyTags {
		manyTags[i] = fmt.Sprint("t", i)
	}
	expectFailures(t, cs, []badCall{
		{"save_document", args{}, "required"},
		{"save_document", args{"title": "x"}, "required"},
		{"save_document", args{"title": "", "body": "b"}, "title"},
		{"save_document", args{"title": "  ", "body": "b"}, "blank"},
		{"save_document", args{"title": strings.Repeat("x", 301), "body": "b"}, "title"},
		{"save_document", args{"title": "x", "body": ""}, "body"},
		{"save_document", args{"title": "x", "body": strings.Repeat("x", store.MaxDocumentBody+1)}, "body"},
		{"save_document", args{"title": "x", "body": strings.Repeat("é", store.MaxDocumentBody/2+1)}, "bytes"},
		{"save_document", args{"title": "x", "body": "b", "tags": manyTags}, "tags"},
		{"save_document", args{"title": "x", "body": "b", "tags": []string{strings.Repeat("x", 51)}}, "tags"},
		{"save_document", args{"title": "x", "body": "b", "tags": []string{" "}}, "blank"},
		{"save_document", args{"title": "x", "body": "b", "project_id": missingID}, "not found"},
		{"save_document", args{"title": "x", "body": "b", "clear_project": true}, "clear_project"},
		{"save_document", args{"id": missingID, "title": "x"}, "not found"},
		{"save_document", args{"id": d.ID, "title": "x"}, "not found"},
		{"save_document", args{"id": batch.ID}, "nothing to change"},
		{"get_document", args{"id": d.ID}, "not found"},
		{"get_document", args{"id": "'; DROP TABLE documents; --"}, "not found"},
		{"delete_document", args{"id": d.ID}, "not found"},
		{"list_documents", args{"project_id": missingID}, "not found"},
		{"list_documents", args{"cursor": "bogus"}, "cursor"},
		{"list_documents", args{"tag": strings.Repeat("x", 51)}, "tag"},
	})
}

// searchFixture is a small corpus: which document a query must find, and
// in which order, is known.
var searchFixture = []args{
	{"title": "Deploy checklist", "body": "Steps before a release: run the tests, tag the build.", "tags": []string{"ops"}},
	{"title": "Team notes", "body": "On Fridays we deploy the web app after lunch.\n\nThen **coffee**."},
	{"title": "Kubernetes primer", "body": "Pods, services and ingress explained.", "tags": []string{"kubernetes", "infra"}},
	{"title": "Cluster upgrade", "body": "Upgrade the nodes one by one.", "tags": []string{"kubernetes"}},
	{"title": "Weekly sync", "body": "We talked about kubernetes costs and hiring."},
	{"title": "Incident review", "body": "The deployment failed because a migration locked the todos table."},
	{"title": "Holiday calendar", "body": "The office is closed on public holidays."},
	{"title": "Recipes", "body": "Bake bread: flour, water, salt, yeast."},
}

func TestSearchDocuments(t *testing.T) {
	g := newGatehouse(t)
	cs := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	var p project
	mustCall(t, cs, "create_project", args{"name": "Incidents"}, &p)
	ids := map[string]string{} // title → id
	for _, d := range searchFixture {
		if d["title"] == "Incident review" {
			d = args{"title": d["title"], "body": d["body"], "project_id": p.ID}
		}
		var doc document
		mustCall(t, cs, "save_document", d, &doc)
		ids[doc.Title] = doc.ID
	}
	search := func(a args) searchResults {
		t.Helper()
		var r searchResults
		mustCall(t, cs, "search_documents", a, &r)
		return r
	}
	titles := func(r searchResults) []string {
		var out []string
		for _, h := range r.Results {
			out = append(out, h.Title)
		}
		return out
	}

	// Stemming: "deploying" finds deploy and deployment; the title match
	// outranks the body matches.
	r := search(args{"query": "deploying"})
	got := titles(r)
	if len(got) != 3 || got[0] != "Deploy checklist" || !slices.Contains(got, "Team notes") || !slices.Contains(got, "Incident review") {
		t.Errorf("deploying: %v; want Deploy checklist first, then Team notes and Incident review", got)
	}
	for _, h := range r.Results {
		if h.Title == "Team notes" && !strings.Contains(h.Snippet, "«deploy»") {
			t.Errorf("snippet %q lacks «deploy»", h.Snippet)
		}
		if h.Title == "Incident review" && !strings.Contains(h.Snippet, "«deployment»") {
			t.Errorf("snippet %q lacks «deployment»", h.Snippet)
		}
	}
	// Tags count: title and tag > tag > body.
	if got := strings.Join(titles(search(args{"query": "Kubernetes"})), ", "); got != "Kubernetes primer, Cluster upgrade, Weekly sync" {
		t.Errorf("kubernetes: %s", got)
	}
	for _, tt := range []struct {
		args args
		want string
	}{
		{args{"query": "deploy -fridays"}, "Deploy checklist, Incident review"},
		{args{"query": `"deploy the web app"`}, "Team notes"},
		{args{"query": "deploy", "tag": "OPS"}, "Deploy checklist"},
		{args{"query": "deploy", "project_id": p.ID}, "Incident review"},
		{args{"query": "bread or holidays"}, ""}, // sorted below
		{args{"query": "spaceship"}, ""},
	} {
		got := titles(search(tt.args))
		if tt.args["query"] == "bread or holidays" {
			slices.Sort(got)
			tt.want = "Holiday calendar, Recipes"
		}
		if s := strings.Join(got, ", "); s != tt.want {
			t.Errorf("search %v = %q, want %q", tt.args, s, tt.want)
		}
	}
	// Only stop words or punctuation: no results and a note, not an error.
	for _, q := range []string{"the and of", "!!! ??? ...", "-", `""`} {
		if r := search(args{"query": q}); len(r.Results) != 0 || r.Note == "" {
			t.Errorf("search %q = %+v; want no results and a note", q, r)
		}
	}
	// Pages follow the order of one big page.
	var all []string
	for _, h := range search(args{"query": "deploy"}).Results {
		all = append(all, h.ID)
	}
	var paged []string
	var firstCursor string
	for cursor := ""; ; {
		a := args{"query": "deploy", "limit": 1}
		if cursor != "" {
			a["cursor"] = cursor
		}
		page := search(a)
		for _, h := range page.Results {
			paged = append(paged, h.ID)
		}
		if firstCursor == "" {
			firstCursor = page.NextCursor
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if !slices.Equal(all, paged) || len(all) != 3 {
		t.Errorf("paged results %v, want %v", paged, all)
	}
	expectFailures(t, cs, []badCall{
		{"search_documents", args{}, "query"},
		{"search_documents", args{"query": ""}, "query"},
		{"search_documents", args{"query": "   "}, "must not be empty"},
		{"search_documents", args{"query": strings.Repeat("deploy ", 72)}, "query"},
		{"search_documents", args{"query": "deploy", "limit": 51}, "limit"},
		{"search_documents", args{"query": "kubernetes", "cursor": firstCursor}, "another search"},
		{"search_documents", args{"query": "deploy", "tag": "ops", "cursor": firstCursor}, "another search"},
		{"search_documents", args{"query": "deploy", "cursor": "e30.AAAAAAAAAAAAAAAAAAAAAA"}, "cursor"},
		{"search_documents", args{"query": "deploy", "project_id": missingID}, "not found"},
	})
}

func documentURI(id string) string { return "gatehouse://documents/" + id }

// addDocuments writes n documents into tenant directly (fixtures).
func addDocuments(t *testing.T, g *gatehouse, tenant string, n int) {
	t.Helper()
	ctx := context.Background()
	tn, err := g.db.FindTenantByKey(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	err = g.db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
		for i := range n {
			if _, err := store.CreateDocument(ctx, tx, store.NewDocument{Title: fmt.Sprint("filler ", i), Body: "filler", CreatedBy: "test"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// listResources pages through resources/list and returns every URI.
func listResources(t *testing.T, cs *sdk.ClientSession) (uris []string, firstCursor string) {
	t.Helper()
	params := &sdk.ListResourcesParams{}
	for {
		res, err := cs.ListResources(context.Background(), params)
		if err != nil {
			t.Fatalf("resources/list: %v", err)
		}
		if res.CacheScope != "private" {
			t.Errorf("resources/list answer not marked private: %+v", res.Cacheable)
		}
		for _, r := range res.Resources {
			uris = append(uris, r.URI)
			if r.MIMEType != "text/markdown" || r.Name == "" {
				t.Errorf("resource %+v", r)
			}
		}
		if firstCursor == "" {
			firstCursor = res.NextCursor
		}
		if params.Cursor = res.NextCursor; params.Cursor == "" {
			return uris, firstCursor
		}
	}
}

func TestDocumentResources(t *testing.T) {
	g := newGatehouse(t)
	ctx := context.Background()
	viewer := g.connect(t, g.key(t, "acme.com", tenancy.Viewer, "mcp:read"), "")
	dev := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	globex := g.connect(t, g.key(t, "globex.com", tenancy.Admin), "")
	var d document
	mustCall(t, dev, "save_document", args{"title": "Plan", "body": "# Plan\n\nSecret.", "tags": []string{"x"}}, &d)

	tmpls, err := viewer.ListResourceTemplates(ctx, nil)
	if err != nil || len(tmpls.ResourceTemplates) != 1 || tmpls.ResourceTemplates[0].URITemplate != "gatehouse://documents/{id}" ||
		tmpls.ResourceTemplates[0].MIMEType != "text/markdown" {
		t.Fatalf("resources/templates/list = %+v, %v", tmpls, err)
	}
	rr, err := viewer.ReadResource(ctx, &sdk.ReadResourceParams{URI: documentURI(d.ID)})
	if err != nil {
		t.Fatalf("resources/read: %v", err)
	}
	if len(rr.Contents) != 1 || rr.Contents[0].Text != "# Plan\n\nSecret." || rr.Contents[0].MIMEType != "text/markdown" ||
		rr.Contents[0].URI != documentURI(d.ID) || rr.CacheScope != "private" {
		t.Errorf("resources/read = %+v", rr)
	}
	if uris, _ := listResources(t, viewer); !slices.Equal(uris, []string{documentURI(d.ID)}) {
		t.Errorf("resources/list = %v", uris)
	}
	for _, uri := range []string{documentURI(missingID), documentURI("nope"), documentURI(d.ID + "/x"), "gatehouse://todos/" + d.ID} {
		if _, err := viewer.ReadResource(ctx, &sdk.ReadResourceParams{URI: uri}); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("resources/read %s: %v, want not found", uri, err)
		}
	}

	// More than a page: every document once, in pages.
	addDocuments(t, g, "acme.com", 120)
	uris, acmeCursor := listResources(t, viewer)
	slices.Sort(uris)
	if len(uris) != 121 || len(slices.Compact(uris)) != 121 || acmeCursor == "" {
		t.Errorf("resources/list over pages: %d URIs (first cursor %q), want 121", len(uris), acmeCursor)
	}

	// Another tenant reads nothing of acme's, with acme's ids or cursors.
	if _, err := globex.ReadResource(ctx, &sdk.ReadResourceParams{URI: documentURI(d.ID)}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("globex read acme's document: %v", err)
	}
	if uris, _ := listResources(t, globex); len(uris) != 0 {
		t.Errorf("globex lists %d resources", len(uris))
	}
	if _, err := globex.ListResources(ctx, &sdk.ListResourcesParams{Cursor: acmeCursor}); err == nil || !strings.Contains(err.Error(), "cursor") {
		t.Errorf("globex used acme's resources/list cursor: %v", err)
	}

	// Reads are audited like tool calls.
	var decisions []string
	for _, r := range auditRows(t, g, "acme.com") {
		if strings.HasPrefix(r.Tool, "resources/") {
			decisions = append(decisions, r.Tool+" "+r.Decision+" "+r.Reason)
		}
	}
	if len(decisions) < 6 || decisions[0] != "resources/read ALLOWED " || decisions[1] != "resources/list ALLOWED " ||
		!slices.Contains(decisions, "resources/read ERROR not_found") {
		t.Errorf("acme's resource records: %q", decisions)
	}
	decisions = nil
	for _, r := range auditRows(t, g, "globex.com") {
		if strings.HasPrefix(r.Tool, "resources/") {
			decisions = append(decisions, r.Tool+" "+r.Decision+" "+r.Reason)
			if r.ArgsDigest == "" || r.Subject == "" {
				t.Errorf("record %+v lacks its digest or subject", r)
			}
		}
	}
	if want := []string{"resources/read ERROR not_found", "resources/list ALLOWED ", "resources/list ERROR invalid_arguments"}; !slices.Equal(decisions, want) {
		t.Errorf("globex's resource records: %q, want %q", decisions, want)
	}
}

// TestWorkspaceIsolation: a second tenant, with the first tenant's ids and
// cursors (genuine and forged), reads and changes nothing of the first's,
// through every workspace tool and the resources.
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

func withArg(a args, k string, v any) args {
	b := args{}
	for k, v := range a {
		b[k] = v
	}
	b[k] = v
	return b
}
