package mcp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// getPrompt gets a prompt with the go-sdk client; a JSON-RPC error comes
// back as *jsonrpc.Error.
func getPrompt(t *testing.T, cs *sdk.ClientSession, name string, args map[string]string) (*sdk.GetPromptResult, *jsonrpc.Error) {
	t.Helper()
	res, err := cs.GetPrompt(context.Background(), &sdk.GetPromptParams{Name: name, Arguments: args})
	return res, rpcErr(t, err)
}

// completeArg asks for completions of a prompt's argument.
func completeArg(t *testing.T, cs *sdk.ClientSession, prompt, arg, typed string) ([]string, *jsonrpc.Error) {
	t.Helper()
	res, err := cs.Complete(context.Background(), &sdk.CompleteParams{
		Ref:      &sdk.CompleteReference{Type: "ref/prompt", Name: prompt},
		Argument: sdk.CompleteParamsArgument{Name: arg, Value: typed},
	})
	if e := rpcErr(t, err); e != nil {
		return nil, e
	}
	return res.Completion.Values, nil
}

func rpcErr(t *testing.T, err error) *jsonrpc.Error {
	t.Helper()
	if err == nil {
		return nil
	}
	var e *jsonrpc.Error
	if !errors.As(err, &e) {
		t.Fatalf("not a JSON-RPC error: %v", err)
	}
	if e.Code == jsonrpc.CodeInternalError || e.Code == 0 {
		t.Errorf("internal error (code %d): %s", e.Code, e.Message)
	}
	return e
}

func promptText(res *sdk.GetPromptResult) string {
	var b strings.Builder
	for _, m := range res.Messages {
		switch c := m.Content.(type) {
		case *sdk.TextContent:
			b.WriteString(c.Text + "\n")
		case *sdk.EmbeddedResource:
			b.WriteString("[resource " + c.Resource.URI + "]\n" + c.Resource.Text + "\n")
		}
	}
	return b.String()
}

func listedPrompts(t *testing.T, cs *sdk.ClientSession) []string {
	t.Helper()
	res, err := cs.ListPrompts(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range res.Prompts {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return names
}

// TestPromptsListedPerCaller: the server advertises prompts and
// completions; for every role × scope set, prompts/list shows exactly the
// prompts the role and scopes allow, and prompts/get by name is refused
// exactly when they do not (whatever the list showed).
func TestPromptsListedPerCaller(t *testing.T) {
	g := newGatehouse(t)
	rules := mcp.PromptNames()
	if len(rules) < 3 {
		t.Fatalf("only %d prompts", len(rules))
	}
	admin := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	caps := admin.InitializeResult().Capabilities
	if caps.Prompts == nil || caps.Completions == nil {
		t.Fatalf("capabilities %+v lack prompts or completions", caps)
	}
	if caps.Prompts.ListChanged {
		t.Errorf("a stateless server advertises prompts listChanged")
	}
	var p store.Project
	call(t, admin, "create_project", map[string]any{"name": "Apollo"}, &p)
	call(t, admin, "save_document", map[string]any{"title": "Plan", "body": "The plan.", "tags": []string{"plans"}}, nil)
	args := map[string]map[string]string{
		"project_status": {"project": "Apollo"}, "project_kickoff": {"name": "Hermes"}, "summarize_documents": {"tag": "plans"},
	}
	for _, role := range tenancy.Roles {
		for _, scopes := range scopeSets {
			if !slices.Contains(scopes, "mcp:read") {
				continue // refused before MCP (see TestAuthorizationMatrix)
			}
			cs := g.connect(t, g.key(t, "acme.com", role, scopes...), "")
			listed := listedPrompts(t, cs)
			for name, rule := range rules {
				want := role.Allows(rule.Role) && slices.Contains(scopes, rule.Scope)
				if shown := slices.Contains(listed, name); shown != want {
					t.Errorf("%s %v: prompts/list shows %s = %v, want %v", role, scopes, name, shown, want)
				}
				res, e := getPrompt(t, cs, name, args[name])
				switch {
				case want && e != nil:
					t.Errorf("%s %v: %s refused: %s", role, scopes, name, e.Message)
				case want && len(res.Messages) == 0:
					t.Errorf("%s %v: %s has no messages", role, scopes, name)
				case !want && (e == nil || !strings.HasPrefix(e.Message, "ACCESS DENIED")):
					t.Errorf("%s %v: %s not refused: %v", role, scopes, name, e)
				}
			}
		}
	}
}

// TestPromptDenials: a refusal says what is missing (role, scope) and is
// audited as DENIED with the prompt's name; completion is refused alike.
func TestPromptDenials(t *testing.T) {
	g := newGatehouse(t)
	viewer := g.connect(t, g.key(t, "acme.com", tenancy.Viewer, "mcp:read"), "")
	readOnlyDev := g.connect(t, g.key(t, "acme.com", tenancy.Developer, "mcp:read"), "")
	_, e := getPrompt(t, viewer, "project_kickoff", map[string]string{"name": "X"})
	if e == nil || !strings.Contains(e.Message, "role developer or higher (your role is viewer)") {
		t.Errorf("viewer's kick-off: %v", e)
	}
	_, e = getPrompt(t, readOnlyDev, "project_kickoff", map[string]string{"name": "X"})
	if e == nil || !strings.Contains(e.Message, "scope mcp:write") || strings.Contains(e.Message, "role developer") {
		t.Errorf("read-only developer's kick-off: %v", e)
	}
	if _, e := completeArg(t, viewer, "project_kickoff", "name", "A"); e == nil || !strings.HasPrefix(e.Message, "ACCESS DENIED") {
		t.Errorf("viewer's completion for the kick-off: %v", e)
	}
	var denied []string
	for _, r := range auditRows(t, g, "acme.com") {
		if r.Decision == store.Denied {
			denied = append(denied, r.Tool+" "+r.Reason)
		}
	}
	want := []string{
		"prompts/get:project_kickoff needs role developer and scope mcp:write; has role viewer",
		"prompts/get:project_kickoff needs role developer and scope mcp:write; has role developer",
		"completion/complete:project_kickoff needs role developer and scope mcp:write; has role viewer",
	}
	if !slices.Equal(denied, want) {
		t.Errorf("denials audited as\n%q\nwant\n%q", denied, want)
	}
}

// TestPromptPolicyOverride: the policy file's prompts section changes who
// may get a prompt, and names only prompts that exist.
func TestPromptPolicyOverride(t *testing.T) {
	pol, err := mcp.LoadToolPolicy(strings.NewReader("prompts:\n  weekly_review: {role: admin, scope: mcp:admin}\n"))
	if err != nil {
		t.Fatal(err)
	}
	g := newGatehouse(t, func(s *setup) { s.toolPolicy = pol })
	viewer := g.connect(t, g.key(t, "acme.com", tenancy.Viewer, "mcp:read"), "")
	if slices.Contains(listedPrompts(t, viewer), "weekly_review") {
		t.Errorf("the policy's weekly_review is listed for a viewer")
	}
	if _, e := getPrompt(t, viewer, "weekly_review", nil); e == nil || !strings.Contains(e.Message, "role admin") {
		t.Errorf("viewer's weekly review under the policy: %v", e)
	}
	admin := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	if _, e := getPrompt(t, admin, "weekly_review", nil); e != nil {
		t.Errorf("admin's weekly review under the policy: %v", e)
	}
	for _, bad := range []string{"prompts:\n  weekly_reviews: {role: viewer, scope: mcp:read}\n", "prompts:\n  weekly_review: {role: root, scope: mcp:read}\n", "prompt:\n  weekly_review: {role: viewer, scope: mcp:read}\n"} {
		if _, err := mcp.LoadToolPolicy(strings.NewReader(bad)); err == nil {
			t.Errorf("policy %q accepted", bad)
		}
	}
	if got := mcp.RoleScopes(tenancy.Viewer, pol); slices.Contains(got, "mcp:admin") {
		t.Errorf("a viewer's scopes %v include mcp:admin", got)
	}
}

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

// TestPromptCompletion: project names and tags complete from the caller's
// tenant only, prefix matches first; arguments without suggestions get
// none; unknown prompts and arguments are -32602.
func TestPromptCompletion(t *testing.T) {
	g := newGatehouse(t)
	a := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	b := g.connect(t, g.key(t, "globex.com", tenancy.Developer), "")
	for _, name := range []string{"Apollo", "apple pie", "Zeta Apollo", "Gemini"} {
		call(t, a, "create_project", map[string]any{"name": name}, nil)
	}
	var archived store.Project
	call(t, a, "create_project", map[string]any{"name": "Apex (old)"}, &archived)
	call(t, a, "archive_project", map[string]any{"id": archived.ID}, nil)
	call(t, b, "create_project", map[string]any{"name": "Bravo"}, nil)
	call(t, a, "save_document", map[string]any{"title": "t", "body": "b", "tags": []string{"roadmap", "road-trip"}}, nil)
	call(t, a, "save_document", map[string]any{"title": "u", "body": "b", "tags": []string{"roadmap"}}, nil)
	call(t, b, "save_document", map[string]any{"title": "v", "body": "b", "tags": []string{"roadkill"}}, nil)

	cases := []struct {
		cs               *sdk.ClientSession
		prompt, arg, typ string
		want             []string
	}{
		{a, "weekly_review", "project", "ap", []string{"Apollo", "apple pie", "Zeta Apollo"}},
		{a, "weekly_review", "project", "", []string{"Apollo", "apple pie", "Gemini", "Zeta Apollo"}},
		{a, "project_status", "project", "GEM", []string{"Gemini"}},
		{b, "weekly_review", "project", "", []string{"Bravo"}},
		{b, "weekly_review", "project", "apo", []string{}},
		{a, "summarize_documents", "tag", "ROAD", []string{"roadmap", "road-trip"}},
		{b, "summarize_documents", "tag", "road", []string{"roadkill"}},
		{a, "summarize_documents", "tag", "%", []string{}},
		{a, "project_kickoff", "name", "Ap", []string{}},
	}
	for _, c := range cases {
		got, e := completeArg(t, c.cs, c.prompt, c.arg, c.typ)
		if e != nil {
			t.Errorf("%s.%s %q: %s", c.prompt, c.arg, c.typ, e.Message)
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s.%s %q completes to %q, want %q", c.prompt, c.arg, c.typ, got, c.want)
		}
	}
	for _, bad := range [][2]string{{"no_such_prompt", "project"}, {"weekly_review", "tag"}} {
		if _, e := completeArg(t, a, bad[0], bad[1], "x"); e == nil || e.Code != jsonrpc.CodeInvalidParams {
			t.Errorf("completing %s.%s: %v", bad[0], bad[1], e)
		}
	}
	// Completion of a resource template's argument: none, no error.
	res, err := a.Complete(context.Background(), &sdk.CompleteParams{
		Ref: &sdk.CompleteReference{Type: "ref/resource", URI: "gatehouse://documents/{id}"}, Argument: sdk.CompleteParamsArgument{Name: "id", Value: "1"}})
	if err != nil || len(res.Completion.Values) != 0 {
		t.Errorf("resource completion: %v %+v", err, res)
	}
	var audited int
	for _, r := range auditRows(t, g, "acme.com") {
		if strings.HasPrefix(r.Tool, "completion/complete:") {
			audited++
		}
	}
	// acme.com's six completions and its unknown argument; an unknown
	// prompt has no record (there is nothing to decide), nor a resource.
	if audited != 7 {
		t.Errorf("%d completion records in acme.com's audit log, want 7", audited)
	}
}

// TestPromptArgumentsRefused: every kind of bad argument is -32602 naming
// the argument, never an internal error, and audited as DENIED.
func TestPromptArgumentsRefused(t *testing.T) {
	g := newGatehouse(t)
	dev := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	cases := []struct {
		prompt string
		args   map[string]string
		want   string
	}{
		{"project_kickoff", nil, `argument "name" is required`},
		{"project_kickoff", map[string]string{"name": "   "}, `argument "name" is required`},
		{"project_kickoff", map[string]string{"name": "X", "owner": "me"}, `unknown argument "owner"`},
		{"project_kickoff", map[string]string{"name": strings.Repeat("é", 201)}, `argument "name" has 201 characters; the limit is 200`},
		{"project_kickoff", map[string]string{"name": "a\x00b"}, `argument "name" contains the control character U+0000`},
		{"weekly_review", map[string]string{"project": "x\x1b[31m"}, `argument "project" contains the control character U+001B`},
		{"weekly_review", map[string]string{"project": "x\u0085y"}, `argument "project" contains the control character U+0085`},
		{"weekly_review", map[string]string{"project": "no such project"}, `argument "project": acme.com has no active project named "no such project"`},
		{"summarize_documents", map[string]string{"tag": strings.Repeat("t", 51)}, `argument "tag" has 51 characters; the limit is 50`},
	}
	for _, c := range cases {
		_, e := getPrompt(t, dev, c.prompt, c.args)
		if e == nil || e.Code != jsonrpc.CodeInvalidParams || !strings.Contains(e.Message, c.want) {
			t.Errorf("%s %q: %v, want -32602 with %q", c.prompt, c.args, e, c.want)
		}
	}
	var denied int
	for _, r := range auditRows(t, g, "acme.com") {
		if strings.HasPrefix(r.Tool, "prompts/get:") && r.Decision == store.Denied && strings.Contains(r.Reason, "argument") {
			denied++
		}
	}
	if denied != len(cases) {
		t.Errorf("%d DENIED argument records, want %d", denied, len(cases))
	}
}

// TestPromptOddBytes: arguments with odd bytes — invalid UTF-8, lone
// surrogate escapes, NUL, non-string values, odd names — sent raw to
// prompts/get and completion/complete are answered with a JSON-RPC error
// or a result, never an internal error or a 5xx.
func TestPromptOddBytes(t *testing.T) {
	g := newGatehouse(t)
	auth := "Bearer " + g.key(t, "acme.com", tenancy.Developer)
	values := []string{`"\u0000"`, `"\ud800"`, `"\udc00x"`, "\"\xff\xfe\"", "\"a\xc3\"", `"\u202e"`, `"%_\\"`, `"' OR 1=1 --"`, `42`, `null`, `["x"]`, `{"a":1}`, `""`}
	names := []string{`"project"`, `"\u0000"`, "\"\xff\"", `"\ud800"`, `""`}
	var bodies []string
	for _, v := range values {
		for _, n := range names {
			bodies = append(bodies,
				`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"weekly_review","arguments":{`+n+`:`+v+`}}}`,
				`{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"weekly_review"},"argument":{"name":`+n+`,"value":`+v+`}}}`)
		}
		bodies = append(bodies,
			`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":`+v+`}}`,
			`{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":`+v+`},"argument":{"name":"project","value":"a"}}}`)
	}
	for _, body := range bodies {
		res := post(t, g.url, auth, body)
		got := readBody(t, res)
		if res.StatusCode >= 500 || strings.Contains(got, "-32603") || strings.Contains(got, `"code":0`) || strings.Contains(got, "internal error") {
			t.Errorf("%q: %d %s", body, res.StatusCode, got)
		}
	}
}

// TestPromptsConcurrentTenants: prompts/get and completion/complete from
// two tenants, released together, each see only their own tenant's data.
func TestPromptsConcurrentTenants(t *testing.T) {
	g := newGatehouse(t)
	tenants := []string{"acme.com", "globex.com"}
	sessions := map[string][]*sdk.ClientSession{}
	for _, tn := range tenants {
		key := g.key(t, tn, tenancy.Developer)
		cs := g.connect(t, key, "")
		call(t, cs, "create_project", map[string]any{"name": "Plan of " + tn}, nil)
		call(t, cs, "add_todo", map[string]any{"title": "Todo of " + tn}, nil)
		for range 4 {
			sessions[tn] = append(sessions[tn], g.connect(t, key, ""))
		}
	}
	start := make(chan struct{})
	errs := make(chan string, 64)
	var wg sync.WaitGroup
	for _, tn := range tenants {
		for _, cs := range sessions[tn] {
			wg.Go(func() {
				<-start
				for range 3 {
					res, err := cs.GetPrompt(context.Background(), &sdk.GetPromptParams{Name: "weekly_review"})
					if err != nil {
						errs <- tn + ": " + err.Error()
						continue
					}
					if text := promptText(res); !strings.Contains(text, "Todo of "+tn) || strings.Count(text, "Todo of ") != 1 {
						errs <- tn + " rendered:\n" + text
					}
					done, err := cs.Complete(context.Background(), &sdk.CompleteParams{Ref: &sdk.CompleteReference{Type: "ref/prompt", Name: "weekly_review"},
						Argument: sdk.CompleteParamsArgument{Name: "project", Value: "plan"}})
					if err != nil || !slices.Equal(done.Completion.Values, []string{"Plan of " + tn}) {
						errs <- fmt.Sprintf("%s completes to %+v (%v)", tn, done, err)
					}
				}
			})
		}
	}
	close(start)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestPromptsAdmitted: prompts/get and completion/complete take a slot
// among the calls in flight like tools/call (refused 429, -32031, at the
// cap); prompts/list, which reads nothing, is never refused.
func TestPromptsAdmitted(t *testing.T) {
	g := newGatehouse(t, func(s *setup) {
		s.admission = &mcp.Admission{Total: 8, Tenant: 1, Principal: 1, TenantQueue: 0, Wait: 0}
	})
	a, a2 := g.key(t, "a.example", tenancy.Developer), g.key(t, "a.example", tenancy.Developer)
	client := &http.Client{}
	var wg sync.WaitGroup
	wg.Go(func() {
		for { // until admitted: the requests below may hold the slot for a moment
			got := rawCall(client, g.url, a, "query", `{"sql":"select pg_sleep(1.5)"}`, 1)
			if got.status != http.StatusTooManyRequests {
				return
			}
		}
	})
	defer wg.Wait()
	send := func(body string) answer {
		req, _ := http.NewRequest(http.MethodPost, g.url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+a2)
		res, err := client.Do(req)
		if err != nil {
			return answer{err: err}
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return answer{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), body: string(b), err: err}
	}
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":7,"method":"prompts/get","params":{"name":"weekly_review"}}`,
		`{"jsonrpc":"2.0","id":7,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"weekly_review"},"argument":{"name":"project","value":""}}}`,
	} {
		var got answer
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if got = send(body); got.status == http.StatusTooManyRequests {
				break
			}
		}
		if got.status != http.StatusTooManyRequests || got.retryAfter != "1" || !strings.Contains(got.body, `"code":-32031`) || !strings.Contains(got.body, `"id":7`) {
			t.Errorf("%s at the cap: %d %q %s", body, got.status, got.retryAfter, got.body)
		}
	}
	if got := send(`{"jsonrpc":"2.0","id":2,"method":"prompts/list"}`); got.status != http.StatusOK || !strings.Contains(got.body, "weekly_review") {
		t.Errorf("prompts/list at the cap: %d %s", got.status, got.body)
	}
}

// TestPromptStepUp: a token from an OAuth sign-in lacking the scope of a
// prompt its role allows sees the prompt listed, and prompts/get answers
// HTTP 403 insufficient_scope naming the scopes held plus the one needed
// (audited); an API key with the same shortfall gets the readable denial.
func TestPromptStepUp(t *testing.T) {
	sso := newCorpSSO(t)
	g := newGatehouse(t, withSignIn(sso.up))
	c := g.register(t, loopbackRedirect)
	_, admin := c.signInFor(newBrowser(t, g.ts.URL), "mcp:read mcp:write") // alice, acme.com's first member: admin
	_, readOnly := c.signInFor(newBrowser(t, g.ts.URL), "mcp:read")
	get := `{"jsonrpc":"2.0","id":7,"method":"prompts/get","params":{"name":"project_kickoff","arguments":{"name":"Hermes"}}}`
	list := `{"jsonrpc":"2.0","id":1,"method":"prompts/list"}`

	if _, body := g.mcpCall(t, readOnly.AccessToken, list); !strings.Contains(body, "project_kickoff") {
		t.Errorf("a signed-in admin holding mcp:read does not see project_kickoff: %s", body)
	}
	res, body := g.mcpCall(t, readOnly.AccessToken, get)
	challenge := res.Header.Get("WWW-Authenticate")
	if res.StatusCode != http.StatusForbidden || !strings.Contains(challenge, `error="insufficient_scope"`) || !strings.Contains(challenge, `scope="mcp:read mcp:write"`) ||
		!strings.Contains(body, `"id":7`) || !strings.Contains(body, "the prompt project_kickoff needs the scope mcp:write") {
		t.Errorf("prompts/get short of mcp:write: %d %q %s", res.StatusCode, challenge, body)
	}
	if res, body := g.mcpCall(t, admin.AccessToken, get); res.StatusCode != http.StatusOK || !strings.Contains(body, "create_project") {
		t.Errorf("prompts/get with mcp:write: %d %s", res.StatusCode, body)
	}
	key := g.key(t, "acme.com", tenancy.Admin, "mcp:read")
	if _, body := g.mcpCall(t, key, list); strings.Contains(body, "project_kickoff") {
		t.Errorf("an API key holding mcp:read sees project_kickoff: %s", body)
	}
	if res, body := g.mcpCall(t, key, get); res.StatusCode != http.StatusOK || !strings.Contains(body, "ACCESS DENIED") {
		t.Errorf("an API key short of mcp:write: %d %s", res.StatusCode, body)
	}
	var challenged int
	for _, r := range auditRows(t, g, "acme.com") {
		if r.Tool == "prompts/get:project_kickoff" && r.Decision == store.Denied && strings.Contains(r.Reason, "step-up challenge sent") {
			challenged++
		}
	}
	if challenged != 1 {
		t.Errorf("%d step-up records for project_kickoff, want 1", challenged)
	}
}
