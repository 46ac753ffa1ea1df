package mcp_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

type todoList struct {
	Todos      []store.Todo `json:"todos"`
	NextCursor string       `json:"next_cursor"`
}

// TestToolsWithGoSDKClient drives every tool through the real handler with
// the official client, at each protocol revision Gatehouse serves.
func TestToolsWithGoSDKClient(t *testing.T) {
	g := newGatehouse(t)
	key := g.key(t, "acme.com", tenancy.Admin)
	for _, version := range []string{"2026-07-28", "2025-11-25", "2025-06-18"} {
		t.Run(version, func(t *testing.T) {
			cs := g.connect(t, key, version)
			if got := cs.InitializeResult().ProtocolVersion; got != version {
				t.Errorf("negotiated protocol %s, want %s", got, version)
			}
			tools, err := cs.ListTools(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tool := range tools.Tools {
				names = append(names, tool.Name)
				if m, _ := tool.OutputSchema.(map[string]any); m["type"] != "object" {
					t.Errorf("tool %s: output schema type %v, want object (clients drop other tools)", tool.Name, m["type"])
				}
			}
			slices.Sort(names)
			var want []string // an admin with every scope sees every tool
			for name := range mcp.ToolNames() {
				want = append(want, name)
			}
			slices.Sort(want)
			if !slices.Equal(names, want) {
				t.Errorf("tools = %v, want %v", names, want)
			}

			var me struct{ Tenant, Role, Provider string }
			if res := call(t, cs, "whoami", nil, &me); res.IsError || me.Tenant != "acme.com" || me.Role != "admin" || me.Provider != "apikey" {
				t.Errorf("whoami = %+v (%s)", me, text(res))
			}
			var todo store.Todo
			if res := call(t, cs, "add_todo", map[string]any{"title": "ship " + version, "notes": "n"}, &todo); res.IsError || todo.ID == "" || todo.Done {
				t.Fatalf("add_todo = %+v (%s)", todo, text(res))
			}
			var done store.Todo
			if res := call(t, cs, "complete_todo", map[string]any{"id": todo.ID}, &done); res.IsError || !done.Done || done.CompletedAt == nil {
				t.Errorf("complete_todo = %+v (%s)", done, text(res))
			}
			var list todoList
			call(t, cs, "list_todos", map[string]any{"status": "done"}, &list)
			if !slices.ContainsFunc(list.Todos, func(x store.Todo) bool { return x.ID == todo.ID }) {
				t.Errorf("list_todos(done) = %+v, missing %s", list, todo.ID)
			}
		})
	}
}

func TestListTodosPaginates(t *testing.T) {
	g := newGatehouse(t)
	cs := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	for i := range 7 {
		call(t, cs, "add_todo", map[string]any{"title": strings.Repeat("x", i+1)}, nil)
	}
	seen := map[string]bool{}
	cursor, pages := "", 0
	for {
		args := map[string]any{"limit": 3}
		if cursor != "" {
			args["cursor"] = cursor
		}
		var page todoList
		if res := call(t, cs, "list_todos", args, &page); res.IsError {
			t.Fatal(text(res))
		}
		pages++
		for _, td := range page.Todos {
			if seen[td.ID] {
				t.Errorf("todo %s on two pages", td.ID)
			}
			seen[td.ID] = true
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if len(seen) != 7 || pages != 3 {
		t.Errorf("saw %d todos on %d pages, want 7 on 3", len(seen), pages)
	}
}

// TestInvalidArguments: bad input is a tool error the model can read, and
// nothing is written.
func TestInvalidArguments(t *testing.T) {
	g := newGatehouse(t)
	cs := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	tests := []struct {
		tool string
		args map[string]any
		want string
	}{
		{"add_todo", map[string]any{}, "title"},
		{"add_todo", map[string]any{"title": ""}, "title"},
		{"add_todo", map[string]any{"title": "   "}, "blank"},
		{"add_todo", map[string]any{"title": strings.Repeat("x", 501)}, "title"},
		{"add_todo", map[string]any{"title": 42}, "title"},
		{"add_todo", map[string]any{"Title": "case-folded twin"}, "Title"},
		{"add_todo", map[string]any{"title": "a", "Title": "b"}, "Title"},
		{"add_todo", map[string]any{"title": "a", "owner": "root"}, "owner"},
		{"list_todos", map[string]any{"status": "pending"}, "status"},
		{"list_todos", map[string]any{"limit": 0}, "limit"},
		{"list_todos", map[string]any{"limit": 1000}, "limit"},
		{"list_todos", map[string]any{"cursor": "not-a-cursor"}, "cursor"},
		{"complete_todo", map[string]any{}, "id"},
		{"complete_todo", map[string]any{"id": "00000000-0000-4000-8000-000000000000"}, "not found"},
		{"complete_todo", map[string]any{"id": "'; DROP TABLE todos; --"}, "not found"},
	}
	for _, tt := range tests {
		res := call(t, cs, tt.tool, tt.args, nil)
		if !res.IsError || !strings.Contains(text(res), tt.want) {
			t.Errorf("%s(%v) = error %v %q; want a tool error mentioning %q", tt.tool, tt.args, res.IsError, text(res), tt.want)
		}
		if strings.Contains(strings.ToLower(text(res)), "sqlstate") || strings.Contains(text(res), "pgx") {
			t.Errorf("%s(%v) leaks internals: %q", tt.tool, tt.args, text(res))
		}
	}
	var list todoList
	call(t, cs, "list_todos", map[string]any{"status": "all"}, &list)
	if len(list.Todos) != 0 {
		t.Errorf("invalid calls wrote %d todos", len(list.Todos))
	}
}

// TestTenantIsolation: a key of one tenant never sees or changes another
// tenant's data, through any tool.
func TestTenantIsolation(t *testing.T) {
	g := newGatehouse(t)
	acme := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	globex := g.connect(t, g.key(t, "globex.com", tenancy.Admin), "")

	var secret store.Todo
	call(t, acme, "add_todo", map[string]any{"title": "acme merger plan"}, &secret)
	for range 3 {
		call(t, acme, "add_todo", map[string]any{"title": "acme filler"}, nil)
	}
	var acmePage todoList
	call(t, acme, "list_todos", map[string]any{"limit": 2}, &acmePage)
	if acmePage.NextCursor == "" {
		t.Fatal("expected a next cursor for acme")
	}

	var me struct{ Tenant string }
	call(t, globex, "whoami", nil, &me)
	if me.Tenant != "globex.com" {
		t.Errorf("globex whoami tenant = %q", me.Tenant)
	}
	var list todoList
	call(t, globex, "list_todos", map[string]any{"status": "all"}, &list)
	if len(list.Todos) != 0 {
		t.Errorf("globex sees acme's todos: %+v", list.Todos)
	}
	if res := call(t, globex, "complete_todo", map[string]any{"id": secret.ID}, nil); !res.IsError || !strings.Contains(text(res), "not found") {
		t.Errorf("globex completed acme's todo: %q", text(res))
	}
	if res := call(t, globex, "list_todos", map[string]any{"cursor": acmePage.NextCursor}, nil); !res.IsError || !strings.Contains(text(res), "cursor") {
		t.Errorf("globex accepted acme's cursor: %q", text(res))
	}
	var still todoList
	call(t, acme, "list_todos", map[string]any{"status": "open"}, &still)
	if !slices.ContainsFunc(still.Todos, func(x store.Todo) bool { return x.ID == secret.ID && !x.Done }) {
		t.Errorf("acme's todo changed: %+v", still.Todos)
	}
}

// TestConcurrentCalls: many sessions of two tenants at once, each seeing
// exactly its own writes (run with -race).
func TestConcurrentCalls(t *testing.T) {
	g := newGatehouse(t)
	keys := map[string]string{"a.com": g.key(t, "a.com", tenancy.Developer), "b.com": g.key(t, "b.com", tenancy.Developer)}
	var wg sync.WaitGroup
	for tenant, key := range keys {
		for range 4 {
			wg.Go(func() {
				cs := g.connect(t, key, "")
				for range 5 {
					call(t, cs, "add_todo", map[string]any{"title": tenant}, nil)
				}
			})
		}
	}
	wg.Wait()
	for tenant, key := range keys {
		var list todoList
		call(t, g.connect(t, key, ""), "list_todos", map[string]any{"limit": 200}, &list)
		if len(list.Todos) != 20 {
			t.Errorf("%s has %d todos, want 20", tenant, len(list.Todos))
		}
		for _, td := range list.Todos {
			if td.Title != tenant {
				t.Errorf("%s sees todo %q", tenant, td.Title)
			}
		}
	}
}

// TestCursorsAreSealed: a cursor edited by hand, or used with another list,
// is refused.
func TestCursorsAreSealed(t *testing.T) {
	g := newGatehouse(t)
	cs := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	for range 3 {
		call(t, cs, "add_todo", map[string]any{"title": "x"}, nil)
	}
	var page todoList
	call(t, cs, "list_todos", map[string]any{"limit": 1}, &page)
	payload, mac, _ := strings.Cut(page.NextCursor, ".")
	for _, forged := range []string{payload, payload + ".AAAAAAAAAAAAAAAAAAAAAA", "e30." + mac} {
		if res := call(t, cs, "list_todos", map[string]any{"cursor": forged}, nil); !res.IsError || !strings.Contains(text(res), "cursor") {
			t.Errorf("forged cursor %q accepted: %s", forged, text(res))
		}
	}
}
