package mcp_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestWeeklyReview renders the tenant's real open todos, overdue first,
// optionally of one project, and audits the read with the prompt's name.
func TestWeeklyReview(t *testing.T) {
	g := newGatehouse(t)
	dev := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	var apollo store.Project
	call(t, dev, "create_project", map[string]any{"name": "Apollo"}, &apollo)
	day := time.Now().UTC()
	past, soon := day.AddDate(0, 0, -3).Format(time.DateOnly), day.AddDate(0, 0, 2).Format(time.DateOnly)
	call(t, dev, "add_todo", map[string]any{"title": "Late launch checklist", "due_on": past, "priority": "urgent", "project_id": apollo.ID}, nil)
	call(t, dev, "add_todo", map[string]any{"title": "Book the venue", "due_on": soon}, nil)
	var done store.Todo
	call(t, dev, "add_todo", map[string]any{"title": "Already finished"}, &done)
	call(t, dev, "complete_todo", map[string]any{"id": done.ID}, nil)

	res, e := getPrompt(t, dev, "weekly_review", nil)
	if e != nil {
		t.Fatal(e.Message)
	}
	text := promptText(res)
	overdue, week := strings.Index(text, "## Overdue (1)"), strings.Index(text, "## Due in the next 7 days (1)")
	late, venue := strings.Index(text, "Late launch checklist"), strings.Index(text, "Book the venue")
	if overdue < 0 || week < 0 || !(overdue < late && late < week && week < venue) || strings.Contains(text, "Already finished") {
		t.Errorf("weekly review:\n%s", text)
	}
	if !strings.Contains(text, "3 days overdue") || !strings.Contains(res.Description, "2 open todos (1 overdue)") {
		t.Errorf("weekly review: %q\n%s", res.Description, text)
	}
	// By project name, in any case, or by id: only that project's todos.
	for _, ref := range []string{"apollo", apollo.ID} {
		res, e = getPrompt(t, dev, "weekly_review", map[string]string{"project": ref})
		if e != nil {
			t.Fatal(e.Message)
		}
		if text := promptText(res); !strings.Contains(text, "Late launch checklist") || strings.Contains(text, "Book the venue") {
			t.Errorf("weekly review of %s:\n%s", ref, text)
		}
	}
	// An optional argument sent empty is absent.
	if _, e := getPrompt(t, dev, "weekly_review", map[string]string{"project": ""}); e != nil {
		t.Errorf("empty optional argument: %s", e.Message)
	}
	// Another tenant's review shows none of this.
	other := g.connect(t, g.key(t, "globex.com", tenancy.Developer), "")
	if res, e := getPrompt(t, other, "weekly_review", nil); e != nil || strings.Contains(promptText(res), "Late launch") {
		t.Errorf("another tenant's review: %v\n%s", e, promptText(res))
	}
	if _, e := getPrompt(t, other, "weekly_review", map[string]string{"project": "Apollo"}); e == nil || e.Code != jsonrpc.CodeInvalidParams ||
		!strings.Contains(e.Message, `"project"`) {
		t.Errorf("another tenant's project by name: %v", e)
	}
	var allowed int
	for _, r := range auditRows(t, g, "acme.com") {
		if r.Tool == "prompts/get:weekly_review" && r.Decision == store.Allowed && r.ArgsDigest != "" {
			allowed++
		}
	}
	if allowed != 4 {
		t.Errorf("%d ALLOWED prompts/get:weekly_review records with a digest, want 4", allowed)
	}
}

// TestProjectStatusAndKickoff: the status report carries the project's
// todos and documents; the kick-off creates nothing and names the tools,
// noticing a project that exists already.
func TestProjectStatusAndKickoff(t *testing.T) {
	g := newGatehouse(t)
	dev := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	var apollo store.Project
	call(t, dev, "create_project", map[string]any{"name": "Apollo", "description": "Moon landing"}, &apollo)
	call(t, dev, "add_todo", map[string]any{"title": "Build the rocket", "project_id": apollo.ID}, nil)
	call(t, dev, "save_document", map[string]any{"title": "Flight plan", "body": "Go.", "project_id": apollo.ID}, nil)
	res, e := getPrompt(t, dev, "project_status", map[string]string{"project": "Apollo"})
	if e != nil {
		t.Fatal(e.Message)
	}
	if text := promptText(res); !strings.Contains(text, "Moon landing") || !strings.Contains(text, "Build the rocket") || !strings.Contains(text, "Flight plan") {
		t.Errorf("project status:\n%s", text)
	}

	res, e = getPrompt(t, dev, "project_kickoff", map[string]string{"name": "Hermes", "description": "Deliver messages fast"})
	if e != nil {
		t.Fatal(e.Message)
	}
	text := promptText(res)
	for _, want := range []string{`"Hermes"`, "Deliver messages fast", "create_project", "add_todo", "save_document"} {
		if !strings.Contains(text, want) {
			t.Errorf("kick-off lacks %q:\n%s", want, text)
		}
	}
	var list struct{ Projects []store.Project }
	call(t, dev, "list_projects", map[string]any{}, &list)
	if len(list.Projects) != 1 {
		t.Errorf("the kick-off prompt created something: %+v", list.Projects)
	}
	res, e = getPrompt(t, dev, "project_kickoff", map[string]string{"name": "APOLLO"})
	if e != nil {
		t.Fatal(e.Message)
	}
	if text := promptText(res); !strings.Contains(text, "exists already (id "+apollo.ID) {
		t.Errorf("kick-off of an existing project:\n%s", text)
	}
}

// TestSummarizeDocuments embeds the documents of a tag as resources,
// leaves out what exceeds the budget, and refuses a tag nobody uses.
func TestSummarizeDocuments(t *testing.T) {
	g := newGatehouse(t)
	dev := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	var a, b store.Document
	call(t, dev, "save_document", map[string]any{"title": "Minutes 1", "body": "We chose Go.", "tags": []string{"Minutes"}}, &a)
	call(t, dev, "save_document", map[string]any{"title": "Minutes 2", "body": strings.Repeat("long ", 12000), "tags": []string{"minutes", "q4"}}, &b)
	call(t, dev, "save_document", map[string]any{"title": "Elsewhere", "body": "Not this one.", "tags": []string{"other"}}, nil)
	res, e := getPrompt(t, dev, "summarize_documents", map[string]string{"tag": "MINUTES"})
	if e != nil {
		t.Fatal(e.Message)
	}
	var uris []string
	for _, m := range res.Messages {
		if r, ok := m.Content.(*sdk.EmbeddedResource); ok {
			uris = append(uris, r.Resource.URI)
			if r.Resource.MIMEType != "text/markdown" {
				t.Errorf("embedded %s as %s", r.Resource.URI, r.Resource.MIMEType)
			}
		}
	}
	slices.Sort(uris)
	want := []string{"gatehouse://documents/" + a.ID, "gatehouse://documents/" + b.ID}
	slices.Sort(want)
	text := promptText(res)
	if !slices.Equal(uris, want) || strings.Contains(text, "Not this one") || !strings.Contains(text, "We chose Go.") {
		t.Errorf("summary embeds %v, want %v:\n%.600s", uris, want, text)
	}
	if !strings.Contains(text, "[cut: this is the first 50000 characters of 60000 bytes]") {
		t.Errorf("a long body is not marked as cut short")
	}
	// Five bodies of 50,000 characters (as cut) fill the 200,000 budget
	// after four: the oldest is named, not embedded.
	for i := range 5 {
		call(t, dev, "save_document", map[string]any{"title": fmt.Sprintf("Big %d", i), "body": strings.Repeat("x", 60000), "tags": []string{"big"}}, nil)
	}
	res, e = getPrompt(t, dev, "summarize_documents", map[string]string{"tag": "big"})
	if e != nil {
		t.Fatal(e.Message)
	}
	intro := res.Messages[0].Content.(*sdk.TextContent).Text
	if len(res.Messages) != 5 || !strings.Contains(intro, "These 4 follow") || !strings.Contains(intro, "Not embedded") ||
		strings.Index(intro, `"Big 0"`) < strings.Index(intro, "Not embedded") {
		t.Errorf("over the budget: %d messages, intro:\n%s", len(res.Messages), intro)
	}
	if _, e := getPrompt(t, dev, "summarize_documents", map[string]string{"tag": "nothing"}); e == nil || e.Code != jsonrpc.CodeInvalidParams || !strings.Contains(e.Message, `"tag"`) {
		t.Errorf("unused tag: %v", e)
	}
}

// TestWeeklyReviewKeepsOldOverdueTodos: past the prompt's 200 todos, the
// overdue ones are kept however old, and the prompt says it is cut short.
func TestWeeklyReviewKeepsOldOverdueTodos(t *testing.T) {
	g := newGatehouse(t)
	dev := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	call(t, dev, "add_todo", map[string]any{"title": "Ancient overdue", "due_on": "2020-01-31"}, nil)
	tn, err := g.db.FindTenantByKey(context.Background(), "acme.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.db.Pool().Exec(context.Background(), "INSERT INTO "+pgx.Identifier{tn.Schema, "todos"}.Sanitize()+
		" (title, created_by, created_at) SELECT 'Newer '||i, 'test', clock_timestamp() + i * interval '1 ms' FROM generate_series(1, 210) i"); err != nil {
		t.Fatal(err)
	}
	res, e := getPrompt(t, dev, "weekly_review", nil)
	if e != nil {
		t.Fatal(e.Message)
	}
	text := promptText(res)
	if !strings.Contains(text, "## Overdue (1)") || !strings.Contains(text, "Ancient overdue") || !strings.Contains(text, "Only 200 open todos are listed") ||
		!strings.Contains(text, "Newer 210") || strings.Contains(text, "Newer 11 ") {
		t.Errorf("weekly review past 200 todos:\n%.1500s", text)
	}
}

// TestPromptsAtEveryRevision: prompts are listed, rendered (with an
// embedded resource) and completed at each protocol revision Gatehouse
// serves.
func TestPromptsAtEveryRevision(t *testing.T) {
	g := newGatehouse(t)
	key := g.key(t, "acme.com", tenancy.Developer)
	setup := g.connect(t, key, "")
	call(t, setup, "create_project", map[string]any{"name": "Apollo"}, nil)
	call(t, setup, "save_document", map[string]any{"title": "Plan", "body": "The plan.", "tags": []string{"plans"}}, nil)
	for _, version := range []string{"2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"} {
		t.Run(version, func(t *testing.T) {
			cs := g.connect(t, key, version)
			if got := cs.InitializeResult().ProtocolVersion; got != version {
				t.Errorf("negotiated protocol %s, want %s", got, version)
			}
			if got := listedPrompts(t, cs); len(got) != len(mcp.PromptNames()) {
				t.Errorf("prompts/list: %v", got)
			}
			res, e := getPrompt(t, cs, "summarize_documents", map[string]string{"tag": "plans"})
			if e != nil || !strings.Contains(promptText(res), "The plan.") {
				t.Errorf("summarize_documents: %v %+v", e, res)
			}
			if got, e := completeArg(t, cs, "weekly_review", "project", "ap"); e != nil || !slices.Equal(got, []string{"Apollo"}) {
				t.Errorf("completion: %v %v", got, e)
			}
		})
	}
}
