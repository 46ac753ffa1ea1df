package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// ListDocumentTexts is [ListDocuments] with the documents' bodies, each cut
// to its first maxChars characters (DocumentInfo.Size stays the whole
// body's size in bytes), in one statement: for reading a set of documents
// at once (the summarize_documents prompt).
func ListDocumentTexts(ctx context.Context, tx pgx.Tx, f DocumentFilter, maxChars int) (docs []*Document, more bool, err error) {
	if f.Tag == "" && f.ProjectID == "" {
		// Filtered by tag or project, the best plan depends on how many
		// documents match (plans.go): those keep custom plans.
		ctx = GenericPlan(ctx)
	}
	if f.ProjectID != "" && !IsUUID(f.ProjectID) {
		return []*Document{}, false, nil
	}
	args := pgx.NamedArgs{"limit": f.Limit + 1, "max_chars": maxChars}
	q := "SELECT " + documentInfoColumns + ", left(body, @max_chars) FROM documents WHERE true"
	q += filterDocuments(args, f.Tag, f.ProjectID)
	if f.After != nil {
		q += " AND (created_at, id) < (@after_at, @after_id::uuid)"
		args["after_at"], args["after_id"] = f.After.CreatedAt, f.After.ID
	}
	rows, _ := tx.Query(ctx, q+" ORDER BY created_at DESC, id DESC LIMIT @limit", args)
	docs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Document, error) { return scanDocument(r) })
	if err != nil {
		return nil, false, err
	}
	if len(docs) > f.Limit {
		return docs[:f.Limit], true, nil
	}
	return docs, false, nil
}
