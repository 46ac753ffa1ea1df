package mcp

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// documentTools are the markdown documents of a tenant's workspace, also
// served as the resources gatehouse://documents/{id} (resources.go).
func documentTools() []*Tool {
	return []*Tool{saveDocumentTool(), getDocumentTool(), listDocumentsTool(), searchDocumentsTool(), deleteDocumentTool()}
}

// saveDocumentIn: without id a document is created (title and body
// required); with id the fields given replace the document's, the others
// keep their values.
type saveDocumentIn struct {
	ID           string   `json:"id,omitempty" jsonschema:"the id of the document to update; omit to create a document"`
	Title        *string  `json:"title,omitempty" jsonschema:"the title (1 to 300 characters); required to create"`
	Body         *string  `json:"body,omitempty" jsonschema:"the document in markdown (up to 1 MiB); required to create"`
	Tags         []string `json:"tags,omitempty" jsonschema:"up to 20 tags of 1 to 50 characters, stored in lower case; replaces the document's tags ([] removes them)"`
	ProjectID    *string  `json:"project_id,omitempty" jsonschema:"put the document in this active project"`
	ClearProject bool     `json:"clear_project,omitempty" jsonschema:"true: take the document out of its project"`
}

// documentOut is one document as a tool result; its text is the markdown.
type documentOut struct{ *store.Document }

func (d documentOut) Text() string {
	return documentHeader(&d.DocumentInfo) + "\n\n" + d.Body
}

func documentHeader(d *store.DocumentInfo) string {
	s := fmt.Sprintf("Document %q (id %s, uri %s, %d bytes", d.Title, d.ID, documentURI(d.ID), d.Size)
	if len(d.Tags) > 0 {
		s += ", tags " + strings.Join(d.Tags, ", ")
	}
	if d.ProjectID != nil {
		s += ", " + projectLabel(d.ProjectID, d.ProjectName)
	}
	return s + ")"
}

func saveDocumentTool() *Tool {
	return newTool(ToolSpec{
		Name:        "save_document",
		Title:       "Save a document",
		Description: "Creates a markdown document (without id: title and body required) or updates one (with id: the fields given replace the document's, the others stay). Returns the document's id, title, tags, project and size with the start of its body (get_document reads it whole); it is also readable as the resource gatehouse://documents/{id}.",
		Role:        tenancy.Developer,
		Scope:       identity.ScopeWrite,
		Input: func(s *jsonschema.Schema) {
			s.Properties["title"].MinLength, s.Properties["title"].MaxLength = new(1), new(300)
			s.Properties["body"].MinLength, s.Properties["body"].MaxLength = new(1), new(store.MaxDocumentBody)
			tagSchema(s.Properties["tags"].Items)
			s.Properties["tags"].MaxItems = new(store.MaxTags)
		},
	}, func(ctx context.Context, c *Call, in saveDocumentIn) (savedDocumentOut, error) {
		d, err := saveDocument(ctx, c, in)
		if err != nil || d.Document == nil {
			return savedDocumentOut{}, err
		}
		c.afterCommit = append(c.afterCommit, c.srv.semantic.kick)
		return savedDocumentOut{DocumentInfo: d.DocumentInfo, Excerpt: excerpt(d.Body, excerptRunes)}, nil
	})
}

// excerptRunes is how much of a saved document's body save_document echoes:
// enough to recognise it, not the body again (it can be 1 MiB).
const excerptRunes = 200

// savedDocumentOut is save_document's answer: the document without its
// body, and the body's start.
type savedDocumentOut struct {
	store.DocumentInfo
	Excerpt string `json:"excerpt" jsonschema:"the start of the body (get_document returns it whole)"`
}

func (o savedDocumentOut) Text() string {
	return "Saved. " + documentHeader(&o.DocumentInfo) + ". It begins:\n\n" + o.Excerpt
}

// excerpt is the first n characters of s, cut at a space where one is
// near, with "…" when something was left out.
func excerpt(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	cut := 0
	for i := range s {
		if n == 0 {
			cut = i
			break
		}
		n--
	}
	if sp := strings.LastIndexAny(s[:cut], " \n\t"); sp > cut*3/4 {
		cut = sp
	}
	return strings.TrimRight(s[:cut], " \n\t") + "…"
}

// saveDocument creates or updates a document (see saveDocumentIn).
func saveDocument(ctx context.Context, c *Call, in saveDocumentIn) (documentOut, error) {
	tags, err := normalizeTags(in.Tags)
	if err != nil {
		return documentOut{}, err
	}
	switch {
	case in.Title != nil && strings.TrimSpace(*in.Title) == "":
		return documentOut{}, invalidArgs("title must not be blank")
	case in.Body != nil && len(*in.Body) > store.MaxDocumentBody:
		return documentOut{}, invalidArgs(fmt.Sprintf("body is %d bytes; a document may have at most %d (1 MiB)", len(*in.Body), store.MaxDocumentBody))
	case in.ProjectID != nil && in.ClearProject:
		return documentOut{}, invalidArgs("give project_id or clear_project, not both")
	}
	if in.ID == "" {
		return createDocument(ctx, c, in, tags)
	}
	if in.Title == nil && in.Body == nil && in.Tags == nil && in.ProjectID == nil && !in.ClearProject {
		return documentOut{}, invalidArgs("nothing to change: give at least one of title, body, tags, project_id, clear_project")
	}
	if _, err := store.FindDocument(ctx, c.Tx, in.ID); err != nil {
		return documentOut{}, documentError(err, in.ID)
	}
	if in.ProjectID != nil {
		if err := activeProject(ctx, c, *in.ProjectID); err != nil {
			return documentOut{}, err
		}
	}
	d, err := store.UpdateDocument(ctx, c.Tx, in.ID, store.DocumentUpdate{Title: in.Title, Body: in.Body, Tags: tags,
		ProjectID: in.ProjectID, ClearProject: in.ClearProject})
	return documentOut{d}, documentError(err, in.ID)
}

func createDocument(ctx context.Context, c *Call, in saveDocumentIn, tags []string) (documentOut, error) {
	switch {
	case in.Title == nil || in.Body == nil:
		return documentOut{}, invalidArgs("title and body are required to create a document (to update one, give its id)")
	case in.ClearProject:
		return documentOut{}, invalidArgs("clear_project applies to updates only (give id)")
	}
	if in.ProjectID != nil {
		if err := activeProject(ctx, c, *in.ProjectID); err != nil {
			return documentOut{}, err
		}
	}
	d, err := store.CreateDocument(ctx, c.Tx, store.NewDocument{Title: *in.Title, Body: *in.Body, Tags: tags,
		ProjectID: in.ProjectID, CreatedBy: c.Principal.Subject})
	return documentOut{d}, err
}

func tagSchema(s *jsonschema.Schema) {
	s.MinLength, s.MaxLength = new(1), new(store.MaxTagLength)
}

// normalizeTags trims tags, lowercases them and drops duplicates (so
// filtering by tag ignores case); nil stays nil (no change).
func normalizeTags(tags []string) ([]string, error) {
	if tags == nil {
		return nil, nil
	}
	out := []string{}
	for _, t := range tags {
		t = strings.ToLower(strings.TrimSpace(t))
		if t == "" {
			return nil, invalidArgs("tags must not be blank")
		}
		if n := utf8.RuneCountInString(t); n > store.MaxTagLength {
			return nil, invalidArgs(fmt.Sprintf("tag %q has %d characters; the limit is %d", t, n, store.MaxTagLength))
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	if len(out) > store.MaxTags {
		return nil, invalidArgs(fmt.Sprintf("a document may have at most %d tags", store.MaxTags))
	}
	return out, nil
}

func documentError(err error, id string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound("document", id)
	}
	return err
}

type documentIDIn struct {
	ID string `json:"id" jsonschema:"the document's id"`
}

func getDocumentTool() *Tool {
	return newTool(ToolSpec{
		Name:        "get_document",
		Title:       "Get a document",
		Description: "Returns a document with its markdown body.",
		Role:        tenancy.Viewer,
		Scope:       identity.ScopeRead,
		ReadOnly:    true,
		Idempotent:  true,
	}, func(ctx context.Context, c *Call, in documentIDIn) (gotDocumentOut, error) {
		d, err := store.FindDocument(ctx, c.Tx, in.ID)
		if err != nil {
			return gotDocumentOut{}, documentError(err, in.ID)
		}
		out := gotDocumentOut{documentOut: documentOut{d}}
		sem := c.srv.semantic
		if on, err := sem.isEnabled(ctx, c.Tenant); err != nil || !on {
			return out, err
		}
		out.Embedding, err = store.FindEmbeddingState(ctx, c.Tx, d.ID, sem.client.Model())
		return out, documentError(err, in.ID)
	})
}

// gotDocumentOut is get_document's answer: the document and, where
// semantic search is on, the state of its embedding.
type gotDocumentOut struct {
	documentOut
	Embedding *store.EmbeddingState `json:"embedding,omitempty" jsonschema:"where semantic search is on: whether the document is embedded yet (pending, embedded, failed with the reason)"`
}

func (o gotDocumentOut) Text() string {
	if o.Embedding == nil {
		return o.documentOut.Text()
	}
	e := o.Embedding
	state := e.State
	switch {
	case e.State == store.EmbedEmbedded:
		state = fmt.Sprintf("embedded (%d chunks)", e.Chunks)
	case e.Error != "" && e.RetryAt != nil:
		state = fmt.Sprintf("pending: attempt %d failed (%s); next attempt at %s", e.Attempts, e.Error, e.RetryAt.UTC().Format(time.RFC3339))
	case e.Error != "":
		state = fmt.Sprintf("failed after %d attempts: %s", e.Attempts, e.Error)
	}
	return documentHeader(&o.DocumentInfo) + "\nSemantic search: " + state + "\n\n" + o.Body
}

type deletedDocumentOut struct {
	Deleted *store.DocumentInfo `json:"deleted" jsonschema:"the document as it was (without its body)"`
}

func (o deletedDocumentOut) Text() string {
	return fmt.Sprintf("Deleted document %q (id %s).", o.Deleted.Title, o.Deleted.ID)
}

func deleteDocumentTool() *Tool {
	return newTool(ToolSpec{
		Name:        "delete_document",
		Title:       "Delete a document",
		Description: "Deletes a document for good.",
		Role:        tenancy.Developer,
		Scope:       identity.ScopeWrite,
		Idempotent:  true,
		Destructive: true,
	}, func(ctx context.Context, c *Call, in documentIDIn) (deletedDocumentOut, error) {
		d, err := store.DeleteDocument(ctx, c.Tx, in.ID)
		return deletedDocumentOut{d}, documentError(err, in.ID)
	})
}

type listDocumentsIn struct {
	Tag       string `json:"tag,omitempty" jsonschema:"only documents with this tag (case does not matter)"`
	ProjectID string `json:"project_id,omitempty" jsonschema:"only the documents of this project"`
	Limit     int    `json:"limit,omitempty" jsonschema:"how many to return, 1 to 200 (default 50)"`
	Cursor    string `json:"cursor,omitempty" jsonschema:"next_cursor from the previous page"`
}

type listDocumentsOut struct {
	Documents  []*store.DocumentInfo `json:"documents" jsonschema:"the documents, without their bodies (get_document reads one)"`
	NextCursor string                `json:"next_cursor,omitempty" jsonschema:"pass as cursor to get the next page; absent on the last page"`
}

func (o listDocumentsOut) Text() string {
	if len(o.Documents) == 0 {
		return "No documents."
	}
	var b strings.Builder
	for _, d := range o.Documents {
		fmt.Fprintf(&b, "- %s\n", documentHeader(d))
	}
	if o.NextCursor != "" {
		fmt.Fprintf(&b, "More documents follow: call again with cursor %q.\n", o.NextCursor)
	}
	return b.String()
}

func listDocumentsTool() *Tool {
	return newTool(ToolSpec{
		Name:        "list_documents",
		Title:       "List documents",
		Description: "Lists your organisation's documents (without bodies), newest first; filter by tag and project; page with cursor.",
		Role:        tenancy.Viewer,
		Scope:       identity.ScopeRead,
		ReadOnly:    true,
		Idempotent:  true,
		Input: func(s *jsonschema.Schema) {
			tagSchema(s.Properties["tag"])
			pageLimitSchema(200)(s)
		},
	}, func(ctx context.Context, c *Call, in listDocumentsIn) (listDocumentsOut, error) {
		f := store.DocumentFilter{Tag: strings.ToLower(strings.TrimSpace(in.Tag)), ProjectID: in.ProjectID, Limit: pageLimit(in.Limit, 50)}
		if in.Cursor != "" {
			var pos store.DocumentPosition
			if err := c.Open("documents", in.Cursor, &pos); err != nil || !store.IsUUID(pos.ID) {
				return listDocumentsOut{}, errCursorRefused
			}
			f.After = &pos
		}
		if in.ProjectID != "" {
			if err := existingProject(ctx, c, in.ProjectID); err != nil {
				return listDocumentsOut{}, err
			}
		}
		docs, more, err := store.ListDocuments(ctx, c.Tx, f)
		if err != nil {
			return listDocumentsOut{}, err
		}
		out := listDocumentsOut{Documents: orEmpty(docs)}
		if more {
			last := docs[len(docs)-1]
			out.NextCursor = c.Seal("documents", store.DocumentPosition{CreatedAt: last.CreatedAt, ID: last.ID})
		}
		return out, nil
	})
}

type searchDocumentsIn struct {
	Query     string `json:"query" jsonschema:"what to look for, in web search syntax: words (all must match, in any form: deploying finds deploy), \"a quoted phrase\", or between alternatives, -word to exclude; up to 500 characters"`
	Tag       string `json:"tag,omitempty" jsonschema:"only documents with this tag"`
	ProjectID string `json:"project_id,omitempty" jsonschema:"only the documents of this project"`
	Limit     int    `json:"limit,omitempty" jsonschema:"how many to return, 1 to 50 (default 10)"`
	Cursor    string `json:"cursor,omitempty" jsonschema:"next_cursor from the previous page of the same search"`
	Mode      string `json:"mode,omitempty" jsonschema:"keyword (full text), semantic (by meaning: the query's embedding against the documents'), or hybrid (both rankings fused); default hybrid where semantic search is on for your organisation, else keyword"`
}

type searchDocumentsOut struct {
	Results    []*store.SearchHit `json:"results" jsonschema:"matching documents, best first, without their bodies"`
	NextCursor string             `json:"next_cursor,omitempty" jsonschema:"pass as cursor, with the same query and filters, to get the next page"`
	Note       string             `json:"note,omitempty" jsonschema:"why there are no results, when the query itself is the reason; or why a hybrid search ranked by words only"`
	Mode       string             `json:"mode" jsonschema:"how results were ranked: keyword (rank: full-text relevance), semantic (rank: cosine similarity of the best chunk) or hybrid (rank: reciprocal rank fusion score)"`
}

func (o searchDocumentsOut) Text() string {
	if len(o.Results) == 0 {
		if o.Note != "" {
			return "No documents found: " + o.Note
		}
		return "No documents found."
	}
	var b strings.Builder
	if o.Note != "" {
		fmt.Fprintf(&b, "Note: %s.\n", o.Note)
	}
	for _, h := range o.Results {
		fmt.Fprintf(&b, "- %s\n  %s\n", documentHeader(&h.DocumentInfo), h.Snippet)
	}
	if o.NextCursor != "" {
		fmt.Fprintf(&b, "More results follow: call again with cursor %q.\n", o.NextCursor)
	}
	return b.String()
}

// searchCursor is a place in one search's results: Search binds it to the
// query and filters, whose ranks it compares.
type searchCursor struct {
	Search string  `json:"s"`
	Rank   float32 `json:"r"`
	ID     string  `json:"i"`
}

func searchKey(s store.DocumentSearch, mode string) string {
	in := s.Query + "\x00" + s.Tag + "\x00" + s.ProjectID
	if mode != modeKeyword {
		in += "\x00" + mode // keyword cursors of earlier releases stay valid
	}
	h := sha256.Sum256([]byte(in))
	return base64.RawURLEncoding.EncodeToString(h[:12])
}

func searchDocumentsTool() *Tool {
	return newTool(ToolSpec{
		Name:  "search_documents",
		Title: "Search documents",
		Description: "Full-text search of your organisation's documents (English stemming: \"deploying\" finds \"deploy\"). " +
			"Results come best first: matches in the title rank highest, then in tags, then in the body. " +
			"Each result has a snippet of the best matching passages of the body, with every match marked «like this» " +
			"(guillemets, so they cannot be confused with the markdown of the body); passages are separated by \" … \". " +
			"A query of only common words (the, and, of) or punctuation finds nothing. Page with cursor. " +
			"Where an admin turned semantic search on (set_semantic_search), documents are also found by meaning: mode hybrid (the default then) " +
			"fuses the full-text and the semantic ranking, mode semantic ranks by meaning only (at most 100 results in all for both).",
		Role:       tenancy.Viewer,
		Scope:      identity.ScopeRead,
		ReadOnly:   true,
		Idempotent: true,
		// It opens its tenant transaction itself, after asking the
		// embeddings provider for the query's vector (semantic and hybrid
		// modes): no database connection waits on the provider.
		OwnConnection: true,
		Input: func(s *jsonschema.Schema) {
			s.Properties["query"].MinLength, s.Properties["query"].MaxLength = new(1), new(500)
			tagSchema(s.Properties["tag"])
			pageLimitSchema(50)(s)
			s.Properties["mode"].Enum = []any{modeKeyword, modeSemantic, modeHybrid}
		},
	}, func(ctx context.Context, c *Call, in searchDocumentsIn) (searchDocumentsOut, error) {
		s := store.DocumentSearch{Query: strings.TrimSpace(in.Query), Tag: strings.ToLower(strings.TrimSpace(in.Tag)),
			ProjectID: in.ProjectID, Limit: pageLimit(in.Limit, 10)}
		if s.Query == "" {
			return searchDocumentsOut{}, invalidArgs("query must not be empty: say what to look for (list_documents lists every document)")
		}
		mode, err := searchMode(ctx, c, in.Mode)
		if err != nil {
			return searchDocumentsOut{}, err
		}
		if in.Cursor != "" {
			var pos searchCursor
			if err := c.Open("search_documents", in.Cursor, &pos); err != nil || !store.IsUUID(pos.ID) {
				return searchDocumentsOut{}, errCursorRefused
			}
			if pos.Search != searchKey(s, mode) {
				return searchDocumentsOut{}, invalidArgs("cursor belongs to another search: repeat the same query, tag and project_id, or start again without a cursor")
			}
			s.After = &store.SearchPosition{Rank: pos.Rank, ID: pos.ID}
		}
		var q queryVector
		if mode != modeKeyword {
			q = embedQuery(ctx, c, s.Query, mode)
		}
		var out searchDocumentsOut
		err = c.srv.db.InTenantReadOnly(ctx, c.Tenant, func(ctx context.Context, tx pgx.Tx) error {
			c.Tx = tx
			defer func() { c.Tx = nil }()
			out, err = searchDocuments(ctx, c, s, mode, q)
			return err
		})
		return out, err
	})
}

// searchDocuments runs a search in c.Tx (see searchDocumentsTool); q is the
// query's vector for the semantic and hybrid modes.
func searchDocuments(ctx context.Context, c *Call, s store.DocumentSearch, mode string, q queryVector) (searchDocumentsOut, error) {
	if s.ProjectID != "" {
		if err := existingProject(ctx, c, s.ProjectID); err != nil {
			return searchDocumentsOut{}, err
		}
	}
	n, err := store.CountSearchTerms(ctx, c.Tx, s.Query)
	if err != nil {
		return searchDocumentsOut{}, err
	}
	if n == 0 && mode == modeKeyword {
		return searchDocumentsOut{Results: []*store.SearchHit{}, Mode: mode,
			Note: "the query has no searchable words (only very common words or punctuation); use more specific words"}, nil
	}
	out := searchDocumentsOut{Mode: mode}
	var hits []*store.SearchHit
	var more bool
	if mode == modeKeyword {
		hits, more, err = store.SearchDocuments(ctx, c.Tx, s)
	} else {
		out, hits, more, err = semanticSearch(ctx, c, s, mode, n, q)
	}
	if err != nil {
		return searchDocumentsOut{}, err
	}
	out.Results = orEmpty(hits)
	if more && len(hits) > 0 {
		last := hits[len(hits)-1]
		out.NextCursor = c.Seal("search_documents", searchCursor{Search: searchKey(s, mode), Rank: last.Rank, ID: last.ID})
	}
	return out, nil
}
