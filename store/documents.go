package store

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// DocumentInfo is a document without its body: what lists and searches
// return.
type DocumentInfo struct {
	ID        string   `json:"id"`
	Title     string   `json:"title"`
	Tags      []string `json:"tags"`
	ProjectID *string  `json:"project_id,omitempty"`
	// ProjectName is the project's name, read with the document.
	ProjectName *string   `json:"project_name,omitempty"`
	Size        int       `json:"size" jsonschema:"length of the body in bytes"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Document is a markdown document in a tenant's workspace.
type Document struct {
	DocumentInfo
	Body string `json:"body" jsonschema:"the document, in markdown"`
}

// SearchHit is a document found by [SearchDocuments].
type SearchHit struct {
	DocumentInfo
	Rank    float32 `json:"rank" jsonschema:"relevance: higher is better"`
	Snippet string  `json:"snippet" jsonschema:"the best matching passages of the body, matches marked «like this»"`
}

// Documents' limits, as the schema enforces them.
const (
	MaxDocumentBody = 1 << 20 // bytes
	MaxTags         = 20
	MaxTagLength    = 50 // characters
)

// NewDocument is a document to create.
type NewDocument struct {
	Title, Body string
	Tags        []string
	ProjectID   *string // nil: none
	CreatedBy   string
}

// DocumentUpdate changes the fields that are not nil (Tags: an empty,
// non-nil slice removes every tag); ClearProject takes the document out of
// its project.
type DocumentUpdate struct {
	Title, Body  *string
	Tags         []string
	ProjectID    *string
	ClearProject bool
}

// DocumentPosition is a place in the list order (newest first), for
// pagination.
type DocumentPosition struct {
	CreatedAt time.Time
	ID        string
}

// DocumentFilter selects documents.
type DocumentFilter struct {
	Tag       string // "": any
	ProjectID string // "": any project or none
	After     *DocumentPosition
	Limit     int
}

const (
	documentInfoColumns = "id, title, tags, project_id, " + projectNameOf + ", octet_length(body), created_by, created_at, updated_at"
	documentColumns     = documentInfoColumns + ", body"
)

func documentInfoFields(d *DocumentInfo) []any {
	return []any{&d.ID, &d.Title, &d.Tags, &d.ProjectID, &d.ProjectName, &d.Size, &d.CreatedBy, &d.CreatedAt, &d.UpdatedAt}
}

func scanDocument(row pgx.Row) (*Document, error) {
	var d Document
	err := row.Scan(append(documentInfoFields(&d.DocumentInfo), &d.Body)...)
	if errors.Is(err, pgx.ErrNoRows) || isForeignKeyViolation(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &d, nil
}

func scanDocumentInfo(row pgx.Row) (*DocumentInfo, error) {
	var d DocumentInfo
	err := row.Scan(documentInfoFields(&d)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// CreateDocument inserts a document in the tenant of tx. A project that
// does not exist is ErrNotFound.
func CreateDocument(ctx context.Context, tx pgx.Tx, n NewDocument) (*Document, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if n.ProjectID != nil && !IsUUID(*n.ProjectID) {
		return nil, ErrNotFound
	}
	if n.Tags == nil {
		n.Tags = []string{}
	}
	return scanDocument(tx.QueryRow(ctx, `INSERT INTO documents (title, body, tags, project_id, created_by)
		VALUES (@title, @body, @tags::text[], @project_id::uuid, @created_by) RETURNING `+documentColumns,
		pgx.NamedArgs{"title": n.Title, "body": n.Body, "tags": n.Tags, "project_id": n.ProjectID, "created_by": n.CreatedBy}))
}

// UpdateDocument changes a document and returns it; a new title or body
// makes its embedding pending. A project that does
// not exist is ErrNotFound, like a missing document: callers look the
// project up first to tell them apart.
func UpdateDocument(ctx context.Context, tx pgx.Tx, id string, u DocumentUpdate) (*Document, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if !IsUUID(id) || (u.ProjectID != nil && !IsUUID(*u.ProjectID)) {
		return nil, ErrNotFound
	}
	return scanDocument(tx.QueryRow(ctx, `UPDATE documents SET
		title = coalesce(@title::text, title),
		body = coalesce(@body::text, body),
		tags = coalesce(@tags::text[], tags),
		project_id = CASE WHEN @clear_project::boolean THEN NULL ELSE coalesce(@project_id::uuid, project_id) END,
		updated_at = clock_timestamp(),
		embed_state = CASE WHEN `+contentChanged+` THEN 'pending' ELSE embed_state END,
		embed_attempts = CASE WHEN `+contentChanged+` THEN 0 ELSE embed_attempts END,
		embed_after = CASE WHEN `+contentChanged+` THEN NULL ELSE embed_after END
		WHERE id = @id RETURNING `+documentColumns,
		pgx.NamedArgs{"id": id, "title": u.Title, "body": u.Body, "tags": u.Tags, "project_id": u.ProjectID, "clear_project": u.ClearProject}))
}

// contentChanged says whether an update changes what is embedded (the
// title or the body): the document is then pending again (semantic search).
const contentChanged = "(coalesce(@title::text, title) <> title OR coalesce(@body::text, body) <> body)"

// FindDocument returns the document with the given id.
func FindDocument(ctx context.Context, tx pgx.Tx, id string) (*Document, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if !IsUUID(id) {
		return nil, ErrNotFound
	}
	return scanDocument(tx.QueryRow(ctx, "SELECT "+documentColumns+" FROM documents WHERE id = $1", id))
}

// DeleteDocument deletes a document and returns what it was.
func DeleteDocument(ctx context.Context, tx pgx.Tx, id string) (*DocumentInfo, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	if !IsUUID(id) {
		return nil, ErrNotFound
	}
	return scanDocumentInfo(tx.QueryRow(ctx, "DELETE FROM documents WHERE id = $1 RETURNING "+documentInfoColumns, id))
}

// ListDocuments returns up to f.Limit documents (without bodies), newest
// first, and whether more follow.
func ListDocuments(ctx context.Context, tx pgx.Tx, f DocumentFilter) (docs []*DocumentInfo, more bool, err error) {
	if f.Tag == "" && f.ProjectID == "" {
		// Filtered by tag or project, the best plan depends on how many
		// documents match (plans.go): those keep custom plans.
		ctx = GenericPlan(ctx)
	}
	if f.ProjectID != "" && !IsUUID(f.ProjectID) {
		return []*DocumentInfo{}, false, nil
	}
	args := pgx.NamedArgs{"limit": f.Limit + 1}
	q := "SELECT " + documentInfoColumns + " FROM documents WHERE true"
	q += filterDocuments(args, f.Tag, f.ProjectID)
	if f.After != nil {
		q += " AND (created_at, id) < (@after_at, @after_id::uuid)"
		args["after_at"], args["after_id"] = f.After.CreatedAt, f.After.ID
	}
	rows, _ := tx.Query(ctx, q+" ORDER BY created_at DESC, id DESC LIMIT @limit", args)
	docs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*DocumentInfo, error) { return scanDocumentInfo(r) })
	if err != nil {
		return nil, false, err
	}
	if len(docs) > f.Limit {
		return docs[:f.Limit], true, nil
	}
	return docs, false, nil
}

// filterDocuments is the SQL condition (starting with AND) of the tag and
// project filters, adding their arguments to args.
func filterDocuments(args pgx.NamedArgs, tag, projectID string) string {
	var q string
	if tag != "" {
		q += " AND tags @> ARRAY[@tag::text]"
		args["tag"] = tag
	}
	if projectID != "" {
		q += " AND project_id = @project_id::uuid"
		args["project_id"] = projectID
	}
	return q
}

// DocumentSearch is a full-text search of documents.
type DocumentSearch struct {
	Query          string // web search syntax: words, "quoted phrases", or, -excluded
	Tag, ProjectID string // filters; "": any
	After          *SearchPosition
	Limit          int
}

// SearchPosition is a place in the order of search results (best first),
// for pagination.
type SearchPosition struct {
	Rank float32
	ID   string
}

// headlineOptions make snippets: up to two passages of 15 to 35 words with
// the matches between « and » (not markdown's ** or _, which the body uses).
const headlineOptions = `StartSel=«, StopSel=», MinWords=15, MaxWords=35, MaxFragments=2, FragmentDelimiter=" … "`

// CountSearchTerms returns how many terms and operators query has once
// parsed: 0 when it has only stop words or punctuation, which match nothing.
func CountSearchTerms(ctx context.Context, tx pgx.Tx, query string) (int, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	var n int
	err := tx.QueryRow(ctx, "SELECT numnode(websearch_to_tsquery('english'::regconfig, $1::text))", query).Scan(&n)
	return n, err
}

// SearchDocuments returns up to s.Limit documents matching s.Query, best
// first (ts_rank_cd: a match in the title weighs most, then in the tags,
// then in the body), each with a snippet, and whether more follow.
func SearchDocuments(ctx context.Context, tx pgx.Tx, s DocumentSearch) (hits []*SearchHit, more bool, err error) {
	if s.ProjectID != "" && !IsUUID(s.ProjectID) {
		return []*SearchHit{}, false, nil
	}
	args := pgx.NamedArgs{"limit": s.Limit + 1, "q": s.Query, "headline": headlineOptions}
	inner := `SELECT id, ts_rank_cd(search, q) AS rank, q FROM documents, websearch_to_tsquery('english'::regconfig, @q::text) q
		WHERE search @@ q` + filterDocuments(args, s.Tag, s.ProjectID)
	if s.After != nil {
		inner += " AND (ts_rank_cd(search, q), id) < (@after_rank::real, @after_id::uuid)"
		args["after_rank"], args["after_id"] = s.After.Rank, s.After.ID
	}
	rows, _ := tx.Query(ctx, `SELECT d.id, d.title, d.tags, d.project_id, (SELECT pn.name FROM projects pn WHERE pn.id = d.project_id),
		octet_length(d.body), d.created_by, d.created_at, d.updated_at,
		p.rank, ts_headline('english'::regconfig, left(d.body, 262144), p.q, @headline::text)
		FROM (`+inner+` ORDER BY rank DESC, id DESC LIMIT @limit) p JOIN documents d ON d.id = p.id
		ORDER BY p.rank DESC, p.id DESC`, args)
	hits, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*SearchHit, error) {
		var h SearchHit
		err := r.Scan(append(documentInfoFields(&h.DocumentInfo), &h.Rank, &h.Snippet)...)
		h.Snippet = strings.Join(strings.Fields(h.Snippet), " ")
		return &h, err
	})
	if err != nil {
		return nil, false, err
	}
	if len(hits) > s.Limit {
		return hits[:s.Limit], true, nil
	}
	return hits, false, nil
}
