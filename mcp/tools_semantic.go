package mcp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/gatehouse-mcp/gatehouse/internal/embeddings"
	"github.com/gatehouse-mcp/gatehouse/store"
)

// Search modes of search_documents.
const (
	modeKeyword  = "keyword"
	modeSemantic = "semantic"
	modeHybrid   = "hybrid"
)

// semanticDepth is how many documents each ranking contributes to a
// semantic or hybrid search: such a search returns at most this many in
// all (over every page).
const semanticDepth = 100

// rrfK is reciprocal rank fusion's constant: a document's hybrid score is
// Σ 1/(rrfK + rank) over the rankings it appears in (Cormack, Clarke and
// Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual
// Rank Learning Methods", SIGIR 2009, which found k = 60 best).
const rrfK = 60

type setSemanticSearchIn struct {
	Enabled bool `json:"enabled" jsonschema:"true: turn semantic search on for your organisation (documents' text is then sent to the server's embeddings provider); false: turn it off"`
}

type setSemanticSearchOut struct {
	Enabled  bool   `json:"enabled"`
	Changed  bool   `json:"changed" jsonschema:"false when it was already so"`
	Provider string `json:"provider,omitempty" jsonschema:"the embeddings endpoint documents are sent to"`
	Model    string `json:"model,omitempty"`
}

func (o setSemanticSearchOut) Text() string {
	switch {
	case o.Enabled && o.Changed:
		return fmt.Sprintf("Semantic search is now on. Documents are being embedded (model %s at %s); search_documents ranks by meaning and words (mode hybrid) from now on, and get_document shows each document's embedding state.", o.Model, o.Provider)
	case o.Enabled:
		return fmt.Sprintf("Semantic search was already on (model %s at %s).", o.Model, o.Provider)
	case o.Changed:
		return "Semantic search is now off: no document is sent to the embeddings provider any more, and search_documents uses keywords."
	}
	return "Semantic search was already off."
}

func setSemanticSearchTool() *Tool {
	return newTool(adminSpec("set_semantic_search", "Turn semantic search on or off",
		"Turns semantic search over your organisation's documents on or off (it is off until an admin turns it on). "+
			"While it is on, the text of every document is sent to the embeddings provider the server's operator configured, "+
			"and search_documents finds documents by meaning as well as by words. The audit log records who turned it on or off."),
		func(ctx context.Context, c *Call, in setSemanticSearchIn) (setSemanticSearchOut, error) {
			sem := c.srv.semantic
			if in.Enabled && !sem.configured() {
				return setSemanticSearchOut{}, userErrorf("semantic search is not configured on this server: its operator has to set an embeddings provider (GATEHOUSE_EMBEDDINGS_URL and GATEHOUSE_EMBEDDINGS_MODEL) first")
			}
			var changed bool
			err := c.asAdmin(ctx, func(a *store.Admin) (err error) {
				changed, err = a.SetSemanticSearch(ctx, in.Enabled, c.Principal.Subject)
				return err
			})
			if err != nil {
				return setSemanticSearchOut{}, err
			}
			word := map[bool]string{true: "on", false: "off"}[in.Enabled]
			if changed {
				c.auditReason("semantic search turned " + word)
			} else {
				c.auditReason("semantic search already " + word)
			}
			tenantID := c.Tenant.ID
			c.afterCommit = append(c.afterCommit, func() { sem.remember(tenantID, in.Enabled); sem.kick() })
			out := setSemanticSearchOut{Enabled: in.Enabled, Changed: changed}
			if sem.configured() {
				out.Provider, out.Model = sem.client.Endpoint(), sem.client.Model()
			}
			return out, nil
		})
}

// searchMode decides search_documents' mode: the one asked for, else
// hybrid where semantic search is configured and on for the tenant, else
// keyword. Asking for semantic or hybrid where it is not is a tool error
// saying why.
func searchMode(ctx context.Context, c *Call, asked string) (string, error) {
	sem := c.srv.semantic
	if asked == modeKeyword {
		return modeKeyword, nil
	}
	on, err := sem.isEnabled(ctx, c.Tenant)
	if err != nil {
		return "", err
	}
	switch {
	case asked == "" && on:
		return modeHybrid, nil
	case asked == "":
		return modeKeyword, nil
	case !sem.configured():
		return "", userErrorf("semantic search is not configured on this server (no embeddings provider): use mode keyword")
	case !on:
		return "", userErrorf("semantic search is off for %s: an admin can turn it on with set_semantic_search; use mode keyword meanwhile", c.Tenant.Key)
	}
	return asked, nil
}

// queryVector is a search query's embedding, or why there is none.
type queryVector struct {
	v   []float32
	err error
}

// embedQuery embeds a semantic or hybrid search's query, before the
// search's transaction opens. A hybrid search of a tenant whose ranking by
// meaning recently ran past its time limit skips it (ErrRankingTooSlow).
func embedQuery(ctx context.Context, c *Call, query, mode string) queryVector {
	sem := c.srv.semantic
	if mode == modeHybrid && sem.slow(c.Tenant.ID) {
		return queryVector{err: store.ErrRankingTooSlow} // a recent search found out: spare the database
	}
	v, err := sem.queryVector(ctx, c.Tenant, query)
	return queryVector{v, err}
}

// semanticSearch runs a semantic or hybrid search in c.Tx. terms is how
// many full-text terms the query has (0: only the vectors rank). A hybrid
// search whose query could not be embedded (the provider failing) falls
// back to the full-text ranking, with a note.
func semanticSearch(ctx context.Context, c *Call, s store.DocumentSearch, mode string, terms int, q queryVector) (searchDocumentsOut, []*store.SearchHit, bool, error) {
	sem := c.srv.semantic
	out := searchDocumentsOut{Mode: mode}
	var vectorHits, wordHits []store.Candidate
	vec, err := q.v, q.err
	var e *embeddings.Error
	switch {
	case errors.Is(err, store.ErrRankingTooSlow):
		out.Note = fmt.Sprintf("ranked by words only: ranking your organisation's documents by meaning recently took over %s (too many for exact ranking; the server's operator can install pgvector), so hybrid searches rank by words for a while", sem.opts.SearchTimeout)
	case err == nil:
		vectorHits, err = store.SemanticCandidates(ctx, c.Tx, store.VectorQuery{Vector: vec, Model: sem.client.Model(),
			Tag: s.Tag, ProjectID: s.ProjectID, Limit: semanticDepth, Index: sem.index, Timeout: sem.opts.SearchTimeout})
		switch {
		case errors.Is(err, store.ErrRankingTooSlow) && mode == modeHybrid:
			sem.markSlow(c.Tenant.ID)
			out.Note = fmt.Sprintf("ranked by words only: ranking by meaning took over %s (too many chunks for exact ranking; the server's operator can install pgvector)", sem.opts.SearchTimeout)
		case errors.Is(err, store.ErrRankingTooSlow):
			sem.markSlow(c.Tenant.ID)
			return out, nil, false, userErrorf("semantic search took over %s for your organisation's documents (too many for exact ranking: the server's operator can install pgvector); use mode keyword or hybrid", sem.opts.SearchTimeout)
		case err != nil:
			return out, nil, false, err
		}
	case errors.As(err, &e) && mode == modeHybrid:
		c.srv.log.Warn("search query not embedded", "request_id", c.RequestID, "tenant", c.Tenant.Key, "error", e)
		out.Note = "ranked by words only: the query could not be embedded (" + e.Public() + ")"
	case errors.As(err, &e):
		c.srv.log.Warn("search query not embedded", "request_id", c.RequestID, "tenant", c.Tenant.Key, "error", e)
		return out, nil, false, userErrorf("semantic search is unavailable right now (%s): try again, or use mode keyword", e.Public())
	default:
		return out, nil, false, err
	}
	if mode == modeHybrid && terms > 0 {
		wordHits, err = store.KeywordCandidates(ctx, c.Tx, s.Query, s.Tag, s.ProjectID, semanticDepth)
		if err != nil {
			return out, nil, false, err
		}
	}
	ranked := vectorHits
	if mode == modeHybrid {
		ranked = fuse(wordHits, vectorHits)
	}
	if s.After != nil {
		i := slices.IndexFunc(ranked, func(h store.Candidate) bool {
			return h.Score < s.After.Rank || (h.Score == s.After.Rank && h.ID < s.After.ID)
		})
		if i < 0 {
			i = len(ranked)
		}
		ranked = ranked[i:]
	}
	more := len(ranked) > s.Limit
	ranked = ranked[:min(len(ranked), s.Limit)]
	hits, err := store.FindSearchHits(ctx, c.Tx, s.Query, ranked)
	return out, hits, more, err
}

// fuse merges two rankings by reciprocal rank fusion; a document keeps its
// best chunk's place from the vector ranking. Ties go to the greater id,
// as in the full-text ranking, so that pages are stable.
func fuse(words, vectors []store.Candidate) []store.Candidate {
	byID := map[string]*store.Candidate{}
	var all []*store.Candidate
	for _, list := range [][]store.Candidate{words, vectors} {
		for rank, h := range list {
			f := byID[h.ID]
			if f == nil {
				f = &store.Candidate{ID: h.ID}
				byID[h.ID] = f
				all = append(all, f)
			}
			if h.End > h.Start {
				f.Start, f.End = h.Start, h.End
			}
			f.Score += float32(1.0 / float64(rrfK+rank+1))
		}
	}
	out := make([]store.Candidate, len(all))
	for i, f := range all {
		out[i] = *f
	}
	slices.SortFunc(out, func(a, b store.Candidate) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	return out
}
