package mcp_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// scopeSets are the non-empty subsets of the Gatehouse scopes (an empty set
// is not a credential anyone can hold: it would get the default scopes).
var scopeSets = [][]string{
	{"mcp:read"}, {"mcp:write"}, {"mcp:admin"},
	{"mcp:read", "mcp:write"}, {"mcp:read", "mcp:admin"}, {"mcp:write", "mcp:admin"},
	{"mcp:read", "mcp:write", "mcp:admin"},
}

// TestAuthorizationMatrix: for every tool × role × scope set, the tool is
// listed exactly when both the role and the scopes allow it, and a call by
// name is refused exactly then, whatever tools/list showed.
func TestAuthorizationMatrix(t *testing.T) {
	g := newGatehouse(t)
	rules := mcp.ToolNames()
	ctx := context.Background()
	for _, role := range tenancy.Roles {
		for _, scopes := range scopeSets {
			key := g.key(t, "acme.com", role, scopes...)
			if !slices.Contains(scopes, "mcp:read") {
				// Without mcp:read nothing is allowed: refused before MCP (step-up).
				if res := post(t, g.url, "Bearer "+key, addTodoCall); res.StatusCode != 403 {
					t.Errorf("%s %v: status %d, want 403", role, scopes, res.StatusCode)
				}
				continue
			}
			cs := g.connect(t, key, "")
			listed, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			for name, rule := range rules {
				want := role.Allows(rule.Role) && slices.Contains(scopes, rule.Scope)
				shown := slices.ContainsFunc(listed.Tools, func(tl *sdk.Tool) bool { return tl.Name == name })
				if shown != want {
					t.Errorf("%s %v: tools/list shows %s = %v, want %v", role, scopes, name, shown, want)
				}
				res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: map[string]any{}})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				denied := res.IsError && strings.HasPrefix(text(res), "ACCESS DENIED")
				if denied == want {
					t.Errorf("%s %v: calling %s by name: denied = %v (%q)", role, scopes, name, denied, text(res))
				}
			}
		}
	}
}

func TestToolsListIsPrivateToTheCaller(t *testing.T) {
	g := newGatehouse(t)
	res := post(t, g.url, "Bearer "+g.key(t, "acme.com", tenancy.Viewer, "mcp:read"), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	body := readBody(t, res)
	if !strings.Contains(body, `"cacheScope":"private"`) {
		t.Errorf("tools/list answer not marked private: %s", body)
	}
	if strings.Contains(body, "add_todo") {
		t.Errorf("a viewer sees add_todo: %s", body)
	}
}

func TestToolPolicyFile(t *testing.T) {
	pol, err := mcp.LoadToolPolicy(strings.NewReader("tools:\n  add_todo: {role: viewer, scope: mcp:write}\n"))
	if err != nil {
		t.Fatal(err)
	}
	g := newGatehouse(t, func(s *setup) { s.toolPolicy = pol })
	viewer := g.connect(t, g.key(t, "acme.com", tenancy.Viewer, "mcp:read", "mcp:write"), "")
	if res := call(t, viewer, "add_todo", map[string]any{"title": "allowed by policy"}, nil); res.IsError {
		t.Errorf("viewer add_todo under the policy: %s", text(res))
	}
	_, err = mcp.LoadToolPolicy(strings.NewReader("tools:\n  add_todos: {role: viewer, scope: mcp:write}\n  whoami: {role: root, scope: mcp:everything}\n  list_todos: {role: viewer, scope: mcp:read, note: x}\n"))
	for _, want := range []string{"add_todos: no such tool", "unknown role \"root\"", "mcp:everything", "note"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadToolPolicy error %v does not mention %q", err, want)
		}
	}
	// A missing or mistyped field is named as such, not as an empty value.
	_, err = mcp.LoadToolPolicy(strings.NewReader("tools:\n  add_todo: {role: viewer}\n  whoami: {scope: mcp:read}\n  list_todos: {role: 3, scope: [mcp:read]}\n"))
	for _, want := range []string{"tools.add_todo.scope: missing", "tools.whoami.role: missing", "tools.list_todos.role: want a role name", "tools.list_todos.scope: want a scope name"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadToolPolicy error %v does not mention %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), `""`) {
		t.Errorf("LoadToolPolicy reports a missing field as an empty value: %v", err)
	}
}

// TestStepUpWithoutReadScope: a credential that carries no mcp:read can do
// nothing here; the answer is HTTP 403 insufficient_scope naming the scope,
// so an MCP client can ask the user for more (step-up).
func TestStepUpWithoutReadScope(t *testing.T) {
	g := newGatehouse(t)
	res := post(t, g.url, "Bearer "+g.key(t, "acme.com", tenancy.Admin, "mcp:write"), addTodoCall)
	h := res.Header.Get("WWW-Authenticate")
	if res.StatusCode != 403 || !strings.Contains(h, `error="insufficient_scope"`) || !strings.Contains(h, `scope="mcp:read mcp:write"`) || !strings.Contains(h, "resource_metadata=") {
		t.Errorf("status %d, WWW-Authenticate %q", res.StatusCode, h)
	}
}
