package store_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestPgvectorPath runs semantic ranking through pgvector's HNSW index and
// compares it with the exact ranking. pgvector is not packaged for the
// PostgreSQL this project's machines run (Debian 12, PostgreSQL 15), so
// the test runs only where someone installed it into the PostgreSQL the
// tests start and asks for it: PGVECTOR_TESTS=1 (see
// docs/scaling.md, "Semantic search").
func TestPgvectorPath(t *testing.T) {
	if os.Getenv("PGVECTOR_TESTS") != "1" {
		t.Skip("set PGVECTOR_TESTS=1 where pgvector is installed into the PostgreSQL the tests use")
	}
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	if v, why, err := db.FindVectorIndex(ctx, 64); v != nil || err != nil {
		t.Fatalf("before CREATE EXTENSION: %+v %q %v", v, why, err)
	}
	if _, err := db.Pool().Exec(ctx, "CREATE EXTENSION vector"); err != nil {
		t.Fatal(err)
	}
	if v, why, _ := db.FindVectorIndex(ctx, 0); v != nil || why == "" {
		t.Errorf("without dimensions: %+v %q", v, why)
	}
	v, why, err := db.FindVectorIndex(ctx, 64)
	if err != nil || v == nil {
		t.Fatalf("FindVectorIndex: %v %q %v", v, why, err)
	}
	tn := mustTenant(t, db, "acme.com")
	fillChunks(t, db, tn.Schema, 20000, 64)
	if err := db.EnsureVectorIndex(ctx, tn.Schema, v); err != nil {
		t.Fatal(err)
	}
	if err := db.EnsureVectorIndex(ctx, tn.Schema, v); err != nil {
		t.Fatalf("again: %v", err)
	}
	var q []float32
	var target string
	if err := db.Pool().QueryRow(ctx, fmt.Sprintf("SELECT document_id, embedding FROM %s.document_chunks LIMIT 1",
		pgx.Identifier{tn.Schema}.Sanitize())).Scan(&target, &q); err != nil {
		t.Fatal(err)
	}
	idxScans := func() int64 {
		var n int64
		if err := db.Pool().QueryRow(ctx, `SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes
			WHERE schemaname = $1 AND indexrelname = 'document_chunks_hnsw_64'`, tn.Schema).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rank := func(index *store.VectorIndex) ([]store.Candidate, time.Duration) {
		var hits []store.Candidate
		start := time.Now()
		inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) (err error) {
			hits, err = store.SemanticCandidates(ctx, tx, store.VectorQuery{Vector: q, Model: "bench", Limit: 10, Index: index, Timeout: time.Minute})
			if err != nil {
				return err
			}
			var seqscan string
			// (pg_stat_force_next_flush: this backend's index scans count
			// in pg_stat_user_indexes at once, not within 10 s.)
			if err := tx.QueryRow(ctx, "SELECT current_setting('enable_seqscan') FROM pg_stat_force_next_flush()").Scan(&seqscan); err != nil || seqscan != "on" {
				t.Errorf("enable_seqscan after the ranking: %q %v", seqscan, err)
			}
			return nil
		})
		return hits, time.Since(start)
	}
	exact, te := rank(nil)
	before := idxScans()
	approx, ta := rank(v)
	t.Logf("20,000 chunks of 64: exact %v, HNSW %v", te, ta)
	for deadline := time.Now().Add(5 * time.Second); idxScans() == before; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the HNSW index was not used")
		}
	}
	if len(approx) != 10 || approx[0].ID != target || exact[0].ID != target {
		t.Fatalf("best document: exact %v, HNSW %v, want %s", exact[:1], approx, target)
	}
	same := 0
	for _, a := range approx {
		for _, e := range exact {
			if a.ID == e.ID {
				same++
			}
		}
	}
	if same < 8 {
		t.Errorf("HNSW's top 10 shares %d documents with the exact top 10", same)
	}
}
