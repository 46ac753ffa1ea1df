package mcp_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/internal/embeddings"
	"github.com/gatehouse-mcp/gatehouse/internal/embeddings/embeddingstest"
	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

type semanticResults struct {
	Results []struct {
		ID      string  `json:"id"`
		Title   string  `json:"title"`
		Rank    float32 `json:"rank"`
		Snippet string  `json:"snippet"`
	} `json:"results"`
	NextCursor string `json:"next_cursor"`
	Mode       string `json:"mode"`
	Note       string `json:"note"`
}

func (r semanticResults) titles() string {
	var ts []string
	for _, h := range r.Results {
		ts = append(ts, h.Title)
	}
	return strings.Join(ts, ", ")
}

type embeddedDocument struct {
	document
	Embedding *store.EmbeddingState `json:"embedding"`
}

// withEmbeddings configures the server with the fake provider (model m)
// and a fast worker, and runs the worker until the test ends.
func withEmbeddings(t *testing.T, fake *embeddingstest.Server, model string, key string) func(*setup) {
	return func(su *setup) {
		client, err := embeddings.New(embeddings.Config{URL: fake.BaseURL(), Model: model, Dimensions: 128, APIKey: key})
		if err != nil {
			t.Fatal(err)
		}
		su.options = func(o *mcp.Options) {
			o.Embeddings = client
			o.Embedder = mcp.EmbedderOptions{Poll: 20 * time.Millisecond, RetryBase: 20 * time.Millisecond, RetryCap: 100 * time.Millisecond, MaxAttempts: 4}
		}
	}
}

// runEmbedder runs g's embedding worker until the test ends or stop is
// called.
func runEmbedder(t *testing.T, g *gatehouse) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.srv.RunEmbedder(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func getText(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	return res.StatusCode, readBody(t, res)
}

// waitEmbedded waits until get_document says the document is in state.
func waitEmbedded(t *testing.T, cs *sdk.ClientSession, id, state string) *store.EmbeddingState {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var d embeddedDocument
		mustCall(t, cs, "get_document", args{"id": id}, &d)
		if d.Embedding != nil && d.Embedding.State == state {
			return d.Embedding
		}
		if time.Now().After(deadline) {
			t.Fatalf("document %s: embedding %+v, want %s", id, d.Embedding, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSemanticSearchNotConfigured: without a provider, search stays
// keyword, asking for semantic or hybrid says it is not configured, an
// admin cannot turn it on, and /readyz says it is off.
func TestSemanticSearchNotConfigured(t *testing.T) {
	g := newGatehouse(t)
	cs := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	mustCall(t, cs, "save_document", args{"title": "Runbook", "body": "restart the server"}, nil)
	var r semanticResults
	mustCall(t, cs, "search_documents", args{"query": "restart"}, &r)
	if r.Mode != "keyword" || len(r.Results) != 1 {
		t.Errorf("default search: %+v", r)
	}
	expectFailures(t, cs, []badCall{
		{"search_documents", args{"query": "restart", "mode": "semantic"}, "semantic search is not configured"},
		{"search_documents", args{"query": "restart", "mode": "hybrid"}, "semantic search is not configured"},
		{"search_documents", args{"query": "restart", "mode": "vector"}, "mode"},
		{"set_semantic_search", args{"enabled": true}, "GATEHOUSE_EMBEDDINGS_URL"},
	})
	var d embeddedDocument
	mustCall(t, cs, "get_document", args{"id": r.Results[0].ID}, &d)
	if d.Embedding != nil {
		t.Errorf("get_document shows an embedding state without semantic search: %+v", d.Embedding)
	}
	if _, body := getBody(t, g.ts.URL+"/readyz"); !strings.Contains(body, `"semantic_search":"off: no embeddings provider configured"`) {
		t.Errorf("/readyz: %s", body)
	}
}

// TestSemanticSearch: an admin turns it on (audited); saved documents are
// embedded in the background; semantic search finds by meaning what the
// words miss, hybrid fuses both rankings and pages; a changed document is
// embedded again, a deleted one takes its vectors along; and no request to
// the provider mixes two tenants' text.
func TestSemanticSearch(t *testing.T) { semanticSearchScenario(t, false) }

// TestSemanticSearchPgvector is TestSemanticSearch through pgvector's HNSW
// index, where pgvector is installed into the PostgreSQL the tests use
// (PGVECTOR_TESTS=1; see store's TestPgvectorPath).
func TestSemanticSearchPgvector(t *testing.T) {
	if os.Getenv("PGVECTOR_TESTS") != "1" {
		t.Skip("set PGVECTOR_TESTS=1 where pgvector is installed into the PostgreSQL the tests use")
	}
	semanticSearchScenario(t, true)
}

func semanticSearchScenario(t *testing.T, pgvector bool) {
	fake := embeddingstest.New(t)
	db := storetest.MustOpenDB(t)
	if pgvector {
		if _, err := db.Pool().Exec(context.Background(), "CREATE EXTENSION vector"); err != nil {
			t.Fatal(err)
		}
	}
	g := newGatehouse(t, withEmbeddings(t, fake, "fake-embed-1", ""), func(su *setup) { su.db = db })
	runEmbedder(t, g)
	admin := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	dev := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	docs := map[string]string{
		"Deployment guide":       "How releases reach production: the pipeline builds, tests and deploys releases to the production servers every Tuesday. acmeword",
		"Database backup":        "The database backup runs nightly; restore a backup with pg_restore. acmeword",
		"Postgres maintenance":   "Vacuum the database weekly and watch its disk. acmeword",
		"Office plants":          "Water the ficus on Mondays; the orchid prefers rainwater. acmeword",
		"Holiday calendar":       "Offices close on public holidays; plan leave early. acmeword",
		"Incident response plan": "Page the on-call engineer, open an incident channel, write the timeline. acmeword",
	}
	ids := map[string]string{}
	for title, body := range docs {
		var d document
		mustCall(t, dev, "save_document", args{"title": title, "body": body}, &d)
		ids[title] = d.ID
	}
	expectFailures(t, dev, []badCall{
		{"search_documents", args{"query": "production", "mode": "semantic"}, "semantic search is off for acme.com"},
		{"set_semantic_search", args{"enabled": true}, "needs role admin"},
	})
	if n := len(fake.Requests()); n != 0 {
		t.Fatalf("documents were sent to the provider before an admin turned semantic search on: %d requests", n)
	}
	var on struct {
		Enabled, Changed bool
		Model            string
	}
	mustCall(t, admin, "set_semantic_search", args{"enabled": true}, &on)
	if !on.Enabled || !on.Changed || on.Model != "fake-embed-1@128" {
		t.Errorf("set_semantic_search: %+v", on)
	}
	tn, err := g.db.FindTenantByKey(context.Background(), "acme.com")
	if err != nil {
		t.Fatal(err)
	}
	var who, reason string
	if err := g.db.Pool().QueryRow(context.Background(), fmt.Sprintf(`SELECT subject, reason FROM %q.audit_log
		WHERE tool = 'set_semantic_search' AND decision = 'ALLOWED'`, tn.Schema)).Scan(&who, &reason); err != nil || reason != "semantic search turned on" || who == "" {
		t.Errorf("audit of set_semantic_search: %q %q %v", who, reason, err)
	}
	for _, id := range ids {
		if st := waitEmbedded(t, dev, id, "embedded"); st.Chunks != 1 {
			t.Errorf("chunks: %+v", st)
		}
	}

	// Semantic: "ship releases" shares no query of all words with any
	// document (keyword finds nothing), but means the deployment guide.
	var r semanticResults
	mustCall(t, dev, "search_documents", args{"query": "when do we ship releases to production", "mode": "keyword"}, &r)
	if len(r.Results) != 0 {
		t.Errorf("keyword search found %s", r.titles())
	}
	mustCall(t, dev, "search_documents", args{"query": "when do we ship releases to production", "mode": "semantic"}, &r)
	if r.Mode != "semantic" || len(r.Results) == 0 || r.Results[0].Title != "Deployment guide" || !strings.Contains(r.Results[0].Snippet, "releases") {
		t.Errorf("semantic search: %+v", r)
	}
	for i := 1; i < len(r.Results); i++ {
		if r.Results[i].Rank > r.Results[i-1].Rank {
			t.Errorf("semantic ranks not descending: %+v", r.Results)
		}
	}

	// Hybrid (the default now): the document both rankings put first
	// leads; documents only the vectors find follow.
	r = semanticResults{}
	mustCall(t, dev, "search_documents", args{"query": "database backup"}, &r)
	if r.Mode != "hybrid" || len(r.Results) < 2 || r.Results[0].Title != "Database backup" || !strings.Contains(r.Results[0].Snippet, "«backup»") {
		t.Errorf("hybrid search: %+v", r)
	}
	if !strings.Contains(r.titles(), "Postgres maintenance") {
		t.Errorf("hybrid search misses what only the vectors find: %s", r.titles())
	}
	// Pages of one result each give the same list.
	var paged []string
	for cursor := ""; ; {
		a := args{"query": "database backup", "limit": 1}
		if cursor != "" {
			a["cursor"] = cursor
		}
		var p semanticResults
		mustCall(t, dev, "search_documents", a, &p)
		for _, h := range p.Results {
			paged = append(paged, h.Title)
		}
		if cursor = p.NextCursor; cursor == "" || len(paged) > 20 {
			break
		}
	}
	if got := strings.Join(paged, ", "); got != r.titles() {
		t.Errorf("hybrid pages %s, want %s", got, r.titles())
	}
	// A hybrid page's cursor (r above has no next page: take one of a
	// page of one) is refused by a keyword search, naming what to repeat.
	var first semanticResults
	mustCall(t, dev, "search_documents", args{"query": "database backup", "limit": 1}, &first)
	if first.NextCursor == "" {
		t.Fatalf("a hybrid page of one has no next cursor: %+v", first)
	}
	res := call(t, dev, "search_documents", args{"query": "database backup", "mode": "keyword", "cursor": first.NextCursor}, nil)
	if !res.IsError || !strings.Contains(text(res), "another search") || !strings.Contains(text(res), "mode") {
		t.Errorf("a hybrid cursor taken by a keyword search: %s", text(res))
	}

	// A changed body is embedded again; tags alone do not change it.
	before := len(fake.Requests())
	mustCall(t, dev, "save_document", args{"id": ids["Office plants"], "tags": []string{"garden"}}, nil)
	mustCall(t, dev, "save_document", args{"id": ids["Office plants"], "body": "The ficus moved to the deployment room. acmeword"}, nil)
	waitEmbedded(t, dev, ids["Office plants"], "embedded")
	if n := len(fake.Requests()) - before; n != 1 {
		t.Errorf("%d requests after one change of body, want 1", n)
	}

	// A deleted document's vectors go with it.
	mustCall(t, dev, "delete_document", args{"id": ids["Holiday calendar"]}, nil)
	var n int
	if err := g.db.Pool().QueryRow(context.Background(), fmt.Sprintf(`SELECT count(*) FROM %q.document_chunks WHERE document_id = $1`, tn.Schema),
		ids["Holiday calendar"]).Scan(&n); err != nil || n != 0 {
		t.Errorf("chunks of a deleted document: %d %v", n, err)
	}

	// Another tenant: its text travels in its own requests only.
	other := g.connect(t, g.key(t, "globex.com", tenancy.Admin), "")
	mustCall(t, other, "set_semantic_search", args{"enabled": true}, nil)
	var og document
	for i := range 5 {
		mustCall(t, other, "save_document", args{"title": fmt.Sprint("Globex memo ", i), "body": "globexword production releases"}, &og)
		mustCall(t, dev, "save_document", args{"title": fmt.Sprint("Acme memo ", i), "body": "acmeword production releases"}, nil)
	}
	waitEmbedded(t, other, og.ID, "embedded")
	for _, req := range fake.Requests() {
		all := strings.Join(req.Inputs, " ")
		if strings.Contains(all, "acmeword") && strings.Contains(all, "globexword") {
			t.Fatalf("one request carried both tenants' text: %q", req.Inputs)
		}
	}
	r = semanticResults{}
	mustCall(t, other, "search_documents", args{"query": "production releases", "mode": "semantic"}, &r)
	if strings.Contains(r.titles(), "Acme") || !strings.Contains(r.titles(), "Globex") {
		t.Errorf("globex's semantic search: %s", r.titles())
	}
	// The query vectors are cached per tenant: the same query from another
	// tenant is its own request (no answer, nor its timing, crosses over).
	queried := func() int {
		n := 0
		for _, req := range fake.Requests() {
			if len(req.Inputs) == 1 && req.Inputs[0] == "production releases" {
				n++
			}
		}
		return n
	}
	before = queried()
	mustCall(t, dev, "search_documents", args{"query": "production releases", "mode": "semantic"}, &r)
	mustCall(t, dev, "search_documents", args{"query": "production releases", "mode": "semantic"}, &r)
	if n := queried() - before; n != 1 {
		t.Errorf("the same query in a second tenant, twice: %d requests, want 1", n)
	}

	// Turned off: searches are keyword again, and nothing more is sent.
	mustCall(t, admin, "set_semantic_search", args{"enabled": false}, nil)
	r = semanticResults{}
	mustCall(t, dev, "search_documents", args{"query": "database backup"}, &r)
	if r.Mode != "keyword" {
		t.Errorf("after turning it off: mode %s", r.Mode)
	}
	before = len(fake.Requests())
	mustCall(t, dev, "save_document", args{"title": "Secret plan", "body": "acmeword not to be sent"}, nil)
	time.Sleep(200 * time.Millisecond)
	for _, req := range fake.Requests()[before:] {
		if strings.Contains(strings.Join(req.Inputs, " "), "Secret plan") {
			t.Errorf("a document was sent after semantic search was turned off")
		}
	}
	ranking := "exact cosine over real[] (pgvector is not installed)"
	if pgvector {
		ranking = "pgvector 0.8"
		var n int
		if err := g.db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'document_chunks_hnsw_128'",
			tn.Schema).Scan(&n); err != nil || n != 1 {
			t.Errorf("HNSW index of acme.com: %d %v", n, err)
		}
	}
	if _, body := getBody(t, g.ts.URL+"/readyz"); !strings.Contains(body, ranking) {
		t.Errorf("/readyz: %s", body)
	}
}

// TestEmbeddingRetryAndModelChange: the provider failing (429, then 500)
// delays documents, which are embedded once it answers; refusing the input
// fails them with the provider's reason (never the API key); a new model
// setting embeds every document again.
func TestEmbeddingRetryAndModelChange(t *testing.T) {
	fake := embeddingstest.New(t)
	fake.Key = "sk-fake-0123456789abcdef"
	db := storetest.MustOpenDB(t)
	g := newGatehouse(t, withEmbeddings(t, fake, "model-a", fake.Key), func(su *setup) { su.db = db })
	stop := runEmbedder(t, g)
	admin := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	mustCall(t, admin, "set_semantic_search", args{"enabled": true}, nil)
	fake.FailNext(embeddingstest.Failure{Status: 429, RetryAfter: "0", Message: "Rate limit reached"},
		embeddingstest.Failure{Status: 500, Message: "The server had an error"})
	var runbook document
	mustCall(t, admin, "save_document", args{"title": "Runbook", "body": "restart the web server"}, &runbook)
	waitEmbedded(t, admin, runbook.ID, "embedded")
	if reqs := fake.Requests(); len(reqs) != 1 {
		t.Errorf("requests answered: %d, want 1 after two failures", len(reqs))
	}

	fake.FailNext(embeddingstest.Failure{Status: 400, Message: "This model's maximum context length is 8192 tokens, however you requested 9000 tokens"})
	var bad document
	mustCall(t, admin, "save_document", args{"title": "Huge", "body": "very long text"}, &bad)
	st := waitEmbedded(t, admin, bad.ID, "failed")
	if !strings.Contains(st.Error, "maximum context length") || !strings.Contains(st.Error, "400") {
		t.Errorf("failed state: %+v", st)
	}
	// Turning it on again retries failed documents.
	mustCall(t, admin, "set_semantic_search", args{"enabled": true}, nil)
	waitEmbedded(t, admin, bad.ID, "embedded")

	// A wrong key: failed, with the provider's message minus the key.
	wrongKey := "sk-wrong-9876543210fedcba"
	stop()
	g2 := newGatehouse(t, withEmbeddings(t, fake, "model-a", wrongKey), func(su *setup) { su.db = db })
	stop = runEmbedder(t, g2)
	cs2 := g2.connect(t, g2.key(t, "globex.com", tenancy.Admin), "")
	mustCall(t, cs2, "set_semantic_search", args{"enabled": true}, nil)
	var memo document
	mustCall(t, cs2, "save_document", args{"title": "Memo", "body": "text"}, &memo)
	st = waitEmbedded(t, cs2, memo.ID, "failed")
	if strings.Contains(st.Error, wrongKey) || !strings.Contains(st.Error, "401") {
		t.Errorf("failed state with a wrong key: %+v", st)
	}
	if strings.Contains(g2.logs.String(), wrongKey) {
		t.Errorf("the API key reached the log")
	}
	stop()
	_, metrics := getText(t, g2.ts.URL+"/metrics")
	if !strings.Contains(metrics, `gatehouse_embedding_documents_total{result="failed"} 1`) {
		t.Errorf("metrics lack the failed document:\n%s", grepLines(metrics, "embedding"))
	}

	// A new model: every document is embedded again with it.
	g3 := newGatehouse(t, withEmbeddings(t, fake, "model-b", fake.Key), func(su *setup) { su.db = db })
	cs3 := g3.connect(t, g3.key(t, "acme.com", tenancy.Viewer), "")
	var got embeddedDocument
	mustCall(t, cs3, "get_document", args{"id": bad.ID}, &got)
	if got.Embedding == nil || got.Embedding.State != "pending" {
		t.Errorf("after a model change: %+v", got.Embedding)
	}
	runEmbedder(t, g3)
	waitEmbedded(t, cs3, bad.ID, "embedded")
	waitEmbedded(t, cs3, runbook.ID, "embedded")
	var models = map[string]int{}
	for _, r := range fake.Requests() {
		models[r.Model] += len(r.Inputs)
	}
	if models["model-b"] < 2 {
		t.Errorf("inputs per model: %v", models)
	}
	var r semanticResults
	mustCall(t, cs3, "search_documents", args{"query": "restart web server", "mode": "semantic"}, &r)
	if len(r.Results) == 0 || r.Results[0].Title != "Runbook" {
		t.Errorf("semantic search with model-b: %+v", r)
	}
}

// TestSemanticRankingTooSlow: past the search's time limit for ranking by
// meaning, a hybrid search ranks by words with a note and a semantic one
// says why it failed.
func TestSemanticRankingTooSlow(t *testing.T) {
	fake := embeddingstest.New(t)
	g := newGatehouse(t, withEmbeddings(t, fake, "fake-embed-1", ""), func(su *setup) {
		mod := su.options
		su.options = func(o *mcp.Options) { mod(o); o.Embedder.SearchTimeout = time.Millisecond }
	})
	admin := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	mustCall(t, admin, "set_semantic_search", args{"enabled": true}, nil)
	mustCall(t, admin, "save_document", args{"title": "Alpha", "body": "alpha"}, nil)
	tn, err := g.db.FindTenantByKey(context.Background(), "acme.com")
	if err != nil {
		t.Fatal(err)
	}
	// 3,000 chunks of 128 dimensions, as if embedded.
	if _, err := g.db.Pool().Exec(context.Background(), fmt.Sprintf(`
		INSERT INTO %[1]q.documents (title, body, created_by, embed_state, embed_model)
		SELECT 'doc ' || i, 'body', 't', 'embedded', 'fake-embed-1@128' FROM generate_series(1, 300) i;
		INSERT INTO %[1]q.document_chunks (document_id, seq, start_at, end_at, embedding)
		SELECT d.id, s, 0, 4, (SELECT array_agg(random()::real) FROM generate_series(1, 128 + s * 0))
		FROM %[1]q.documents d, generate_series(0, 9) s WHERE d.embed_state = 'embedded'`, tn.Schema)); err != nil {
		t.Fatal(err)
	}
	var r semanticResults
	mustCall(t, admin, "search_documents", args{"query": "alpha"}, &r)
	if r.Mode != "hybrid" || !strings.Contains(r.Note, "ranked by words only") || len(r.Results) != 1 || r.Results[0].Title != "Alpha" {
		t.Errorf("hybrid past the time limit: %+v", r)
	}
	expectFailures(t, admin, []badCall{{"search_documents", args{"query": "alpha", "mode": "semantic"}, "took over 1ms"}})
	// Hybrid searches spare the database for a while.
	before := len(fake.Requests())
	mustCall(t, admin, "search_documents", args{"query": "another query"}, &r)
	if !strings.Contains(r.Note, "recently took over 1ms") || len(fake.Requests()) != before {
		t.Errorf("hybrid after a slow ranking: %+v, %d new requests", r, len(fake.Requests())-before)
	}
}

// TestEmbeddingsProviderUnreachable: when the provider does not answer,
// tenants are told so without its address (an operator's internal
// network is not theirs to see): a semantic search's error, a hybrid
// search's note and a document's failed state; the operator's log has
// the details.
func TestEmbeddingsProviderUnreachable(t *testing.T) {
	gone := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(gone.URL, "http://")
	gone.Close() // nothing listens there now
	client, err := embeddings.New(embeddings.Config{URL: gone.URL + "/v1", Model: "m", Dimensions: 16})
	if err != nil {
		t.Fatal(err)
	}
	g := newGatehouse(t, func(su *setup) {
		su.options = func(o *mcp.Options) {
			o.Embeddings = client
			o.Embedder = mcp.EmbedderOptions{Poll: 20 * time.Millisecond, RetryBase: 10 * time.Millisecond, RetryCap: 20 * time.Millisecond, MaxAttempts: 2}
		}
	})
	runEmbedder(t, g)
	admin := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	mustCall(t, admin, "set_semantic_search", args{"enabled": true}, nil)
	var doc document
	mustCall(t, admin, "save_document", args{"title": "Runbook", "body": "restart the web server"}, &doc)
	st := waitEmbedded(t, admin, doc.ID, "failed")
	expectFailures(t, admin, []badCall{{"search_documents", args{"query": "restart", "mode": "semantic"}, "could not be reached"}})
	var r semanticResults
	mustCall(t, admin, "search_documents", args{"query": "restart"}, &r)
	if !strings.Contains(r.Note, "could not be reached") || len(r.Results) != 1 {
		t.Errorf("hybrid with the provider unreachable: %+v", r)
	}
	res := call(t, admin, "search_documents", args{"query": "restart", "mode": "semantic"}, nil)
	for what, s := range map[string]string{"document state": st.Error, "search error": text(res), "note": r.Note} {
		if strings.Contains(s, addr) || strings.Contains(s, "dial") || strings.Contains(s, "127.0.0.1") {
			t.Errorf("%s shows the provider's address or the dial error: %q", what, s)
		}
	}
	if !strings.Contains(g.logs.String(), addr) {
		t.Errorf("the log does not say which provider could not be reached")
	}
}

// TestEmbedderBesideFailingTenant: a tenant whose turn of the embedding
// worker fails, its documents table locked by another session or missing
// (a broken schema), no longer stops the worker's rounds: a tenant after
// it (in creation order) has its documents embedded, the failing tenant is
// logged once, and its documents are embedded once it is mended.
func TestEmbedderBesideFailingTenant(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		lock string // a table of the failing tenant held locked by another session (released to mend); or
		sql  string // a fault (%[1]s: the failing tenant's schema), mended by mend
		mend string
	}{
		{name: "locked", lock: "documents"},
		{name: "broken", sql: "ALTER TABLE %[1]s.documents RENAME TO documents_away", mend: "ALTER TABLE %[1]s.documents_away RENAME TO documents"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fake := embeddingstest.New(t)
			g := newGatehouse(t, withEmbeddings(t, fake, "model-a", ""))
			first := g.connect(t, g.key(t, "first.example", tenancy.Admin), "") // created first: visited first
			second := g.connect(t, g.key(t, "second.example", tenancy.Admin), "")
			docs := map[*sdk.ClientSession]string{}
			for _, cs := range []*sdk.ClientSession{first, second} {
				mustCall(t, cs, "set_semantic_search", args{"enabled": true}, nil)
				var d document
				mustCall(t, cs, "save_document", args{"title": "Runbook", "body": "restart the web server"}, &d)
				docs[cs] = d.ID
			}
			tn, err := g.db.FindTenantByKey(ctx, "first.example")
			if err != nil {
				t.Fatal(err)
			}
			mend := func() error {
				_, err := g.db.Pool().Exec(ctx, fmt.Sprintf(c.mend, tn.Schema))
				return err
			}
			if c.lock != "" {
				mend = storetest.LockTable(t, g.db, tn.Schema, c.lock)
			} else if _, err := g.db.Pool().Exec(ctx, fmt.Sprintf(c.sql, tn.Schema)); err != nil {
				t.Fatal(err)
			}
			runEmbedder(t, g)
			waitEmbedded(t, second, docs[second], "embedded")
			// The minute's count still counts the tenants whose turns
			// succeeded (the failing one has never been counted here).
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, metrics := getText(t, g.ts.URL+"/metrics")
				if strings.Contains(metrics, `gatehouse_embedding_documents{state="embedded"} 1`) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the documents gauge beside a failing tenant:\n%s", grepLines(metrics, "gatehouse_embedding_documents"))
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(1500 * time.Millisecond) // a few more rounds, each failing for the first tenant
			logged := func(what string) int {
				return strings.Count(g.logs.String(), what)
			}
			if n := logged("a tenant's turn failed"); n != 1 {
				t.Errorf("the failing tenant was logged %d times, want once:\n%s", n, grepLines(g.logs.String(), "embedding worker"))
			}
			if err := mend(); err != nil {
				t.Fatal(err)
			}
			waitEmbedded(t, first, docs[first], "embedded")
			deadline = time.Now().Add(10 * time.Second)
			for logged("turn succeeded again") == 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if logged("turn succeeded again") != 1 {
				t.Errorf("the tenant's recovery was not logged once:\n%s", grepLines(g.logs.String(), "embedding worker"))
			}
		})
	}
}

// TestEmbeddingWhileItsIndexFails: a tenant's HNSW index that cannot be
// built (here pgvector's type is missing; in service, a build held up past
// its bound by a long transaction or a dump, store.ErrIndexBuildLocked)
// no longer keeps its documents from being embedded: they are embedded
// (searches rank exactly meanwhile), and the failure is logged once, not
// at every round.
func TestEmbeddingWhileItsIndexFails(t *testing.T) {
	fake := embeddingstest.New(t)
	g := newGatehouse(t, withEmbeddings(t, fake, "model-a", ""))
	admin := g.connect(t, g.key(t, "index.example", tenancy.Admin), "")
	mustCall(t, admin, "set_semantic_search", args{"enabled": true}, nil)
	var d document
	mustCall(t, admin, "save_document", args{"title": "Runbook", "body": "restart the web server"}, &d)
	mcp.SetVectorIndex(g.srv, &store.VectorIndex{Schema: "public", Version: "0.0", Dims: 8})
	runEmbedder(t, g)
	waitEmbedded(t, admin, d.ID, "embedded")
	time.Sleep(1500 * time.Millisecond) // a few more rounds, each failing to build the index
	if n := strings.Count(g.logs.String(), "a tenant's turn failed"); n != 1 || !strings.Contains(g.logs.String(), "HNSW index") {
		t.Errorf("the index build's failure was logged %d times, want once, naming the index:\n%s", n, grepLines(g.logs.String(), "embedding worker"))
	}
}

// TestEmbeddingWhileALockHoldsUpItsIndex: a tenant's index build held up by
// a lock (here a long REPEATABLE READ reader, whose snapshot a concurrent
// build must wait for, as it would for a pg_dump) fails within its bound,
// the tenant's documents are embedded all the same, the failure is logged
// once, and the build is not tried again at every round (each try waits
// out its bound, and may have done the whole build first).
func TestEmbeddingWhileALockHoldsUpItsIndex(t *testing.T) {
	ctx := context.Background()
	fake := embeddingstest.New(t)
	g := newGatehouse(t, withEmbeddings(t, fake, "model-a", ""))
	admin := g.connect(t, g.key(t, "held-index.example", tenancy.Admin), "")
	mustCall(t, admin, "set_semantic_search", args{"enabled": true}, nil)
	var builds atomic.Int32
	// As store.DB.EnsureVectorIndex builds (pgvector is not installed
	// here): concurrently, each lock wait bounded.
	mcp.SetIndexBuild(g.srv, func(ctx context.Context, tn *tenancy.Tenant) error {
		builds.Add(1)
		conn, err := g.db.Pool().Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		if _, err := conn.Exec(ctx, "SET lock_timeout = '500ms'"); err != nil {
			return err
		}
		defer conn.Exec(context.Background(), "RESET lock_timeout") //nolint:errcheck
		_, err = conn.Exec(ctx, "CREATE INDEX CONCURRENTLY document_chunks_probe ON "+pgx.Identifier{tn.Schema, "document_chunks"}.Sanitize()+" (document_id)")
		if store.LockTimedOut(err) {
			return fmt.Errorf("%w: %w", store.ErrIndexBuildLocked, err)
		}
		return err
	})
	mcp.SetIndexReady(g.srv, func(ctx context.Context, tn *tenancy.Tenant) (bool, error) {
		var valid bool
		err := g.db.Pool().QueryRow(ctx, `SELECT coalesce(bool_and(i.indisvalid), false) FROM pg_index i
			JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = 'document_chunks_probe'`, tn.Schema).Scan(&valid)
		return valid, err
	})
	reader, err := g.db.Pool().BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Rollback(ctx) //nolint:errcheck
	if _, err := reader.Exec(ctx, "SELECT count(*) FROM gatehouse.tenants"); err != nil {
		t.Fatal(err)
	}
	runEmbedder(t, g)
	for _, title := range []string{"Runbook", "Postmortem"} { // the second: more rounds, after the first build failed
		var d document
		mustCall(t, admin, "save_document", args{"title": title, "body": "restart the web server"}, &d)
		waitEmbedded(t, admin, d.ID, "embedded")
	}
	if n := builds.Load(); n != 1 {
		t.Errorf("the index build was tried %d times beside the reader, want once (then held back)", n)
	}
	logs := g.logs.String()
	if n := strings.Count(logs, "a tenant's turn failed"); n != 1 || !strings.Contains(logs, "waited too long for a lock") {
		t.Errorf("the held-up build was logged %d times, want once, saying it waited for a lock:\n%s", n, grepLines(logs, "embedding worker"))
	}
	if strings.Contains(logs, "turn succeeded again") {
		t.Fatal("the tenant's turn succeeded while its index could not be built")
	}
	// Another replica builds the index once the reader is gone: the wait
	// ends at the next round, without a build of this process's.
	if err := reader.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	tn, err := g.db.FindTenantByKey(ctx, "held-index.example")
	if err != nil {
		t.Fatal(err)
	}
	// (The failed build left an invalid index, which did not end the wait.)
	for _, q := range []string{
		"DROP INDEX CONCURRENTLY " + pgx.Identifier{tn.Schema, "document_chunks_probe"}.Sanitize(),
		"CREATE INDEX CONCURRENTLY document_chunks_probe ON " + pgx.Identifier{tn.Schema, "document_chunks"}.Sanitize() + " (document_id)",
	} {
		if _, err := g.db.Pool().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var d document
	mustCall(t, admin, "save_document", args{"title": "Handbook", "body": "restart the web server"}, &d)
	waitEmbedded(t, admin, d.ID, "embedded")
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(g.logs.String(), "turn succeeded again"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the tenant's turn still failing after its index was built elsewhere:\n%s", grepLines(g.logs.String(), "embedding worker"))
		}
	}
	if n := builds.Load(); n != 1 {
		t.Errorf("the index build was tried %d times, want once: the index built elsewhere ends the wait", n)
	}
}
