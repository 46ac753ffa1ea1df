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

// projectTools are the projects of a tenant's workspace: named groups of
// todos and documents, archived rather than deleted.
func projectTools() []*Tool {
	return []*Tool{createProjectTool(), listProjectsTool(), getProjectTool(), updateProjectTool(), archiveProjectTool(), unarchiveProjectTool()}
}

type createProjectIn struct {
	Name        string `json:"name" jsonschema:"the project's name (1 to 200 characters), unique among active projects ignoring case"`
	Description string `json:"description,omitempty" jsonschema:"what the project is about, up to 10000 characters"`
}

// projectOut is one project as a tool result.
type projectOut struct{ *store.Project }

func (p projectOut) Text() string {
	state := ""
	if p.Archived {
		state = " (archived)"
	}
	return fmt.Sprintf("Project %q%s, id %s.", p.Name, state, p.ID)
}

func projectNameSchema(s *jsonschema.Schema) {
	s.MinLength, s.MaxLength = new(1), new(200)
}

func createProjectTool() *Tool {
	return newTool(ToolSpec{
		Name:        "create_project",
		Title:       "Create a project",
		Description: "Creates a project in your organisation's workspace to group todos and documents, and returns it with its id. Names are unique among active projects (ignoring case).",
		Role:        tenancy.Developer,
		Scope:       identity.ScopeWrite,
		Input: func(s *jsonschema.Schema) {
			projectNameSchema(s.Properties["name"])
			s.Properties["description"].MaxLength = new(10000)
		},
	}, func(ctx context.Context, c *Call, in createProjectIn) (projectOut, error) {
		name := strings.TrimSpace(in.Name)
		if name == "" {
			return projectOut{}, invalidArgs("name must not be blank")
		}
		// The write's last statement (see add_todo); a taken name is
		// PostgreSQL's unique violation, which rolls everything back.
		p, err := store.CreateProject(store.Final(ctx), c.Tx, name, in.Description, c.Principal.Subject)
		return projectOut{p}, projectError(err, name, "")
	})
}

// projectError translates store errors about project id (or a project
// named name) for the caller.
func projectError(err error, name, id string) error {
	switch {
	case errors.Is(err, store.ErrProjectNameTaken):
		return &userError{msg: fmt.Sprintf("an active project named %q already exists: choose another name, or archive that project first", name)}
	case errors.Is(err, store.ErrNotFound):
		return notFound("project", id)
	}
	return err
}

type listProjectsIn struct {
	IncludeArchived bool   `json:"include_archived,omitempty" jsonschema:"also list archived projects (default false)"`
	Limit           int    `json:"limit,omitempty" jsonschema:"how many to return, 1 to 200 (default 50)"`
	Cursor          string `json:"cursor,omitempty" jsonschema:"next_cursor from the previous page"`
}

type listProjectsOut struct {
	Projects   []*store.Project `json:"projects"`
	NextCursor string           `json:"next_cursor,omitempty" jsonschema:"pass as cursor to get the next page; absent on the last page"`
}

func (o listProjectsOut) Text() string {
	if len(o.Projects) == 0 {
		return "No projects."
	}
	var b strings.Builder
	for _, p := range o.Projects {
		fmt.Fprintf(&b, "- %s (id %s)", p.Name, p.ID)
		if p.Archived {
			b.WriteString(" [archived]")
		}
		b.WriteString("\n")
	}
	if o.NextCursor != "" {
		fmt.Fprintf(&b, "More projects follow: call again with cursor %q.\n", o.NextCursor)
	}
	return b.String()
}

func listProjectsTool() *Tool {
	return newTool(ToolSpec{
		Name:        "list_projects",
		Title:       "List projects",
		Description: "Lists your organisation's projects by name. Active projects only unless include_archived; page with cursor.",
		Role:        tenancy.Viewer,
		Scope:       identity.ScopeRead,
		ReadOnly:    true,
		Idempotent:  true,
		Input:       pageLimitSchema(200),
	}, func(ctx context.Context, c *Call, in listProjectsIn) (listProjectsOut, error) {
		f := store.ProjectFilter{IncludeArchived: in.IncludeArchived, Limit: pageLimit(in.Limit, 50)}
		if in.Cursor != "" {
			var pos store.ProjectPosition
			if err := c.Open("projects", in.Cursor, &pos); err != nil || !store.IsUUID(pos.ID) {
				return listProjectsOut{}, errCursorRefused
			}
			f.After = &pos
		}
		projects, more, err := store.ListProjects(ctx, c.Tx, f)
		if err != nil {
			return listProjectsOut{}, err
		}
		out := listProjectsOut{Projects: orEmpty(projects)}
		if more {
			last := projects[len(projects)-1]
			out.NextCursor = c.Seal("projects", store.ProjectPosition{Name: last.Name, ID: last.ID})
		}
		return out, nil
	})
}

type projectIDIn struct {
	ID string `json:"id" jsonschema:"the project's id"`
}

type projectDetailOut struct {
	*store.Project
	OpenTodos int `json:"open_todos" jsonschema:"todos of the project not done yet"`
	Documents int `json:"documents" jsonschema:"documents of the project"`
}

func (p projectDetailOut) Text() string {
	return fmt.Sprintf("%s It has %d open todo(s) and %d document(s).", projectOut{p.Project}.Text(), p.OpenTodos, p.Documents)
}

func getProjectTool() *Tool {
	return newTool(ToolSpec{
		Name:        "get_project",
		Title:       "Get a project",
		Description: "Returns a project with the number of its open todos and of its documents.",
		Role:        tenancy.Viewer,
		Scope:       identity.ScopeRead,
		ReadOnly:    true,
		Idempotent:  true,
	}, func(ctx context.Context, c *Call, in projectIDIn) (projectDetailOut, error) {
		p, err := store.FindProject(ctx, c.Tx, in.ID)
		if err != nil {
			return projectDetailOut{}, projectError(err, "", in.ID)
		}
		n, err := store.CountProjectContents(ctx, c.Tx, p.ID)
		return projectDetailOut{Project: p, OpenTodos: n.OpenTodos, Documents: n.Documents}, err
	})
}

type updateProjectIn struct {
	ID          string  `json:"id" jsonschema:"the project's id"`
	Name        *string `json:"name,omitempty" jsonschema:"a new name (1 to 200 characters); omit to keep the name"`
	Description *string `json:"description,omitempty" jsonschema:"a new description (up to 10000 characters, empty to remove it); omit to keep it"`
}

func updateProjectTool() *Tool {
	return newTool(ToolSpec{
		Name:        "update_project",
		Title:       "Update a project",
		Description: "Renames a project or changes its description; fields left out keep their values.",
		Role:        tenancy.Developer,
		Scope:       identity.ScopeWrite,
		Idempotent:  true,
		Input: func(s *jsonschema.Schema) {
			projectNameSchema(s.Properties["name"])
			s.Properties["description"].MaxLength = new(10000)
		},
	}, func(ctx context.Context, c *Call, in updateProjectIn) (projectOut, error) {
		if in.Name == nil && in.Description == nil {
			return projectOut{}, invalidArgs("nothing to change: give name or description")
		}
		var name string
		if in.Name != nil {
			if name = strings.TrimSpace(*in.Name); name == "" {
				return projectOut{}, invalidArgs("name must not be blank")
			}
			in.Name = &name
		}
		p, err := store.UpdateProject(ctx, c.Tx, in.ID, store.ProjectUpdate{Name: in.Name, Description: in.Description})
		return projectOut{p}, projectError(err, name, in.ID)
	})
}

func archiveProjectTool() *Tool {
	return newTool(ToolSpec{
		Name:        "archive_project",
		Title:       "Archive a project",
		Description: "Archives a project: it leaves list_projects (unless include_archived), its name becomes free, and no todo or document can be added to it. Its todos and documents stay, still linked to it. Archiving an archived project changes nothing.",
		Role:        tenancy.Developer,
		Scope:       identity.ScopeWrite,
		Idempotent:  true,
		Destructive: true,
	}, func(ctx context.Context, c *Call, in projectIDIn) (projectOut, error) {
		p, err := store.ArchiveProject(ctx, c.Tx, in.ID)
		return projectOut{p}, projectError(err, "", in.ID)
	})
}

func unarchiveProjectTool() *Tool {
	return newTool(ToolSpec{
		Name:        "unarchive_project",
		Title:       "Unarchive a project",
		Description: "Makes an archived project active again: it is listed again and todos and documents can be added to it. Refused if an active project has taken its name meanwhile (rename one of them first). Unarchiving an active project changes nothing.",
		Role:        tenancy.Developer,
		Scope:       identity.ScopeWrite,
		Idempotent:  true,
	}, func(ctx context.Context, c *Call, in projectIDIn) (projectOut, error) {
		p, err := store.UnarchiveProject(ctx, c.Tx, in.ID)
		if errors.Is(err, store.ErrProjectNameTaken) {
			return projectOut{}, &userError{msg: "an active project already has this project's name: rename one of them (update_project), then unarchive it"}
		}
		return projectOut{p}, projectError(err, "", in.ID)
	})
}

// activeProject checks that a todo or document may be put in project id:
// it exists in the caller's tenant (another tenant's id does not) and is
// not archived.
func activeProject(ctx context.Context, c *Call, id string) error {
	p, err := store.FindProject(ctx, c.Tx, id)
	if err != nil {
		return projectError(err, "", id)
	}
	if p.Archived {
		return &userError{msg: fmt.Sprintf("project %q (id %s) is archived: nothing can be added to it", p.Name, p.ID)}
	}
	return nil
}

// existingProject checks that a filter's project id exists (archived or
// not) in the caller's tenant.
func existingProject(ctx context.Context, c *Call, id string) error {
	_, err := store.FindProject(ctx, c.Tx, id)
	return projectError(err, "", id)
}

// Helpers shared by the workspace tools.

// projectLabel names a todo's or a document's project in a text: by its
// name (read with the item), else by its id.
func projectLabel(id, name *string) string {
	if name != nil {
		return fmt.Sprintf("project %q", *name)
	}
	return "project " + *id
}

var errCursorRefused = invalidArgs("cursor is not one this tool returned; start again without a cursor")

// pageLimitSchema bounds the limit property of a list tool.
func pageLimitSchema(max float64) func(*jsonschema.Schema) {
	return func(s *jsonschema.Schema) {
		s.Properties["limit"].Minimum = new(1.0)
		s.Properties["limit"].Maximum = new(max)
	}
}

func pageLimit(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

// orEmpty keeps empty lists from becoming JSON null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
