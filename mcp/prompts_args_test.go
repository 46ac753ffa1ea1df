package mcp_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

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
