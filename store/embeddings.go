package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Embedding states of a document (documents.embed_state).
const (
	EmbedPending  = "pending"
	EmbedEmbedded = "embedded"
	EmbedFailed   = "failed"
)

// SetSemanticSearch turns semantic search on or off for the admin's tenant
// (gatehouse.semantic_search: a row means on) and reports whether that
// changed anything. Turning it on makes the documents whose embedding
// failed pending again, so that they are retried.
func (a *Admin) SetSemanticSearch(ctx context.Context, on bool, by string) (changed bool, err error) {
	var tag interface{ RowsAffected() int64 }
	if on {
		tag, err = a.tx.Exec(ctx, `INSERT INTO gatehouse.semantic_search (tenant_id, enabled_by) VALUES ($1, $2)
			ON CONFLICT (tenant_id) DO NOTHING`, a.t.ID, by)
	} else {
		tag, err = a.tx.Exec(ctx, "DELETE FROM gatehouse.semantic_search WHERE tenant_id = $1", a.t.ID)
	}
	if err != nil || !on {
		return err == nil && tag.RowsAffected() > 0, err
	}
	// Back to the tenant's schema (search_path is already set) as its
	// owner, whom AsAdmin made us: documents are the tenant's.
	_, err = a.tx.Exec(ctx, `UPDATE documents SET embed_state = 'pending', embed_attempts = 0, embed_after = NULL
		WHERE embed_state = 'failed'`)
	return tag.RowsAffected() > 0, err
}

// SemanticSearchEnabled reports whether the tenant's admin turned semantic
// search on, and when and by whom.
func (db *DB) SemanticSearchEnabled(ctx context.Context, tenantID string) (on bool, by string, at time.Time, err error) {
	err = db.pool.QueryRow(ctx, "SELECT enabled_by, enabled_at FROM gatehouse.semantic_search WHERE tenant_id = $1", tenantID).Scan(&by, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, "", time.Time{}, nil
	}
	return err == nil, by, at, err
}

// FindSemanticSearchTenants returns the active tenants with semantic search
// on, oldest first.
func (db *DB) FindSemanticSearchTenants(ctx context.Context) ([]*tenancy.Tenant, error) {
	rows, _ := db.pool.Query(ctx, selectTenant+` WHERE status = 'active'
		AND id IN (SELECT tenant_id FROM gatehouse.semantic_search) ORDER BY created_at, key`)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*tenancy.Tenant, error) { return scanTenant(r) })
}

// DocumentToEmbed is a document claimed by [ClaimDocumentsToEmbed].
type DocumentToEmbed struct {
	ID, Title, Body string
	UpdatedAt       time.Time // the version claimed: results for another are dropped
	Attempts        int       // failed attempts so far
}

// ClaimDocumentsToEmbed takes up to n documents of tx's tenant that need
// embedding with model (pending ones, and those embedded or failed with
// another model), least recently changed first, and holds them back from
// other workers for lease. Documents locked by another transaction are
// skipped.
func ClaimDocumentsToEmbed(ctx context.Context, tx pgx.Tx, model string, n int, lease time.Duration) ([]*DocumentToEmbed, error) {
	rows, _ := tx.Query(ctx, `UPDATE documents d SET embed_after = clock_timestamp() + make_interval(secs => @lease)
		FROM (SELECT id FROM documents
			WHERE (embed_state = 'pending' OR embed_model <> @model) AND (embed_after IS NULL OR embed_after <= clock_timestamp())
			ORDER BY updated_at, id LIMIT @n FOR UPDATE SKIP LOCKED) c
		WHERE d.id = c.id
		RETURNING d.id, d.title, d.body, d.updated_at, CASE WHEN d.embed_model = @model THEN d.embed_attempts ELSE 0 END`,
		pgx.NamedArgs{"model": model, "n": n, "lease": lease.Seconds()})
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*DocumentToEmbed, error) {
		var d DocumentToEmbed
		return &d, r.Scan(&d.ID, &d.Title, &d.Body, &d.UpdatedAt, &d.Attempts)
	})
}

// ChunkVector is one embedded chunk: its place in the body (characters)
// and its unit-length vector.
type ChunkVector struct {
	Start, End int
	Embedding  []float32
}

// SaveEmbedding replaces d's chunks with chunks and marks it embedded with
// model, unless d changed (or went) since it was claimed: then it returns
// false and changes nothing (the caller rolls back; the new version is
// pending).
func SaveEmbedding(ctx context.Context, tx pgx.Tx, d *DocumentToEmbed, model string, chunks []ChunkVector) (bool, error) {
	tag, err := tx.Exec(ctx, `UPDATE documents SET embed_state = 'embedded', embed_model = $3, embed_error = '',
		embed_attempts = 0, embed_after = NULL WHERE id = $1 AND updated_at = $2`, d.ID, d.UpdatedAt, model)
	if err != nil || tag.RowsAffected() == 0 {
		return false, err
	}
	if _, err := tx.Exec(ctx, "DELETE FROM document_chunks WHERE document_id = $1", d.ID); err != nil {
		return false, err
	}
	starts, ends := make([]int32, len(chunks)), make([]int32, len(chunks))
	var flat []float32
	dims := 0
	if len(chunks) > 0 {
		dims = len(chunks[0].Embedding)
	}
	for i, c := range chunks {
		starts[i], ends[i] = int32(c.Start), int32(c.End)
		if len(c.Embedding) != dims {
			return false, errors.New("store: chunks of one document have vectors of different sizes")
		}
		flat = append(flat, c.Embedding...)
	}
	// One statement for every chunk: the vectors travel as one flat
	// array, cut into rows of dims by subscript.
	_, err = tx.Exec(ctx, `INSERT INTO document_chunks (document_id, seq, start_at, end_at, embedding)
		SELECT $1, s.seq - 1, s.start_at, s.end_at, ($4::real[])[(s.seq - 1) * $5 + 1 : s.seq * $5]
		FROM unnest($2::integer[], $3::integer[]) WITH ORDINALITY s(start_at, end_at, seq)`,
		d.ID, starts, ends, flat, dims)
	return err == nil, err
}

// EmbeddingFailure records a failed attempt at embedding documents.
type EmbeddingFailure struct {
	Reason string
	// Retry: the attempt may succeed later; the documents stay pending
	// and are held back for Base × 2^(attempts so far), at most Cap (and
	// at least RetryAfter), until MaxAttempts have failed. Otherwise (or
	// then) they are failed.
	Retry       bool
	Base, Cap   time.Duration
	RetryAfter  time.Duration
	MaxAttempts int
}

// RecordEmbeddingFailure applies f to the documents, unless they changed
// since they were claimed.
func RecordEmbeddingFailure(ctx context.Context, tx pgx.Tx, docs []*DocumentToEmbed, model string, f EmbeddingFailure) error {
	ids, ats := make([]string, len(docs)), make([]time.Time, len(docs))
	for i, d := range docs {
		ids[i], ats[i] = d.ID, d.UpdatedAt
	}
	// n: the attempts with this model, this one included.
	const n = "(CASE WHEN d.embed_model = @model THEN d.embed_attempts ELSE 0 END + 1)"
	_, err := tx.Exec(ctx, `UPDATE documents d SET
		embed_attempts = `+n+`,
		embed_error = @reason,
		embed_model = @model,
		embed_state = CASE WHEN @retry AND `+n+` < @max THEN 'pending' ELSE 'failed' END,
		embed_after = CASE WHEN @retry AND `+n+` < @max THEN clock_timestamp() + make_interval(secs =>
			greatest(@retry_after, least(@cap, @base * power(2, `+n+` - 1)))) END
		FROM unnest(@ids::uuid[], @ats::timestamptz[]) c(id, updated_at)
		WHERE d.id = c.id AND d.updated_at = c.updated_at`,
		pgx.NamedArgs{"ids": ids, "ats": ats, "reason": f.Reason, "model": model, "retry": f.Retry, "max": f.MaxAttempts,
			"base": f.Base.Seconds(), "cap": f.Cap.Seconds(), "retry_after": f.RetryAfter.Seconds()})
	return err
}

// EmbeddingState is a document's embedding as get_document shows it.
type EmbeddingState struct {
	State    string     `json:"state" jsonschema:"pending, embedded or failed"`
	Error    string     `json:"error,omitempty" jsonschema:"why the last attempt failed"`
	Attempts int        `json:"attempts,omitempty" jsonschema:"failed attempts so far"`
	Chunks   int        `json:"chunks,omitempty" jsonschema:"how many chunks of the document are embedded"`
	RetryAt  *time.Time `json:"retry_at,omitempty" jsonschema:"when the next attempt is due, after a failed one"`
}

// FindEmbeddingState returns the document's embedding state for model: a
// document embedded or failed with another model is pending.
func FindEmbeddingState(ctx context.Context, tx pgx.Tx, id, model string) (*EmbeddingState, error) {
	if !IsUUID(id) {
		return nil, ErrNotFound
	}
	var s EmbeddingState
	var after *time.Time
	var current bool
	err := tx.QueryRow(ctx, `SELECT embed_state, embed_error, embed_attempts, embed_after, embed_model = $2,
		(SELECT count(*) FROM document_chunks WHERE document_id = d.id) FROM documents d WHERE id = $1`, id, model).
		Scan(&s.State, &s.Error, &s.Attempts, &after, &current, &s.Chunks)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	switch {
	case !current && s.State != EmbedPending:
		s = EmbeddingState{State: EmbedPending}
	case s.State == EmbedPending && s.Attempts > 0:
		s.RetryAt = after
	}
	if s.State != EmbedEmbedded {
		s.Chunks = 0
	}
	return &s, nil
}

// CountEmbeddingStates counts tx's tenant's documents by embedding state
// for model (as [FindEmbeddingState] tells them).
func CountEmbeddingStates(ctx context.Context, tx pgx.Tx, model string) (map[string]int, error) {
	rows, _ := tx.Query(ctx, `SELECT CASE WHEN embed_model = $1 THEN embed_state ELSE 'pending' END, count(*)
		FROM documents GROUP BY 1`, model)
	counts := map[string]int{EmbedPending: 0, EmbedEmbedded: 0, EmbedFailed: 0}
	var state string
	var n int
	_, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error { counts[state] += n; return nil })
	return counts, err
}
