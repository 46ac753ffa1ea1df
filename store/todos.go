package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Todo is a to-do item in a tenant's workspace.
type Todo struct {
	ID          string     `json:"id"`
	Title       string     `json:"title"`
	Notes       string     `json:"notes,omitempty"`
	Done        bool       `json:"done"`
	CreatedBy   string     `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
}

// TodoPosition is a place in the list order (newest first), for pagination.
type TodoPosition struct {
	CreatedAt time.Time
	ID        string
}

// TodoFilter selects todos.
type TodoFilter struct {
	Done  *bool         // nil: both
	After *TodoPosition // start after this position
	Limit int
}

const todoColumns = "id, title, notes, done, created_by, created_at, completed_at"

func scanTodo(row pgx.Row) (*Todo, error) {
	var t Todo
	err := row.Scan(&t.ID, &t.Title, &t.Notes, &t.Done, &t.CreatedBy, &t.CreatedAt, &t.CompletedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &t, err
}

// AddTodo inserts a todo in the tenant of tx (see [DB.WithTenant]).
func AddTodo(ctx context.Context, tx pgx.Tx, title, notes, createdBy string) (*Todo, error) {
	return scanTodo(tx.QueryRow(ctx, "INSERT INTO todos (title, notes, created_by) VALUES ($1, $2, $3) RETURNING "+todoColumns,
		title, notes, createdBy))
}

// ListTodos returns up to f.Limit todos, newest first, and whether more follow.
func ListTodos(ctx context.Context, tx pgx.Tx, f TodoFilter) (todos []*Todo, more bool, err error) {
	args := pgx.NamedArgs{"limit": f.Limit + 1, "done": f.Done}
	q := "SELECT " + todoColumns + " FROM todos WHERE (@done::boolean IS NULL OR done = @done)"
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

// CompleteTodo marks a todo done (idempotently) and returns it.
func CompleteTodo(ctx context.Context, tx pgx.Tx, id string) (*Todo, error) {
	if !IsUUID(id) {
		return nil, ErrNotFound
	}
	return scanTodo(tx.QueryRow(ctx, `UPDATE todos SET done = true, completed_at = coalesce(completed_at, clock_timestamp())
		WHERE id = $1 RETURNING `+todoColumns, id))
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
