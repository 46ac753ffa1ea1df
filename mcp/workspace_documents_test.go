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
	got = document{}
	mustCall(t, cs, "save_document", args{"id": d.ID, "title": "Runbook v2"}, &got)
	if got.Title != "Runbook v2" || got.Excerpt != "# Runbook\n\nRestart **it**." || got.Body != "" || !slices.Equal(got.Tags, d.Tags) || got.ProjectID == nil {
		t.Errorf("save_document(title) = %+v", got)
	}
	got = document{}
	mustCall(t, cs, "save_document", args{"id": d.ID, "tags": []string{}, "clear_project": true, "body": "new"}, &got)
	if len(got.Tags) != 0 || got.ProjectID != nil || got.Excerpt != "new" || got.Title != "Runbook v2" {
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
