package store_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

func unit(xs ...float32) []float32 {
	var n float64
	for _, x := range xs {
		n += float64(x * x)
	}
	for i := range xs {
		xs[i] /= float32(math.Sqrt(n))
	}
	return xs
}

// TestEmbeddingLifecycle: a saved document is pending, is claimed once,
// embedded, found by vector, pending again when its body changes (its old
// chunks stay until replaced, but do not rank), and its chunks go with it.
func TestEmbeddingLifecycle(t *testing.T) {
	db := storetest.MustOpenDB(t)
	tn := mustTenant(t, db, "acme.com")
	const model = "m@3"
	var a, b *store.Document
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) (err error) {
		if a, err = store.CreateDocument(ctx, tx, store.NewDocument{Title: "Alpha", Body: "first\n\nsecond part", CreatedBy: "t"}); err != nil {
			return err
		}
		b, err = store.CreateDocument(ctx, tx, store.NewDocument{Title: "Beta", Body: "other", Tags: []string{"x"}, CreatedBy: "t"})
		return err
	})
	var claimed []*store.DocumentToEmbed
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) (err error) {
		claimed, err = store.ClaimDocumentsToEmbed(ctx, tx, model, 10, time.Minute)
		return err
	})
	if len(claimed) != 2 {
		t.Fatalf("claimed %d documents, want 2", len(claimed))
	}
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
		again, err := store.ClaimDocumentsToEmbed(ctx, tx, model, 10, time.Minute)
		if len(again) != 0 {
			t.Errorf("claimed again within the lease: %d", len(again))
		}
		return err
	})
	vecs := map[string][]store.ChunkVector{
		a.ID: {{Start: 0, End: 5, Embedding: unit(1, 0, 0)}, {Start: 7, End: 18, Embedding: unit(0, 1, 0)}},
		b.ID: {{Start: 0, End: 5, Embedding: unit(0, 0.6, 0.8)}},
	}
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
		for _, d := range claimed {
			if ok, err := store.SaveEmbedding(ctx, tx, d, model, vecs[d.ID]); err != nil || !ok {
				t.Fatalf("SaveEmbedding(%s) = %v, %v", d.Title, ok, err)
			}
		}
		return nil
	})
	search := func(v []float32, tag string) []store.Candidate {
		var got []store.Candidate
		inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) (err error) {
			got, err = store.SemanticCandidates(ctx, tx, store.VectorQuery{Vector: v, Model: model, Tag: tag, Limit: 10})
			return err
		})
		return got
	}
	got := search(unit(0, 1, 0.1), "")
	if len(got) != 2 || got[0].ID != a.ID || got[0].Start != 7 || got[0].End != 18 || got[1].ID != b.ID {
		t.Fatalf("semantic ranking: %+v", got)
	}
	if got := search(unit(0, 1, 0.1), "x"); len(got) != 1 || got[0].ID != b.ID {
		t.Errorf("semantic ranking with a tag: %+v", got)
	}
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
		hits, err := store.FindSearchHits(ctx, tx, "part", got)
		// a matches the words: its snippet is the full-text one; b only
		// by vector: its snippet is its best chunk.
		if err != nil || len(hits) != 2 || !strings.Contains(hits[0].Snippet, "«part»") || hits[1].Snippet != "other" {
			t.Errorf("hits: %v", err)
			for _, h := range hits {
				t.Logf("%s %v %q", h.Title, h.Rank, h.Snippet)
			}
		}
		st, err := store.FindEmbeddingState(ctx, tx, a.ID, model)
		if err != nil || st.State != store.EmbedEmbedded || st.Chunks != 2 {
			t.Errorf("state of a: %+v %v", st, err)
		}
		if st, _ := store.FindEmbeddingState(ctx, tx, a.ID, "another"); st.State != store.EmbedPending {
			t.Errorf("state of a for another model: %+v", st)
		}
		// A change of tags keeps the embedding; a change of body does not.
		if _, err := store.UpdateDocument(ctx, tx, b.ID, store.DocumentUpdate{Tags: []string{"y"}}); err != nil {
			return err
		}
		body := "new"
		_, err = store.UpdateDocument(ctx, tx, a.ID, store.DocumentUpdate{Body: &body})
		return err
	})
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
		counts, err := store.CountEmbeddingStates(ctx, tx, model)
		if err != nil || counts[store.EmbedPending] != 1 || counts[store.EmbedEmbedded] != 1 {
			t.Errorf("counts after updates: %v %v", counts, err)
		}
		// The old claim of a is stale: its result is dropped.
		if ok, err := store.SaveEmbedding(ctx, tx, claimed[0], model, vecs[claimed[0].ID]); ok || err != nil {
			if claimed[0].ID == a.ID {
				t.Errorf("a stale claim was saved: %v %v", ok, err)
			}
		}
		return nil
	})
	if got := search(unit(0, 1, 0), ""); len(got) != 1 || got[0].ID != b.ID {
		t.Errorf("a pending document ranks: %+v", got)
	}
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := store.DeleteDocument(ctx, tx, a.ID); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM document_chunks WHERE document_id = $1", a.ID).Scan(&n); err != nil || n != 0 {
			t.Errorf("chunks of a deleted document: %d %v", n, err)
		}
		return nil
	})
}

// TestEmbeddingFailureBackOff: a retryable failure keeps the document
// pending and holds it back, doubling; the last attempt fails it for good
// (until the model changes); a permanent failure fails it at once.
func TestEmbeddingFailureBackOff(t *testing.T) {
	db := storetest.MustOpenDB(t)
	tn := mustTenant(t, db, "acme.com")
	const model = "m"
	var d *store.Document
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) (err error) {
		d, err = store.CreateDocument(ctx, tx, store.NewDocument{Title: "A", Body: "a", CreatedBy: "t"})
		return err
	})
	fail := store.EmbeddingFailure{Reason: "provider answered 500", Retry: true, Base: time.Hour, Cap: 4 * time.Hour, MaxAttempts: 3}
	for attempt := 1; attempt <= 3; attempt++ {
		inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "UPDATE documents SET embed_after = NULL"); err != nil {
				return err
			}
			docs, err := store.ClaimDocumentsToEmbed(ctx, tx, model, 10, time.Minute)
			if err != nil || len(docs) != 1 || docs[0].Attempts != attempt-1 {
				t.Fatalf("attempt %d: claimed %v %v", attempt, docs, err)
			}
			return store.RecordEmbeddingFailure(ctx, tx, docs, model, fail)
		})
		inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
			st, err := store.FindEmbeddingState(ctx, tx, d.ID, model)
			if err != nil {
				return err
			}
			want := store.EmbedPending
			if attempt == 3 {
				want = store.EmbedFailed
			}
			if st.State != want || st.Attempts != attempt || st.Error != fail.Reason {
				t.Errorf("after attempt %d: %+v", attempt, st)
			}
			if want == store.EmbedPending {
				wait := time.Until(*st.RetryAt)
				if lo := time.Hour << (attempt - 1); wait < lo-time.Minute || wait > lo {
					t.Errorf("after attempt %d: retry in %v, want %v", attempt, wait, lo)
				}
			}
			return nil
		})
	}
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
		if docs, _ := store.ClaimDocumentsToEmbed(ctx, tx, model, 10, time.Minute); len(docs) != 0 {
			t.Errorf("a failed document was claimed again")
		}
		docs, err := store.ClaimDocumentsToEmbed(ctx, tx, "new model", 10, time.Minute)
		if err != nil || len(docs) != 1 || docs[0].Attempts != 0 {
			t.Fatalf("a failed document with a new model: %v %v", docs, err)
		}
		if err := store.RecordEmbeddingFailure(ctx, tx, docs, "new model", store.EmbeddingFailure{Reason: "401", MaxAttempts: 5}); err != nil {
			return err
		}
		st, err := store.FindEmbeddingState(ctx, tx, d.ID, "new model")
		if err != nil || st.State != store.EmbedFailed || st.Attempts != 1 {
			t.Errorf("after a permanent failure: %+v %v", st, err)
		}
		return err
	})
}

// TestSemanticSearchRelations: the feature adds four relations to a
// tenant schema (document_chunks, its primary key, TOAST table and TOAST
// index) on the real[] path.
func TestSemanticSearchRelations(t *testing.T) {
	db := storetest.MustOpenDB(t)
	tn := mustTenant(t, db, "acme.com")
	var n int
	err := db.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pg_class c
		WHERE c.relnamespace = $1::regnamespace AND c.relname LIKE 'document_chunks%'
		   OR c.oid IN (SELECT reltoastrelid FROM pg_class WHERE relname = 'document_chunks' AND relnamespace = $1::regnamespace)
		   OR c.oid IN (SELECT i.indexrelid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
		                JOIN pg_class o ON o.reltoastrelid = t.oid WHERE o.relname = 'document_chunks' AND o.relnamespace = $1::regnamespace)`,
		pgx.Identifier{tn.Schema}.Sanitize()).Scan(&n)
	if err != nil || n != 4 {
		t.Errorf("relations of document_chunks: %d %v, want 4", n, err)
	}
}

// TestSemanticRankingTimeout: a ranking past its time limit is
// ErrRankingTooSlow, and the transaction goes on (the statement timeout
// restored).
func TestSemanticRankingTimeout(t *testing.T) {
	db := storetest.MustOpenDB(t)
	tn := mustTenant(t, db, "acme.com")
	fillChunks(t, db, tn.Schema, 2000, 256)
	q := make([]float32, 256)
	q[0] = 1
	inTenant(t, db, tn, func(ctx context.Context, tx pgx.Tx) error {
		_, err := store.SemanticCandidates(ctx, tx, store.VectorQuery{Vector: q, Model: "bench", Limit: 10, Timeout: time.Millisecond})
		if !errors.Is(err, store.ErrRankingTooSlow) {
			t.Fatalf("ranking 2,000 chunks within 1 ms: %v", err)
		}
		var timeout string
		if err := tx.QueryRow(ctx, "SELECT current_setting('statement_timeout')").Scan(&timeout); err != nil || timeout != "0" {
			t.Errorf("after the timeout: statement_timeout %q, %v", timeout, err)
		}
		hits, err := store.SemanticCandidates(ctx, tx, store.VectorQuery{Vector: q, Model: "bench", Limit: 10, Timeout: time.Minute})
		if err != nil || len(hits) != 10 {
			t.Errorf("with time enough: %d hits, %v", len(hits), err)
		}
		return nil
	})
}
