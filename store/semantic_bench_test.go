package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// BenchmarkSemanticSearch measures one semantic search (exact cosine over
// real[], the path without pgvector) of a tenant with the given number of
// chunks (ten per document) of the given vector size, and, as the same
// run's baseline, a full-text search of the same documents. It reports the
// 95th percentile latency (p95-ms) besides the mean. The figures and what
// they mean are in docs/scaling.md ("Semantic search"). With
// PGVECTOR_TESTS=1 (pgvector installed) it also measures the
// search through pgvector's HNSW index.
//
//	go test ./store/ -run '^$' -bench SemanticSearch -benchtime 5x
//	go test ./store/ -run '^$' -bench 'SemanticSearch/chunks=1000/' -benchtime 5x
func BenchmarkSemanticSearch(b *testing.B) {
	for _, c := range []struct{ chunks, dims int }{{1000, 768}, {5000, 768}, {50000, 256}, {50000, 768}} {
		b.Run(fmt.Sprintf("chunks=%d/dims=%d", c.chunks, c.dims), func(b *testing.B) { benchSemanticSearch(b, c.chunks, c.dims) })
	}
}

func benchSemanticSearch(b *testing.B, chunks, dims int) {
	db := storetest.MustOpenDB(b)
	tn := mustTenant(b, db, "acme.com")
	fillChunks(b, db, tn.Schema, chunks, dims)
	q := make([]float32, dims)
	for i := range q {
		q[i] = rand.Float32() - 0.5
	}
	b.Run("exact", func(b *testing.B) {
		timed(b, func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.SemanticCandidates(ctx, tx, store.VectorQuery{Vector: q, Model: "bench", Limit: 100})
			return err
		}, db, tn)
	})
	if os.Getenv("PGVECTOR_TESTS") == "1" { // pgvector installed (see TestPgvectorPath)
		ctx := context.Background()
		if _, err := db.Pool().Exec(ctx, "CREATE EXTENSION vector"); err != nil {
			b.Fatal(err)
		}
		v, _, err := db.FindVectorIndex(ctx, dims)
		if err == nil {
			err = db.EnsureVectorIndex(ctx, tn.Schema, v)
		}
		if err != nil {
			b.Fatal(err)
		}
		b.Run("hnsw", func(b *testing.B) {
			timed(b, func(ctx context.Context, tx pgx.Tx) error {
				_, err := store.SemanticCandidates(ctx, tx, store.VectorQuery{Vector: q, Model: "bench", Limit: 100, Index: v})
				return err
			}, db, tn)
		})
	}
	b.Run("keyword", func(b *testing.B) {
		timed(b, func(ctx context.Context, tx pgx.Tx) error {
			_, err := store.KeywordCandidates(ctx, tx, "alpha bravo", "", "", 100)
			return err
		}, db, tn)
	})
}

// timed runs fn b.N times in the tenant and reports the p95 latency.
func timed(b *testing.B, fn func(context.Context, pgx.Tx) error, db *store.DB, t *tenancy.Tenant) {
	ctx := context.Background()
	var ds []time.Duration
	for b.Loop() {
		start := time.Now()
		if err := db.WithTenant(ctx, t, func(tx pgx.Tx) error { return fn(ctx, tx) }); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[(len(ds)*95+99)/100-1].Microseconds())/1000, "p95-ms")
}

// fillChunks gives the tenant chunks/10 embedded documents of ten chunks
// each, with random vectors of dims and bodies of random words, made by
// the server (a minute for 50,000 chunks of 768).
func fillChunks(b testing.TB, db *store.DB, schema string, chunks, dims int) {
	ctx := context.Background()
	s := pgx.Identifier{schema}.Sanitize()
	sql := fmt.Sprintf(`
		INSERT INTO %[1]s.documents (title, body, created_by, embed_state, embed_model)
		SELECT 'doc ' || i, (SELECT string_agg((ARRAY['alpha','bravo','charlie','delta','echo','foxtrot','golf','hotel'])[1 + floor(random() * 8)::int], ' ')
			FROM generate_series(1, 200 + 0 * i)), 'bench', 'embedded', 'bench'
		FROM generate_series(1, %[2]d) i;
		INSERT INTO %[1]s.document_chunks (document_id, seq, start_at, end_at, embedding)
		SELECT d.id, s, s * 100, s * 100 + 100, (SELECT array_agg(random()::real - 0.5) FROM generate_series(1, %[3]d + s * 0))
		FROM %[1]s.documents d, generate_series(0, 9) s;
		ANALYZE %[1]s.documents; ANALYZE %[1]s.document_chunks`, s, chunks/10, dims)
	if _, err := db.Pool().Exec(ctx, sql); err != nil {
		b.Fatal(err)
	}
}
