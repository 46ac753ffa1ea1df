package mcp

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// todoTools are the to-do list of a tenant's workspace.
func todoTools() []*Tool {
	return []*Tool{addTodoTool(), listTodosTool(), completeTodoTool()}
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
			var pos store.TodoPosition
			if err := c.Open("todos", in.Cursor, &pos); err != nil || !store.IsUUID(pos.ID) {
				return listTodosOut{}, invalidArgs("cursor is not one this tool returned; start again without a cursor")
			}
			f.After = &pos
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
			out.NextCursor = c.Seal("todos", store.TodoPosition{CreatedAt: last.CreatedAt, ID: last.ID})
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
