package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// VectorIndex is the pgvector extension where it is installed: vectors are
// then ranked by its cosine distance operator through an HNSW index on
// embedding::vector(Dims) (one per tenant with semantic search on, created
// by [DB.EnsureVectorIndex]). Without it, ranking is exact: the dot
// product of the real[] vectors, computed for every chunk.
type VectorIndex struct {
	Schema  string // the extension's schema (public, usually)
	Version string
	Dims    int // the index's vector size: the configured dimensions
}

// FindVectorIndex reports whether pgvector is installed in the database
// (CREATE EXTENSION vector); nil when it is not. dims is the configured
// vector size; the index needs one, of at most 2,000 (HNSW's limit for the
// vector type), else FindVectorIndex returns nil and a reason.
func (db *DB) FindVectorIndex(ctx context.Context, dims int) (*VectorIndex, string, error) {
	var v VectorIndex
	err := db.pool.QueryRow(ctx, `SELECT n.nspname, e.extversion FROM pg_extension e
		JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'`).Scan(&v.Schema, &v.Version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, "pgvector is not installed", nil
	case err != nil:
		return nil, "", err
	case dims <= 0 || dims > 2000:
		return nil, fmt.Sprintf("pgvector %s is installed, but its HNSW index needs configured dimensions of 1 to 2000", v.Version), nil
	}
	v.Dims = dims
	return &v, "", nil
}

// vectorType is vector(Dims), qualified with the extension's schema (the
// tenant transaction's search_path is the tenant schema only).
func (v *VectorIndex) vectorType() string {
	return fmt.Sprintf("%s.vector(%d)", pgx.Identifier{v.Schema}.Sanitize(), v.Dims)
}

// EnsureVectorIndex makes sure the tenant's HNSW index on its chunks'
// vectors of v.Dims dimensions exists and is valid (pgvector's
// documentation: "HNSW", cosine distance, expression and partial
// indexes), building it concurrently, so writes go on meanwhile, when it
// is missing or a build left it invalid. It returns nil once the index is
// valid; [ErrIndexBuilding] while another session builds it; an error
// wrapping [ErrIndexBuildLocked] when a lock held by another session held
// the build up for longer than its bound (see index_build.go); or the
// build's error.
func (db *DB) EnsureVectorIndex(ctx context.Context, schema string, v *VectorIndex) error {
	return db.ensureIndexConcurrently(ctx, schema, "document_chunks", v.indexName(),
		fmt.Sprintf("USING hnsw ((embedding::%s) %s.vector_cosine_ops) WHERE cardinality(embedding) = %d",
			v.vectorType(), pgx.Identifier{v.Schema}.Sanitize(), v.Dims))
}

// indexName is the name of v's HNSW index in each tenant's schema.
func (v *VectorIndex) indexName() string { return fmt.Sprintf("document_chunks_hnsw_%d", v.Dims) }

// VectorIndexReady reports whether schema's HNSW index for v exists and is
// valid (pg_index.indisvalid), whoever built it: this process, another
// replica, an operator. One catalog read; it builds nothing.
func (db *DB) VectorIndexReady(ctx context.Context, schema string, v *VectorIndex) (bool, error) {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	valid, err := indexValid(ctx, conn.Conn(), schema, v.indexName())
	return valid != nil && *valid, err
}

// VectorQuery ranks a tenant's documents by their chunks' similarity to a
// query's vector.
type VectorQuery struct {
	Vector         []float32 // unit length
	Model          string    // documents embedded with another model are left out
	Tag, ProjectID string
	Limit          int
	Index          *VectorIndex // nil: exact ranking over real[]
	// Timeout, when > 0, bounds the ranking (its own savepoint and
	// statement_timeout): past it, SemanticCandidates returns
	// ErrRankingTooSlow and tx is usable as before.
	Timeout time.Duration
}

// ErrRankingTooSlow: the semantic ranking did not finish within its
// VectorQuery.Timeout (the exact path over many chunks; see
// docs/scaling.md, "Semantic search").
var ErrRankingTooSlow = errors.New("store: the semantic ranking took longer than its time limit")

// Candidate is a document found by one ranking, with its score; a
// semantic candidate also has its best chunk's place in the body.
type Candidate struct {
	ID         string
	Score      float32
	Start, End int
}

// SemanticCandidates returns the q.Limit documents whose best chunk is the
// most similar to q.Vector (cosine similarity), best first.
func SemanticCandidates(ctx context.Context, tx pgx.Tx, q VectorQuery) ([]Candidate, error) {
	if q.ProjectID != "" && !IsUUID(q.ProjectID) {
		return nil, nil
	}
	if rt, ok := tx.(*readTx); ok {
		return pipelinedCandidates(ctx, rt, q)
	}
	if q.Timeout <= 0 {
		return semanticCandidates(ctx, tx, q)
	}
	var old string
	if err := tx.QueryRow(ctx, "SELECT current_setting('statement_timeout')").Scan(&old); err != nil {
		return nil, err
	}
	sp, err := tx.Begin(ctx) // a savepoint: a cancelled statement leaves tx usable
	if err != nil {
		return nil, err
	}
	var hits []Candidate
	_, err = sp.Exec(ctx, "SELECT set_config('statement_timeout', $1, true)", strconv.FormatInt(max(1, q.Timeout.Milliseconds()), 10))
	if err == nil {
		hits, err = semanticCandidates(ctx, sp, q)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "57014" && ctx.Err() == nil {
		err = ErrRankingTooSlow
	}
	if err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return nil, rerr
		}
		return nil, err
	}
	if err := sp.Commit(ctx); err != nil {
		return nil, err
	}
	_, err = tx.Exec(ctx, "SELECT set_config('statement_timeout', $1, true)", old)
	return hits, err
}

// pipelinedCandidates is SemanticCandidates in a pipelined read
// ([DB.InTenantReadOnly]), where each statement is its own implicit
// transaction: the ranking's settings (its time limit, the index's) travel
// in the same message as the ranking, so they apply to it alone and end
// with it; a cancelled ranking leaves nothing to undo.
func pipelinedCandidates(ctx context.Context, tx *readTx, q VectorQuery) ([]Candidate, error) {
	sql, args, settings := candidatesSQL(q)
	if q.Timeout > 0 {
		settings = append(settings, "statement_timeout", strconv.FormatInt(max(1, q.Timeout.Milliseconds()), 10))
	}
	b := &pgx.Batch{}
	for i := 0; i < len(settings); i += 2 {
		b.Queue("SELECT set_config($1, $2, true)", settings[i], settings[i+1])
	}
	b.Queue(sql, args)
	br := tx.SendBatch(ctx, b)
	defer br.Close()
	for i := 0; i < len(settings); i += 2 {
		if _, err := br.Exec(); err != nil {
			return nil, err
		}
	}
	rows, _ := br.Query()
	hits, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Candidate, error) {
		var c Candidate
		return c, r.Scan(&c.ID, &c.Score, &c.Start, &c.End)
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "57014" && ctx.Err() == nil {
		err = ErrRankingTooSlow
	}
	return hits, err
}

func semanticCandidates(ctx context.Context, tx pgx.Tx, q VectorQuery) (hits []Candidate, err error) {
	sql, args, settings := candidatesSQL(q)
	if len(settings) > 0 {
		// In a transaction the settings last until its end: each is set
		// back once the ranking is done.
		olds := make([]string, 0, len(settings)/2)
		for i := 0; i < len(settings); i += 2 {
			var old string
			if err := tx.QueryRow(ctx, "SELECT coalesce(current_setting($1, true), ''), set_config($1, $2, true)", settings[i], settings[i+1]).Scan(&old, new(string)); err != nil {
				return nil, err
			}
			olds = append(olds, old)
		}
		defer func() {
			for i := 0; err == nil && i < len(olds); i++ {
				if olds[i] != "" { // a setting not known before (a library not yet loaded): it ends with the transaction
					_, err = tx.Exec(ctx, "SELECT set_config($1, $2, true)", settings[2*i], olds[i])
				}
			}
		}()
	}
	rows, _ := tx.Query(ctx, sql, args)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Candidate, error) {
		var c Candidate
		return c, r.Scan(&c.ID, &c.Score, &c.Start, &c.End)
	})
}

// candidatesSQL is the ranking statement of q, its arguments, and the
// settings (name, value pairs) it must run under.
func candidatesSQL(q VectorQuery) (sql string, args pgx.NamedArgs, settings []string) {
	args = pgx.NamedArgs{"v": q.Vector, "model": q.Model, "dims": len(q.Vector), "n": q.Limit}
	// The model setting fixes the vectors' size (the exact path need not
	// check it, which would read every vector twice).
	where := `d.embed_state = 'embedded' AND d.embed_model = @model` + filterDocuments(args, q.Tag, q.ProjectID)
	var chunks string
	if v := q.Index; v != nil && v.Dims == len(q.Vector) {
		// The index finds the 400 nearest chunks (hnsw.ef_search of them)
		// in a subquery of document_chunks alone, where the planner can
		// use it; the documents' conditions apply to what it found. Its
		// estimate of the partial index predicate's rows is far too low,
		// which makes a sequential scan look cheaper: it is turned off
		// for this statement.
		settings = []string{"hnsw.ef_search", "400", "enable_seqscan", "off"}
		ext, vt := pgx.Identifier{v.Schema}.Sanitize(), v.vectorType()
		dist := fmt.Sprintf("(c.embedding::%s OPERATOR(%s.<=>) @v::real[]::%s)", vt, ext, vt)
		chunks = `SELECT c.document_id, c.start_at, c.end_at, (1 - c.dist)::real AS score
			FROM (SELECT c.document_id, c.start_at, c.end_at, ` + dist + ` AS dist FROM document_chunks c
				WHERE cardinality(c.embedding) = @dims ORDER BY ` + dist + ` LIMIT 400) c
			JOIN documents d ON d.id = c.document_id WHERE ` + where
	} else {
		chunks = `SELECT c.document_id, c.start_at, c.end_at,
			(SELECT sum(x * y) FROM unnest(c.embedding, @v::real[]) t(x, y))::real AS score
			FROM document_chunks c JOIN documents d ON d.id = c.document_id WHERE ` + where
	}
	sql = `SELECT document_id, score, start_at, end_at FROM (
		SELECT DISTINCT ON (document_id) * FROM (` + chunks + `) c ORDER BY document_id, score DESC) best
		ORDER BY score DESC, document_id DESC LIMIT @n`
	return sql, args, settings
}

// KeywordCandidates returns the n documents that best match the full-text
// query (as [SearchDocuments] ranks them), best first.
func KeywordCandidates(ctx context.Context, tx pgx.Tx, query, tag, projectID string, n int) ([]Candidate, error) {
	if projectID != "" && !IsUUID(projectID) {
		return nil, nil
	}
	args := pgx.NamedArgs{"q": query, "n": n}
	rows, _ := tx.Query(ctx, `SELECT id, ts_rank_cd(search, q) AS rank FROM documents, websearch_to_tsquery('english'::regconfig, @q::text) q
		WHERE search @@ q`+filterDocuments(args, tag, projectID)+` ORDER BY rank DESC, id DESC LIMIT @n`, args)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Candidate, error) {
		var c Candidate
		return c, r.Scan(&c.ID, &c.Score)
	})
}

// SnippetWords is how many words of the best chunk a semantic hit's
// snippet shows when no word of the query matches.
const SnippetWords = 35

// FindSearchHits returns the documents of hits (in their order) with their
// snippets: the full-text passages matching query when any word of it
// matches, else the start of the document's best chunk (hits[i].Start to
// End). Ranks are the hits' scores. Documents deleted meanwhile are left
// out.
func FindSearchHits(ctx context.Context, tx pgx.Tx, query string, hits []Candidate) ([]*SearchHit, error) {
	ids, starts, ends, scores := make([]string, len(hits)), make([]int32, len(hits)), make([]int32, len(hits)), make([]float32, len(hits))
	for i, h := range hits {
		ids[i], starts[i], ends[i], scores[i] = h.ID, int32(h.Start), int32(h.End), h.Score
	}
	rows, _ := tx.Query(ctx, `SELECT d.id, d.title, d.tags, d.project_id, (SELECT pn.name FROM projects pn WHERE pn.id = d.project_id),
		octet_length(d.body), d.created_by, d.created_at, d.updated_at, s.score,
		CASE WHEN d.search @@ q THEN ts_headline('english'::regconfig, left(d.body, 262144), q, @headline::text)
			ELSE substr(d.body, s.start_at + 1, least(s.end_at - s.start_at, 2000)) END
		FROM unnest(@ids::uuid[], @starts::integer[], @ends::integer[], @scores::real[]) WITH ORDINALITY s(id, start_at, end_at, score, ord)
		JOIN documents d ON d.id = s.id, websearch_to_tsquery('english'::regconfig, @q::text) q
		ORDER BY s.ord`,
		pgx.NamedArgs{"ids": ids, "starts": starts, "ends": ends, "scores": scores, "q": query, "headline": headlineOptions})
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*SearchHit, error) {
		var h SearchHit
		err := r.Scan(append(documentInfoFields(&h.DocumentInfo), &h.Rank, &h.Snippet)...)
		words := strings.Fields(h.Snippet)
		if !strings.Contains(h.Snippet, "«") && len(words) > SnippetWords {
			words = append(words[:SnippetWords], "…")
		}
		h.Snippet = strings.Join(words, " ")
		return &h, err
	})
}
