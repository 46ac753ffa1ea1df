package mcp_test

import (
	"context"
	"errors"
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
	res, err := http.Get(g.ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	metrics := readBody(t, res)
	for _, series := range []string{
		`gatehouse_prompt_requests_total{method="prompts/get",outcome="denied",prompt="project_kickoff"} 2`,
		`gatehouse_prompt_requests_total{method="completion/complete",outcome="denied",prompt="project_kickoff"} 1`,
	} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics lacks %s", series)
		}
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
