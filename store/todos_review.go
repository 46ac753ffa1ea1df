package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// ListOpenTodosForReview returns up to limit open todos (of projectID, when
// not ""), in one statement: those due before day first, however old (a
// review must not miss them), then the others, newest first within each;
// more reports whether open todos were left out. For the weekly_review and
// project_status prompts.
func ListOpenTodosForReview(ctx context.Context, tx pgx.Tx, projectID string, day time.Time, limit int) (todos []*Todo, more bool, err error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if projectID != "" && !IsUUID(projectID) {
		return []*Todo{}, false, nil
	}
	args := pgx.NamedArgs{"limit": limit + 1, "day": dateArg(&day)}
	q := "SELECT " + todoColumns + " FROM todos WHERE NOT done"
	if projectID != "" {
		q += " AND project_id = @project_id::uuid"
		args["project_id"] = projectID
	}
	rows, _ := tx.Query(ctx, q+" ORDER BY coalesce(due_on < @day::date, false) DESC, created_at DESC, id DESC LIMIT @limit", args)
	todos, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Todo, error) { return scanTodo(r) })
	if err != nil {
		return nil, false, err
	}
	if len(todos) > limit {
		return todos[:limit], true, nil
	}
	return todos, false, nil
}
