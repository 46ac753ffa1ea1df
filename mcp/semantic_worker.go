package mcp

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/internal/embeddings"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// embedBatch claims up to BatchDocs documents of t, embeds their chunks
// (requests of at most embeddings.MaxBatch inputs, all from t) and stores
// the vectors. Documents whose chunks all came back are saved even when a
// later request fails; the others get the failure. It reports whether
// there was anything to do.
func (s *semantic) embedBatch(ctx context.Context, t *tenancy.Tenant) (bool, error) {
	model := s.client.Model()
	var docs []*store.DocumentToEmbed
	err := s.db.InTenantBackground(ctx, t, func(ctx context.Context, tx pgx.Tx) (err error) {
		docs, err = store.ClaimDocumentsToEmbed(ctx, tx, model, s.opts.BatchDocs, s.opts.Lease)
		return err
	})
	if err != nil || len(docs) == 0 {
		return false, err
	}
	type piece struct {
		doc   int
		chunk embeddings.Chunk
	}
	var pieces []piece
	for i, d := range docs {
		for _, c := range embeddings.Split(d.Title, d.Body, 0) {
			pieces = append(pieces, piece{i, c})
		}
	}
	vectors := make([][]store.ChunkVector, len(docs))
	done := 0 // pieces embedded
	var failure error
	for done < len(pieces) {
		n := min(embeddings.MaxBatch, len(pieces)-done)
		inputs := make([]string, n)
		for i := range n {
			inputs[i] = pieces[done+i].chunk.Text
		}
		vs, err := s.client.Embed(ctx, inputs)
		s.countRequest("documents", err)
		if err != nil {
			failure = err
			break
		}
		for i, v := range vs {
			p := pieces[done+i]
			vectors[p.doc] = append(vectors[p.doc], store.ChunkVector{Start: p.chunk.Start, End: p.chunk.End, Embedding: v})
		}
		done += n
	}
	if ctx.Err() != nil {
		return true, ctx.Err() // the lease runs out; another round retries
	}
	// Documents are complete when every piece of theirs is done.
	var saved, failed []*store.DocumentToEmbed
	firstUndone := len(docs)
	if done < len(pieces) {
		firstUndone = pieces[done].doc
	}
	err = s.db.InTenantBackground(ctx, t, func(ctx context.Context, tx pgx.Tx) error {
		saved, failed = saved[:0], failed[:0]
		for i, d := range docs {
			if i >= firstUndone {
				failed = append(failed, d)
				continue
			}
			ok, err := store.SaveEmbedding(ctx, tx, d, model, vectors[i])
			if err != nil {
				return err
			}
			if ok {
				saved = append(saved, d)
			}
		}
		if len(failed) == 0 {
			return nil
		}
		return store.RecordEmbeddingFailure(ctx, tx, failed, model, s.failure(failure))
	})
	if err != nil {
		return true, err
	}
	s.documents.WithLabelValues("embedded").Add(float64(len(saved)))
	for _, v := range vectors[:min(firstUndone, len(vectors))] {
		s.chunks.Add(float64(len(v)))
	}
	if len(failed) > 0 {
		f := s.failure(failure)
		for _, d := range failed {
			if f.Retry && d.Attempts+1 < f.MaxAttempts {
				s.documents.WithLabelValues("retry").Inc()
			} else {
				s.documents.WithLabelValues("failed").Inc()
			}
		}
	}
	return true, nil
}

// failure describes a failed request for the documents it leaves undone;
// a rate limit also pauses the worker for the provider's Retry-After (or
// the first back-off).
func (s *semantic) failure(err error) store.EmbeddingFailure {
	f := store.EmbeddingFailure{Reason: "embedding failed", Base: s.opts.RetryBase, Cap: s.opts.RetryCap, MaxAttempts: s.opts.MaxAttempts}
	var e *embeddings.Error
	if errors.As(err, &e) {
		f.Reason, f.Retry, f.RetryAfter = e.Error(), e.Retryable, e.RetryAfter
		if e.Status == 0 {
			// No answer: the reason (shown to the tenant by get_document)
			// says so without the provider's address; the log has it.
			f.Reason = e.Public()
			s.log.Warn("embeddings provider not reached", "error", e)
		}
		if e.Status == 429 {
			wait := e.RetryAfter
			if wait <= 0 {
				wait = s.opts.RetryBase
			}
			s.mu.Lock()
			s.pause = time.Now().Add(wait)
			s.mu.Unlock()
		}
	} else if err != nil {
		s.log.Warn("embedding failed", "error", err)
		f.Retry = true
	}
	return f
}
