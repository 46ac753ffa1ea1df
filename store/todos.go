package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Todo is a to-do item in a tenant's workspace.
type Todo struct {
	ID          string     `json:"id"`
	Title       string     `json:"title"`
	Notes       string     `json:"notes,omitempty"`
	Done        bool       `json:"done"`
	ProjectID   *string    `json:"project_id,omitempty"`
	ProjectName *string    `json:"project_name,omitempty" jsonschema:"the name of the project, read with the todo"`
	DueOn       *string    `json:"due_on,omitempty" jsonschema:"due date, YYYY-MM-DD"`
	Priority    string     `json:"priority" jsonschema:"low, normal, high or urgent"`
	CreatedBy   string     `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
}

// Priorities are the priorities a todo can have, lowest first.
var Priorities = []string{"low", "normal", "high", "urgent"}

// NewTodo is a todo to add.
type NewTodo struct {
	Title, Notes string
	ProjectID    *string    // nil: none
	DueOn        *time.Time // a date (the time of day is ignored); nil: none
	Priority     string     // "": normal
	CreatedBy    string
}

// TodoUpdate changes the fields that are not nil; Clear* set the optional
// fields to none.
type TodoUpdate struct {
	Title, Notes *string
	ProjectID    *string
	ClearProject bool
	DueOn        *time.Time
	ClearDueOn   bool
	Priority     *string
}

// TodoPosition is a place in the list order (newest first), for pagination.
type TodoPosition struct {
	CreatedAt time.Time
	ID        string
}

// TodoFilter selects todos.
type TodoFilter struct {
	Done      *bool         // nil: both
	ProjectID string        // "": any project or none
	DueBefore *time.Time    // only todos due strictly before this date
	After     *TodoPosition // start after this position
	Limit     int
}

// todoColumns read a todo with its project's name (a sub-select in the
// same statement, so naming the project costs no round trip).
const todoColumns = "id, title, notes, done, project_id, " + projectNameOf + ", to_char(due_on, 'YYYY-MM-DD'), priority, created_by, created_at, updated_at, completed_at"

// projectNameOf is the name of the project a row's project_id refers to
// (projects has no project_id column, so it names the outer row's).
const projectNameOf = "(SELECT pn.name FROM projects pn WHERE pn.id = project_id)"

func scanTodo(row pgx.Row) (*Todo, error) {
	var t Todo
	err := row.Scan(&t.ID, &t.Title, &t.Notes, &t.Done, &t.ProjectID, &t.ProjectName, &t.DueOn, &t.Priority, &t.CreatedBy, &t.CreatedAt, &t.UpdatedAt, &t.CompletedAt)
	if errors.Is(err, pgx.ErrNoRows) || isForeignKeyViolation(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// isForeignKeyViolation: a referenced project does not exist (callers look
// projects up first; this covers the rest).
func isForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503"
}

// AddTodo inserts a todo in the tenant of tx (see [DB.WithTenant]).
func AddTodo(ctx context.Context, tx pgx.Tx, title, notes, createdBy string) (*Todo, error) {
	return CreateTodo(ctx, tx, NewTodo{Title: title, Notes: notes, CreatedBy: createdBy})
}

// CreateTodo inserts a todo in the tenant of tx. A project that does not
// exist is ErrNotFound.
func CreateTodo(ctx context.Context, tx pgx.Tx, n NewTodo) (*Todo, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if n.ProjectID != nil && !IsUUID(*n.ProjectID) {
		return nil, ErrNotFound
	}
	if n.Priority == "" {
		n.Priority = "normal"
	}
	return scanTodo(tx.QueryRow(ctx, `INSERT INTO todos (title, notes, project_id, due_on, priority, created_by)
		VALUES (@title, @notes, @project_id::uuid, @due_on::date, @priority, @created_by) RETURNING `+todoColumns,
		pgx.NamedArgs{"title": n.Title, "notes": n.Notes, "project_id": n.ProjectID, "due_on": dateArg(n.DueOn),
			"priority": n.Priority, "created_by": n.CreatedBy}))
}

// dateArg passes a date as text, so no time zone shifts it.
func dateArg(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := t.Format(time.DateOnly)
	return &s
}

// FindTodo returns the todo with the given id.
func FindTodo(ctx context.Context, tx pgx.Tx, id string) (*Todo, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if !IsUUID(id) {
		return nil, ErrNotFound
	}
	return scanTodo(tx.QueryRow(ctx, "SELECT "+todoColumns+" FROM todos WHERE id = $1", id))
}

// ListTodos returns up to f.Limit todos, newest first, and whether more follow.
func ListTodos(ctx context.Context, tx pgx.Tx, f TodoFilter) (todos []*Todo, more bool, err error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if f.ProjectID != "" && !IsUUID(f.ProjectID) {
		return []*Todo{}, false, nil
	}
	args := pgx.NamedArgs{"limit": f.Limit + 1, "done": f.Done}
	q := "SELECT " + todoColumns + " FROM todos WHERE (@done::boolean IS NULL OR done = @done)"
	if f.ProjectID != "" {
		q += " AND project_id = @project_id::uuid"
		args["project_id"] = f.ProjectID
	}
	if f.DueBefore != nil {
		q += " AND due_on < @due_before::date"
		args["due_before"] = dateArg(f.DueBefore)
	}
	if f.After != nil {
		q += " AND (created_at, id) < (@after_at, @after_id::uuid)"
		args["after_at"], args["after_id"] = f.After.CreatedAt, f.After.ID
	}
	rows, _ := tx.Query(ctx, q+" ORDER BY created_at DESC, id DESC LIMIT @limit", args)
	todos, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Todo, error) { return scanTodo(r) })
	if err != nil {
		return nil, false, err
	}
	if len(todos) > f.Limit {
		return todos[:f.Limit], true, nil
	}
	return todos, false, nil
}

// UpdateTodo changes a todo and returns it. A project that does not exist
// is ErrNotFound, like a missing todo: callers look the project up first
// to tell them apart.
func UpdateTodo(ctx context.Context, tx pgx.Tx, id string, u TodoUpdate) (*Todo, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if !IsUUID(id) || (u.ProjectID != nil && !IsUUID(*u.ProjectID)) {
		return nil, ErrNotFound
	}
	return scanTodo(tx.QueryRow(ctx, `UPDATE todos SET
		title = coalesce(@title::text, title),
		notes = coalesce(@notes::text, notes),
		project_id = CASE WHEN @clear_project::boolean THEN NULL ELSE coalesce(@project_id::uuid, project_id) END,
		due_on = CASE WHEN @clear_due_on::boolean THEN NULL ELSE coalesce(@due_on::date, due_on) END,
		priority = coalesce(@priority::text, priority),
		updated_at = clock_timestamp()
		WHERE id = @id RETURNING `+todoColumns,
		pgx.NamedArgs{"id": id, "title": u.Title, "notes": u.Notes, "project_id": u.ProjectID, "clear_project": u.ClearProject,
			"due_on": dateArg(u.DueOn), "clear_due_on": u.ClearDueOn, "priority": u.Priority}))
}

// CompleteTodo marks a todo done (idempotently) and returns it.
func CompleteTodo(ctx context.Context, tx pgx.Tx, id string) (*Todo, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if !IsUUID(id) {
		return nil, ErrNotFound
	}
	return scanTodo(tx.QueryRow(ctx, `UPDATE todos SET done = true, completed_at = coalesce(completed_at, clock_timestamp()),
		updated_at = CASE WHEN done THEN updated_at ELSE clock_timestamp() END
		WHERE id = $1 RETURNING `+todoColumns, id))
}

// DeleteTodo deletes a todo and returns what it was.
func DeleteTodo(ctx context.Context, tx pgx.Tx, id string) (*Todo, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if !IsUUID(id) {
		return nil, ErrNotFound
	}
	return scanTodo(tx.QueryRow(ctx, "DELETE FROM todos WHERE id = $1 RETURNING "+todoColumns, id))
}

// IsUUID reports whether s is a UUID in canonical text form.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}
