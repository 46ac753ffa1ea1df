package mcp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// prompts returns every prompt Gatehouse serves: the registry. Each says
// the minimum role and the scope it needs, like a tool.
func prompts() []*Prompt {
	return []*Prompt{weeklyReviewPrompt(), projectStatusPrompt(), projectKickoffPrompt(), summarizeDocumentsPrompt()}
}

// How much of the workspace a prompt carries at most.
const (
	promptTodos       = 200     // open todos listed
	promptDocuments   = 20      // documents embedded
	promptDocChars    = 50_000  // characters of one document's body
	promptBudgetChars = 200_000 // characters of bodies in all
)

func projectArg(required bool, what string) *promptArg {
	return &promptArg{name: "project", required: required, maxLen: 200, complete: store.SuggestProjectNames,
		description: what + ": the name of an active project (or its id)"}
}

// findProject resolves a project argument: an active project's name
// (ignoring case), else a project's id. Not found is an invalid argument.
func findProject(ctx context.Context, c *Call, ref string) (*store.Project, error) {
	p, err := store.FindActiveProjectByName(ctx, c.Tx, ref)
	if errors.Is(err, store.ErrNotFound) && store.IsUUID(ref) {
		p, err = store.FindProject(ctx, c.Tx, ref)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, invalidArgs(fmt.Sprintf("argument \"project\": %s has no active project named %q (completion suggests names; list_projects lists them)", c.Tenant.Key, ref))
	}
	return p, err
}

func userText(text string) *sdk.PromptMessage {
	return &sdk.PromptMessage{Role: "user", Content: &sdk.TextContent{Text: text}}
}

// today is the current date (UTC), as todos' due dates are written.
func today() time.Time { return time.Now().UTC().Truncate(24 * time.Hour) }

func weeklyReviewPrompt() *Prompt {
	return newPrompt(PromptSpec{
		Name:        "weekly_review",
		Title:       "Weekly review of open todos",
		Description: "Reviews your organisation's open todos — overdue first, then due this week, later, and undated — and asks for a plan for the week. Optionally for one project.",
		Role:        tenancy.Viewer,
		Scope:       identity.ScopeRead,
		Args:        []*promptArg{projectArg(false, "only the todos of this project")},
	}, func(ctx context.Context, c *Call, args promptArgs) (*sdk.GetPromptResult, error) {
		projectID, scope := "", c.Tenant.Key
		if ref := args["project"]; ref != "" {
			p, err := findProject(ctx, c, ref)
			if err != nil {
				return nil, err
			}
			projectID, scope = p.ID, fmt.Sprintf("project %q of %s", p.Name, c.Tenant.Key)
		}
		day := today()
		todos, more, err := openTodos(ctx, c, projectID, day)
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		fmt.Fprintf(&b, "Weekly review of the open todos of %s, today %s (UTC).\n\n", scope, day.Format(time.DateOnly))
		overdue := writeTodoSections(&b, todos, day)
		if more {
			fmt.Fprintf(&b, "\nOnly %d open todos are listed (every overdue one, up to %d, then the newest); list_todos pages through the rest.\n", len(todos), promptTodos)
		}
		b.WriteString("\nPlease write the weekly review: what is overdue and what to do about each (finish, reschedule, drop), " +
			"what the week should focus on given the due dates and priorities, and anything that looks stale or unowned. " +
			"Change nothing without asking; once the user agrees, update_todo changes a due date or priority and complete_todo closes a todo (by id).")
		return &sdk.GetPromptResult{
			Description: fmt.Sprintf("Weekly review of %d open todos (%d overdue) in %s", len(todos), overdue, scope),
			Messages:    []*sdk.PromptMessage{userText(b.String())},
		}, nil
	})
}

// openTodos returns up to promptTodos open todos (of projectID, when set):
// the overdue ones first, however old, then the newest others (see
// store.ListOpenTodosForReview); more reports whether any were left out.
func openTodos(ctx context.Context, c *Call, projectID string, day time.Time) (todos []*store.Todo, more bool, err error) {
	return store.ListOpenTodosForReview(ctx, c.Tx, projectID, day, promptTodos)
}

// writeTodoSections writes open todos grouped by due date relative to day
// (overdue, due within 7 days, later, no due date), most urgent first
// within each, and returns how many are overdue.
func writeTodoSections(b *strings.Builder, todos []*store.Todo, day time.Time) (overdue int) {
	if len(todos) == 0 {
		b.WriteString("There are no open todos.\n")
		return 0
	}
	now, week := day.Format(time.DateOnly), day.AddDate(0, 0, 7).Format(time.DateOnly)
	sections := []struct {
		title string
		in    func(due string) bool
		todos []*store.Todo
	}{
		{title: "Overdue", in: func(d string) bool { return d != "" && d < now }},
		{title: "Due in the next 7 days", in: func(d string) bool { return d != "" && d >= now && d <= week }},
		{title: "Due later", in: func(d string) bool { return d > week }},
		{title: "No due date", in: func(d string) bool { return d == "" }},
	}
	for _, t := range todos {
		due := ""
		if t.DueOn != nil {
			due = *t.DueOn
		}
		for i := range sections {
			if sections[i].in(due) {
				sections[i].todos = append(sections[i].todos, t)
				break
			}
		}
	}
	for _, s := range sections {
		if len(s.todos) == 0 {
			continue
		}
		slices.SortStableFunc(s.todos, func(x, y *store.Todo) int {
			if c := strings.Compare(dueOf(x), dueOf(y)); c != 0 {
				return c
			}
			return slices.Index(store.Priorities, y.Priority) - slices.Index(store.Priorities, x.Priority)
		})
		fmt.Fprintf(b, "## %s (%d)\n", s.title, len(s.todos))
		for _, t := range s.todos {
			fmt.Fprintf(b, "- %s (id %s%s", t.Title, t.ID, todoDetails(t))
			if t.DueOn != nil && *t.DueOn < now {
				if d, err := time.Parse(time.DateOnly, *t.DueOn); err == nil {
					fmt.Fprintf(b, ", %d days overdue", int(day.Sub(d).Hours()/24))
				}
			}
			b.WriteString(")\n")
			if t.Notes != "" {
				fmt.Fprintf(b, "  Notes: %s\n", strings.ReplaceAll(excerpt(t.Notes, 300), "\n", " "))
			}
		}
		b.WriteString("\n")
	}
	return len(sections[0].todos)
}

func dueOf(t *store.Todo) string {
	if t.DueOn == nil {
		return "9999"
	}
	return *t.DueOn
}

func projectStatusPrompt() *Prompt {
	return newPrompt(PromptSpec{
		Name:        "project_status",
		Title:       "Project status report",
		Description: "Reports on one project: its description, its open todos by due date, and its documents; asks for a short status report with risks and next steps.",
		Role:        tenancy.Viewer,
		Scope:       identity.ScopeRead,
		Args:        []*promptArg{projectArg(true, "the project to report on")},
	}, func(ctx context.Context, c *Call, args promptArgs) (*sdk.GetPromptResult, error) {
		p, err := findProject(ctx, c, args["project"])
		if err != nil {
			return nil, err
		}
		day := today()
		todos, moreTodos, err := openTodos(ctx, c, p.ID, day)
		if err != nil {
			return nil, err
		}
		docs, moreDocs, err := store.ListDocuments(ctx, c.Tx, store.DocumentFilter{ProjectID: p.ID, Limit: 50})
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		fmt.Fprintf(&b, "Status of the project %q (id %s) of %s, today %s (UTC).", p.Name, p.ID, c.Tenant.Key, day.Format(time.DateOnly))
		if p.Archived {
			b.WriteString(" The project is archived.")
		}
		if p.Description != "" {
			fmt.Fprintf(&b, "\n\nDescription:\n%s", p.Description)
		}
		b.WriteString("\n\n# Open todos\n")
		overdue := writeTodoSections(&b, todos, day)
		if moreTodos {
			fmt.Fprintf(&b, "Only %d open todos are listed (every overdue one, up to %d, then the newest); list_todos with project_id pages through the rest.\n", len(todos), promptTodos)
		}
		b.WriteString("\n# Documents\n")
		if len(docs) == 0 {
			b.WriteString("The project has no documents.\n")
		}
		for _, d := range docs {
			fmt.Fprintf(&b, "- %s\n", documentHeader(d))
		}
		if moreDocs {
			b.WriteString("More documents follow: list_documents with project_id pages through them.\n")
		}
		b.WriteString("\nPlease write a short status report: where the project stands, what is late or at risk, and the next steps. " +
			"get_document reads a document whole (by id) when its content matters.")
		return &sdk.GetPromptResult{
			Description: fmt.Sprintf("Status of %q: %d open todos (%d overdue), %d documents", p.Name, len(todos), overdue, len(docs)),
			Messages:    []*sdk.PromptMessage{userText(b.String())},
		}, nil
	})
}

func projectKickoffPrompt() *Prompt {
	return newPrompt(PromptSpec{
		Name:  "project_kickoff",
		Title: "Kick off a project",
		Description: "Plans a new project with you and tells the model which tools set it up (create_project, add_todo, save_document). " +
			"The prompt itself creates nothing.",
		Role:  tenancy.Developer,
		Scope: identity.ScopeWrite,
		Args: []*promptArg{
			{name: "name", required: true, maxLen: 200, description: "the new project's name (1 to 200 characters)"},
			{name: "description", maxLen: 10000, description: "what the project is about: goal, scope, deadline"},
		},
	}, func(ctx context.Context, c *Call, args promptArgs) (*sdk.GetPromptResult, error) {
		name, desc := args["name"], args["description"]
		existing, err := store.FindActiveProjectByName(ctx, c.Tx, name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		var b strings.Builder
		fmt.Fprintf(&b, "Let's kick off the project %q in %s's workspace.\n", name, c.Tenant.Key)
		if desc != "" {
			fmt.Fprintf(&b, "\nWhat it is about:\n%s\n", desc)
		}
		b.WriteString("\nSteps (each change goes through a tool, with my permissions; ask me before each one):\n")
		if existing != nil {
			fmt.Fprintf(&b, "1. An active project named %q exists already (id %s): do not create another; use its id as project_id below.\n", existing.Name, existing.ID)
		} else {
			fmt.Fprintf(&b, "1. Create the project with create_project (name %q", name)
			if desc != "" {
				b.WriteString(", and the description above")
			}
			b.WriteString("); note the id it returns.\n")
		}
		b.WriteString("2. Ask me for anything the plan needs that is missing (goal, deadline, people), then propose 5 to 10 first todos with due dates and priorities.\n" +
			"3. Once I agree, add each todo with add_todo, passing the project's id as project_id.\n" +
			"4. Write a kick-off document with save_document: title \"" + name + " — kick-off\", tags [\"kickoff\"], the project's id as project_id, " +
			"and sections Goal, Scope, Milestones, Risks, Open questions.\n" +
			"5. Finish with a summary of what was created, with ids.\n")
		return &sdk.GetPromptResult{
			Description: fmt.Sprintf("Kick-off of the project %q", name),
			Messages:    []*sdk.PromptMessage{userText(b.String())},
		}, nil
	})
}

func summarizeDocumentsPrompt() *Prompt {
	return newPrompt(PromptSpec{
		Name:        "summarize_documents",
		Title:       "Summarise documents by tag",
		Description: "Embeds your organisation's documents with a tag (newest first, optionally of one project) and asks for a summary of each and of the set.",
		Role:        tenancy.Viewer,
		Scope:       identity.ScopeRead,
		Args: []*promptArg{
			{name: "tag", required: true, maxLen: store.MaxTagLength, complete: store.SuggestTags,
				description: "the tag of the documents to summarise (case does not matter)"},
			projectArg(false, "only the documents of this project"),
		},
	}, summarizeDocuments)
}

func summarizeDocuments(ctx context.Context, c *Call, args promptArgs) (*sdk.GetPromptResult, error) {
	tag := strings.ToLower(args["tag"])
	f := store.DocumentFilter{Tag: tag, Limit: promptDocuments}
	scope := c.Tenant.Key
	if ref := args["project"]; ref != "" {
		p, err := findProject(ctx, c, ref)
		if err != nil {
			return nil, err
		}
		f.ProjectID, scope = p.ID, fmt.Sprintf("the project %q of %s", p.Name, c.Tenant.Key)
	}
	docs, more, err := store.ListDocumentTexts(ctx, c.Tx, f, promptDocChars)
	if err != nil {
		return nil, err
	}
	if len(docs) == 0 {
		return nil, invalidArgs(fmt.Sprintf("argument \"tag\": no document of %s has the tag %q (completion suggests tags)", scope, tag))
	}
	msgs, embedded, skipped := embedDocuments(docs, promptBudgetChars)
	var b strings.Builder
	fmt.Fprintf(&b, "Summarise the documents tagged %q in %s. These %d follow, newest first, as embedded resources (by uri):\n", tag, scope, len(embedded))
	for _, d := range embedded {
		fmt.Fprintf(&b, "- %s\n", documentHeader(&d.DocumentInfo))
	}
	if len(skipped) > 0 || more {
		b.WriteString("Not embedded, to keep this prompt short (get_document reads one whole by id):\n")
		for _, d := range skipped {
			fmt.Fprintf(&b, "- %s\n", documentHeader(&d.DocumentInfo))
		}
		if more {
			fmt.Fprintf(&b, "- and older ones: list_documents with tag %q pages through them.\n", tag)
		}
	}
	b.WriteString("\nFor each document give its title and two or three sentences; then the themes the set shares, decisions made, and open questions. " +
		"Say where a document was cut short (its text then ends with a note).")
	return &sdk.GetPromptResult{
		Description: fmt.Sprintf("Summary of %d documents tagged %q", len(docs), tag),
		Messages:    append([]*sdk.PromptMessage{userText(b.String())}, msgs...),
	}, nil
}

// embedDocuments makes one message per document, its text an embedded
// gatehouse://documents/{id} resource, until budget characters of bodies
// are used; it returns the documents embedded and those left out. A body cut short (at
// promptDocChars by the query) ends with a note saying so.
func embedDocuments(docs []*store.Document, budget int) (msgs []*sdk.PromptMessage, embedded, skipped []*store.Document) {
	for _, d := range docs {
		n := len([]rune(d.Body))
		if n > budget {
			skipped = append(skipped, d)
			continue
		}
		budget -= n
		text := d.Body
		if len(d.Body) < d.Size {
			text += fmt.Sprintf("\n\n[cut: this is the first %d characters of %d bytes]", n, d.Size)
		}
		msgs = append(msgs, &sdk.PromptMessage{Role: "user", Content: &sdk.EmbeddedResource{
			Resource: &sdk.ResourceContents{URI: documentURI(d.ID), MIMEType: markdownMIMEType, Text: text},
		}})
		embedded = append(embedded, d)
	}
	return msgs, embedded, skipped
}
