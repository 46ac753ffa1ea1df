package mcp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// todoTools are the to-do list of a tenant's workspace.
func todoTools() []*Tool {
	return []*Tool{addTodoTool(), listTodosTool(), updateTodoTool(), completeTodoTool(), deleteTodoTool()}
}

type addTodoIn struct {
	Title     string `json:"title" jsonschema:"what needs doing (1 to 500 characters)"`
	Notes     string `json:"notes,omitempty" jsonschema:"optional details, up to 10000 characters"`
	ProjectID string `json:"project_id,omitempty" jsonschema:"the id of an active project to put the todo in"`
	DueOn     string `json:"due_on,omitempty" jsonschema:"due date, YYYY-MM-DD"`
	Priority  string `json:"priority,omitempty" jsonschema:"low, normal (default), high or urgent"`
}

// todoSchema sets the limits of the todo fields a tool's input has.
func todoSchema(s *jsonschema.Schema) {
	limits := map[string]func(*jsonschema.Schema){
		"title":    func(p *jsonschema.Schema) { p.MinLength, p.MaxLength = new(1), new(500) },
		"notes":    func(p *jsonschema.Schema) { p.MaxLength = new(10000) },
		"due_on":   dateSchema,
		"priority": func(p *jsonschema.Schema) { p.Enum = []any{"low", "normal", "high", "urgent"} },
	}
	for name, set := range limits {
		if p := s.Properties[name]; p != nil {
			set(p)
		}
	}
}

func dateSchema(p *jsonschema.Schema) {
	p.Format, p.Pattern = "date", `^[0-9]{4}-[0-9]{2}-[0-9]{2}$`
}

// parseDate reads a YYYY-MM-DD argument; "" is no date.
func parseDate(name, s string) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	d, err := time.Parse(time.DateOnly, s)
	if err != nil || d.Year() < 1 {
		return nil, invalidArgs(fmt.Sprintf("%s must be a calendar date as YYYY-MM-DD, such as 2026-12-01 (got %q)", name, s))
	}
	return &d, nil
}

func addTodoTool() *Tool {
	return newTool(ToolSpec{
		Name:        "add_todo",
		Title:       "Add a todo",
		Description: "Adds a todo to your organisation's shared list, optionally in a project, with a due date and a priority, and returns it with its id.",
		Role:        tenancy.Developer,
		Scope:       identity.ScopeWrite,
		Input:       todoSchema,
	}, func(ctx context.Context, c *Call, in addTodoIn) (todoOut, error) {
		if strings.TrimSpace(in.Title) == "" {
			return todoOut{}, invalidArgs("title must not be blank")
		}
		due, err := parseDate("due_on", in.DueOn)
		if err != nil {
			return todoOut{}, err
		}
		n := store.NewTodo{Title: in.Title, Notes: in.Notes, DueOn: due, Priority: in.Priority, CreatedBy: c.Principal.Subject}
		if in.ProjectID != "" {
			if err := activeProject(ctx, c, in.ProjectID); err != nil {
				return todoOut{}, err
			}
			n.ProjectID = &in.ProjectID
		}
		// The INSERT is the write's last statement: its audit record and
		// COMMIT travel with it (one round trip). Its failures are
		// PostgreSQL's, which roll everything back.
		t, err := store.CreateTodo(store.Final(ctx), c.Tx, n)
		return todoOut{t}, err
	})
}

type listTodosIn struct {
	Status    string `json:"status,omitempty" jsonschema:"open (default), done or all"`
	ProjectID string `json:"project_id,omitempty" jsonschema:"only the todos of this project"`
	DueBefore string `json:"due_before,omitempty" jsonschema:"only todos due strictly before this date (YYYY-MM-DD); todos without a due date are left out"`
	Limit     int    `json:"limit,omitempty" jsonschema:"how many to return, 1 to 200 (default 50)"`
	Cursor    string `json:"cursor,omitempty" jsonschema:"next_cursor from the previous page"`
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
		fmt.Fprintf(&b, "- [%s] %s (id %s%s)\n", mark, t.Title, t.ID, todoDetails(t))
	}
	if o.NextCursor != "" {
		fmt.Fprintf(&b, "More todos follow: call again with cursor %q.\n", o.NextCursor)
	}
	return b.String()
}

// todoDetails are a todo's optional fields, for text.
func todoDetails(t *store.Todo) string {
	var s string
	if t.Priority != "" && t.Priority != "normal" {
		s += ", " + t.Priority + " priority"
	}
	if t.DueOn != nil {
		s += ", due " + *t.DueOn
	}
	if t.ProjectID != nil {
		s += ", " + projectLabel(t.ProjectID, t.ProjectName)
	}
	return s
}

func listTodosTool() *Tool {
	return newTool(ToolSpec{
		Name:        "list_todos",
		Title:       "List todos",
		Description: "Lists your organisation's todos, newest first. Open todos by default; filter by project and due date; page with cursor.",
		Role:        tenancy.Viewer,
		Scope:       identity.ScopeRead,
		ReadOnly:    true,
		Idempotent:  true,
		Input: func(s *jsonschema.Schema) {
			s.Properties["status"].Enum = []any{"open", "done", "all"}
			dateSchema(s.Properties["due_before"])
			pageLimitSchema(200)(s)
		},
	}, func(ctx context.Context, c *Call, in listTodosIn) (listTodosOut, error) {
		f := store.TodoFilter{Limit: pageLimit(in.Limit, 50), ProjectID: in.ProjectID}
		switch in.Status {
		case "", "open":
			f.Done = new(false)
		case "done":
			f.Done = new(true)
		}
		var err error
		if f.DueBefore, err = parseDate("due_before", in.DueBefore); err != nil {
			return listTodosOut{}, err
		}
		if in.Cursor != "" {
			var pos store.TodoPosition
			if err := c.Open("todos", in.Cursor, &pos); err != nil || !store.IsUUID(pos.ID) {
				return listTodosOut{}, errCursorRefused
			}
			f.After = &pos
		}
		if in.ProjectID != "" {
			if err := existingProject(ctx, c, in.ProjectID); err != nil {
				return listTodosOut{}, err
			}
		}
		todos, more, err := store.ListTodos(ctx, c.Tx, f)
		if err != nil {
			return listTodosOut{}, err
		}
		out := listTodosOut{Todos: orEmpty(todos)}
		if more {
			last := todos[len(todos)-1]
			out.NextCursor = c.Seal("todos", store.TodoPosition{CreatedAt: last.CreatedAt, ID: last.ID})
		}
		return out, nil
	})
}

// updateTodoIn: a field left out keeps its value; the optional fields are
// removed with the clear_* flags (not with null, which the schema refuses,
// nor with "", which would read as a mistake as easily as an intention).
type updateTodoIn struct {
	ID           string  `json:"id" jsonschema:"the todo's id"`
	Title        *string `json:"title,omitempty" jsonschema:"a new title (1 to 500 characters)"`
	Notes        *string `json:"notes,omitempty" jsonschema:"new notes (up to 10000 characters; empty removes them)"`
	ProjectID    *string `json:"project_id,omitempty" jsonschema:"move the todo to this active project"`
	ClearProject bool    `json:"clear_project,omitempty" jsonschema:"true: take the todo out of its project"`
	DueOn        *string `json:"due_on,omitempty" jsonschema:"a new due date, YYYY-MM-DD"`
	ClearDueOn   bool    `json:"clear_due_on,omitempty" jsonschema:"true: remove the due date"`
	Priority     *string `json:"priority,omitempty" jsonschema:"a new priority: low, normal, high or urgent"`
}

func updateTodoTool() *Tool {
	return newTool(ToolSpec{
		Name:        "update_todo",
		Title:       "Update a todo",
		Description: "Changes a todo's title, notes, project, due date or priority; fields left out keep their values. To remove the due date or the project, send clear_due_on or clear_project set to true.",
		Role:        tenancy.Developer,
		Scope:       identity.ScopeWrite,
		Idempotent:  true,
		Input:       todoSchema,
	}, func(ctx context.Context, c *Call, in updateTodoIn) (todoOut, error) {
		u := store.TodoUpdate{Title: in.Title, Notes: in.Notes, ProjectID: in.ProjectID, ClearProject: in.ClearProject,
			ClearDueOn: in.ClearDueOn, Priority: in.Priority}
		switch {
		case in.Title == nil && in.Notes == nil && in.ProjectID == nil && !in.ClearProject && in.DueOn == nil && !in.ClearDueOn && in.Priority == nil:
			return todoOut{}, invalidArgs("nothing to change: give at least one of title, notes, project_id, clear_project, due_on, clear_due_on, priority")
		case in.ProjectID != nil && in.ClearProject:
			return todoOut{}, invalidArgs("give project_id or clear_project, not both")
		case in.DueOn != nil && in.ClearDueOn:
			return todoOut{}, invalidArgs("give due_on or clear_due_on, not both")
		case in.Title != nil && strings.TrimSpace(*in.Title) == "":
			return todoOut{}, invalidArgs("title must not be blank")
		}
		if in.DueOn != nil {
			due, err := parseDate("due_on", *in.DueOn)
			if err != nil {
				return todoOut{}, err
			}
			if due == nil {
				return todoOut{}, invalidArgs("due_on must be a date as YYYY-MM-DD; to remove the due date send clear_due_on: true")
			}
			u.DueOn = due
		}
		if _, err := store.FindTodo(ctx, c.Tx, in.ID); err != nil {
			return todoOut{}, todoError(err, in.ID)
		}
		if in.ProjectID != nil {
			if err := activeProject(ctx, c, *in.ProjectID); err != nil {
				return todoOut{}, err
			}
		}
		t, err := store.UpdateTodo(ctx, c.Tx, in.ID, u)
		return todoOut{t}, todoError(err, in.ID)
	})
}

func todoError(err error, id string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound("todo", id)
	}
	return err
}

type todoIDIn struct {
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
	}, func(ctx context.Context, c *Call, in todoIDIn) (todoOut, error) {
		t, err := store.CompleteTodo(ctx, c.Tx, in.ID)
		return todoOut{t}, todoError(err, in.ID)
	})
}

type deletedTodoOut struct {
	Deleted *store.Todo `json:"deleted" jsonschema:"the todo as it was"`
}

func (o deletedTodoOut) Text() string {
	return fmt.Sprintf("Deleted todo %q (id %s).", o.Deleted.Title, o.Deleted.ID)
}

func deleteTodoTool() *Tool {
	return newTool(ToolSpec{
		Name:        "delete_todo",
		Title:       "Delete a todo",
		Description: "Deletes a todo for good and returns what it was. To keep it on record, complete it instead.",
		Role:        tenancy.Developer,
		Scope:       identity.ScopeWrite,
		Idempotent:  true,
		Destructive: true,
	}, func(ctx context.Context, c *Call, in todoIDIn) (deletedTodoOut, error) {
		t, err := store.DeleteTodo(ctx, c.Tx, in.ID)
		return deletedTodoOut{t}, todoError(err, in.ID)
	})
}

// todoOut is one todo as a tool result.
type todoOut struct{ *store.Todo }

func (t todoOut) Text() string {
	state := "open"
	if t.Done {
		state = "done"
	}
	return fmt.Sprintf("Todo %q (%s%s), id %s.", t.Title, state, todoDetails(t.Todo), t.ID)
}
