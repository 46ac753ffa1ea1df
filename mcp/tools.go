package mcp

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// tools returns every tool Gatehouse serves: the registry. Each entry says
// the minimum role and the scope it needs.
func tools() []*Tool {
	return []*Tool{whoamiTool(), addTodoTool(), listTodosTool(), completeTodoTool(), readAuditLogTool()}
}

type whoamiIn struct{}

type whoamiOut struct {
	Subject    string     `json:"subject" jsonschema:"stable identifier of the caller, qualified by its identity provider"`
	Provider   string     `json:"provider" jsonschema:"how the caller authenticated: apikey, google, github, ..."`
	Email      string     `json:"email,omitempty"`
	Name       string     `json:"name,omitempty"`
	Tenant     string     `json:"tenant" jsonschema:"the organisation (email domain) or personal tenant the caller acts in"`
	TenantKind string     `json:"tenant_kind" jsonschema:"organization or personal"`
	Role       string     `json:"role" jsonschema:"the caller's role in the tenant: admin, developer or viewer"`
	Scopes     []string   `json:"scopes" jsonschema:"what the credential was delegated"`
	APIKeyID   string     `json:"api_key_id,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty" jsonschema:"when the credential expires"`
}

func (o whoamiOut) Text() string {
	who := o.Subject
	if o.Email != "" {
		who = o.Email + " (" + o.Subject + ")"
	}
	return fmt.Sprintf("You are %s, %s in tenant %s, with scopes %s.", who, o.Role, o.Tenant, strings.Join(o.Scopes, " "))
}

func whoamiTool() *Tool {
	return newTool(ToolSpec{
		Name:        "whoami",
		Title:       "Who am I",
		Description: "Tells who you are authenticated as: your identity, your tenant (organisation), your role there and the scopes of your credential.",
		Role:        tenancy.Viewer,
		Scope:       identity.ScopeRead,
		ReadOnly:    true,
		Idempotent:  true,
	}, func(ctx context.Context, c *Call, _ whoamiIn) (whoamiOut, error) {
		p := c.Principal
		out := whoamiOut{
			Subject: p.Subject, Provider: p.Provider, Email: p.Email, Name: p.Name,
			Tenant: c.Tenant.Key, TenantKind: string(c.Tenant.Kind), Role: string(c.Role),
			Scopes: p.Scopes, APIKeyID: p.APIKeyID,
		}
		if out.Scopes == nil {
			out.Scopes = []string{}
		}
		if !p.Expiry.IsZero() {
			out.ExpiresAt = &p.Expiry
		}
		return out, nil
	})
}

type addTodoIn struct {
	Title string `json:"title" jsonschema:"what needs doing (1 to 500 characters)"`
	Notes string `json:"notes,omitempty" jsonschema:"optional details, up to 10000 characters"`
}

func addTodoTool() *Tool {
	return newTool(ToolSpec{
		Name:        "add_todo",
		Title:       "Add a todo",
		Description: "Adds a todo to your organisation's shared list and returns it with its id.",
		Role:        tenancy.Developer,
		Scope:       identity.ScopeWrite,
		Input: func(s *jsonschema.Schema) {
			s.Properties["title"].MinLength = new(1)
			s.Properties["title"].MaxLength = new(500)
			s.Properties["notes"].MaxLength = new(10000)
		},
	}, func(ctx context.Context, c *Call, in addTodoIn) (todoOut, error) {
		if strings.TrimSpace(in.Title) == "" {
			return todoOut{}, invalidArgs("title must not be blank")
		}
		t, err := store.AddTodo(ctx, c.Tx, in.Title, in.Notes, c.Principal.Subject)
		return todoOut{t}, err
	})
}

type listTodosIn struct {
	Status string `json:"status,omitempty" jsonschema:"open (default), done or all"`
	Limit  int    `json:"limit,omitempty" jsonschema:"how many to return, 1 to 200 (default 50)"`
	Cursor string `json:"cursor,omitempty" jsonschema:"next_cursor from the previous page"`
}

type listTodosOut struct {
	Todos      []*store.Todo `json:"todos"`
	NextCursor string        `json:"next_cursor,omitempty" jsonschema:"pass as cursor to get the next page; absent on the last page"`
}

func (o listTodosOut) Text() string {
	if len(o.Todos) == 0 {
		return "No todos."
	}
	var b strings.Builder
	for _, t := range o.Todos {
		mark := " "
		if t.Done {
			mark = "x"
		}
		fmt.Fprintf(&b, "- [%s] %s (id %s)\n", mark, t.Title, t.ID)
	}
	if o.NextCursor != "" {
		fmt.Fprintf(&b, "More todos follow: call again with cursor %q.\n", o.NextCursor)
	}
	return b.String()
}

func listTodosTool() *Tool {
	return newTool(ToolSpec{
		Name:        "list_todos",
		Title:       "List todos",
		Description: "Lists your organisation's todos, newest first. Open todos by default; page with cursor.",
		Role:        tenancy.Viewer,
		Scope:       identity.ScopeRead,
		ReadOnly:    true,
		Idempotent:  true,
		Input: func(s *jsonschema.Schema) {
			s.Properties["status"].Enum = []any{"open", "done", "all"}
			s.Properties["limit"].Minimum = new(1.0)
			s.Properties["limit"].Maximum = new(200.0)
		},
	}, func(ctx context.Context, c *Call, in listTodosIn) (listTodosOut, error) {
		f := store.TodoFilter{Limit: in.Limit}
		if f.Limit == 0 {
			f.Limit = 50
		}
		switch in.Status {
		case "", "open":
			f.Done = new(false)
		case "done":
			f.Done = new(true)
		}
		if in.Cursor != "" {
			pos, err := decodeCursor(c.Tenant, in.Cursor)
			if err != nil {
				return listTodosOut{}, err
			}
			f.After = pos
		}
		todos, more, err := store.ListTodos(ctx, c.Tx, f)
		if err != nil {
			return listTodosOut{}, err
		}
		out := listTodosOut{Todos: todos}
		if out.Todos == nil {
			out.Todos = []*store.Todo{}
		}
		if more {
			last := todos[len(todos)-1]
			out.NextCursor = encodeCursor(c.Tenant, store.TodoPosition{CreatedAt: last.CreatedAt, ID: last.ID})
		}
		return out, nil
	})
}

type completeTodoIn struct {
	ID string `json:"id" jsonschema:"the todo's id"`
}

func completeTodoTool() *Tool {
	return newTool(ToolSpec{
		Name:        "complete_todo",
		Title:       "Complete a todo",
		Description: "Marks a todo as done. Completing a todo that is already done changes nothing.",
		Role:        tenancy.Developer,
		Scope:       identity.ScopeWrite,
		Idempotent:  true,
	}, func(ctx context.Context, c *Call, in completeTodoIn) (todoOut, error) {
		t, err := store.CompleteTodo(ctx, c.Tx, in.ID)
		if errors.Is(err, store.ErrNotFound) {
			return todoOut{}, notFound("todo", in.ID)
		}
		return todoOut{t}, err
	})
}

// todoOut is one todo as a tool result.
type todoOut struct{ *store.Todo }

func (t todoOut) Text() string {
	state := "open"
	if t.Done {
		state = "done"
	}
	return fmt.Sprintf("Todo %q (%s), id %s.", t.Title, state, t.ID)
}

// Cursors are opaque to callers and tagged with the tenant they were issued
// in; a cursor from another tenant is refused (it could only ever page
// through the caller's own schema anyway).
type cursor struct {
	Tenant string    `json:"n"`
	At     time.Time `json:"t"`
	ID     string    `json:"i"`
}

func cursorTag(t *tenancy.Tenant) string {
	sum := sha256.Sum256([]byte("gatehouse cursor " + t.ID))
	return base64.RawURLEncoding.EncodeToString(sum[:6])
}

func encodeCursor(t *tenancy.Tenant, pos store.TodoPosition) string {
	b, _ := json.Marshal(cursor{Tenant: cursorTag(t), At: pos.CreatedAt, ID: pos.ID})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(t *tenancy.Tenant, s string) (*store.TodoPosition, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	var c cursor
	if err != nil || json.Unmarshal(b, &c) != nil || c.Tenant != cursorTag(t) || !store.IsUUID(c.ID) {
		return nil, invalidArgs("cursor is not one this tool returned; start again without a cursor")
	}
	return &store.TodoPosition{CreatedAt: c.At, ID: c.ID}, nil
}
