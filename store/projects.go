package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Project groups todos and documents in a tenant's workspace. Projects are
// archived, never deleted; an archived project frees its name.
type Project struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Archived    bool      `json:"archived"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// ErrProjectNameTaken: an active project of the tenant already has the name
// (compared ignoring case).
var ErrProjectNameTaken = errors.New("an active project already has this name")

// ProjectPosition is a place in the list order (by name, ignoring case),
// for pagination.
type ProjectPosition struct {
	Name string
	ID   string
}

// ProjectFilter selects projects.
type ProjectFilter struct {
	IncludeArchived bool
	After           *ProjectPosition // start after this position
	Limit           int
}

// ProjectUpdate changes the fields that are not nil.
type ProjectUpdate struct {
	Name        *string
	Description *string
}

// ProjectCounts is what a project holds.
type ProjectCounts struct {
	OpenTodos int `json:"open_todos"`
	Documents int `json:"documents"`
}

const projectColumns = "id, name, description, archived, created_by, created_at, updated_at"

func scanProject(row pgx.Row) (*Project, error) {
	var p Project
	err := row.Scan(&p.ID, &p.Name, &p.Description, &p.Archived, &p.CreatedBy, &p.CreatedAt, &p.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "projects_name_active" {
		return nil, ErrProjectNameTaken
	}
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// CreateProject inserts a project in the tenant of tx.
func CreateProject(ctx context.Context, tx pgx.Tx, name, description, createdBy string) (*Project, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	return scanProject(tx.QueryRow(ctx, "INSERT INTO projects (name, description, created_by) VALUES ($1, $2, $3) RETURNING "+projectColumns,
		name, description, createdBy))
}

// FindProject returns the project with the given id.
func FindProject(ctx context.Context, tx pgx.Tx, id string) (*Project, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if !IsUUID(id) {
		return nil, ErrNotFound
	}
	return scanProject(tx.QueryRow(ctx, "SELECT "+projectColumns+" FROM projects WHERE id = $1", id))
}

// CountProjectContents counts a project's open todos and its documents.
func CountProjectContents(ctx context.Context, tx pgx.Tx, id string) (ProjectCounts, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	var c ProjectCounts
	if !IsUUID(id) {
		return c, ErrNotFound
	}
	err := tx.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM todos WHERE project_id = $1 AND NOT done),
		(SELECT count(*) FROM documents WHERE project_id = $1)`, id).Scan(&c.OpenTodos, &c.Documents)
	return c, err
}

// ListProjects returns up to f.Limit projects ordered by name (ignoring
// case), and whether more follow.
func ListProjects(ctx context.Context, tx pgx.Tx, f ProjectFilter) (projects []*Project, more bool, err error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	args := pgx.NamedArgs{"limit": f.Limit + 1, "archived": f.IncludeArchived}
	q := "SELECT " + projectColumns + " FROM projects WHERE (@archived::boolean OR NOT archived)"
	if f.After != nil {
		q += " AND (lower(name), id) > (lower(@after_name::text), @after_id::uuid)"
		args["after_name"], args["after_id"] = f.After.Name, f.After.ID
	}
	rows, _ := tx.Query(ctx, q+" ORDER BY lower(name), id LIMIT @limit", args)
	projects, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Project, error) { return scanProject(r) })
	if err != nil {
		return nil, false, err
	}
	if len(projects) > f.Limit {
		return projects[:f.Limit], true, nil
	}
	return projects, false, nil
}

// UpdateProject changes a project and returns it.
func UpdateProject(ctx context.Context, tx pgx.Tx, id string, u ProjectUpdate) (*Project, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if !IsUUID(id) {
		return nil, ErrNotFound
	}
	return scanProject(tx.QueryRow(ctx, `UPDATE projects SET name = coalesce(@name::text, name),
		description = coalesce(@description::text, description), updated_at = clock_timestamp()
		WHERE id = @id RETURNING `+projectColumns,
		pgx.NamedArgs{"id": id, "name": u.Name, "description": u.Description}))
}

// ArchiveProject archives a project (idempotently) and returns it. Its
// todos and documents keep referring to it.
func ArchiveProject(ctx context.Context, tx pgx.Tx, id string) (*Project, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if !IsUUID(id) {
		return nil, ErrNotFound
	}
	return scanProject(tx.QueryRow(ctx, `UPDATE projects SET archived = true,
		updated_at = CASE WHEN archived THEN updated_at ELSE clock_timestamp() END
		WHERE id = $1 RETURNING `+projectColumns, id))
}

// UnarchiveProject makes an archived project active again (idempotently)
// and returns it: ErrProjectNameTaken when an active project has taken its
// name meanwhile.
func UnarchiveProject(ctx context.Context, tx pgx.Tx, id string) (*Project, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if !IsUUID(id) {
		return nil, ErrNotFound
	}
	return scanProject(tx.QueryRow(ctx, `UPDATE projects SET archived = false,
		updated_at = CASE WHEN archived THEN clock_timestamp() ELSE updated_at END
		WHERE id = $1 RETURNING `+projectColumns, id))
}
