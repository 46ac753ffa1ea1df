package mcp

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jellydator/ttlcache/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse-mcp/gatehouse/internal/embeddings"
	"github.com/gatehouse-mcp/gatehouse/migrations"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// EmbedderOptions tune the background worker that embeds documents
// (semantic search); zero values take the defaults in brackets.
type EmbedderOptions struct {
	Poll        time.Duration // how often tenants are looked at without a save to wake it [5s]
	RetryBase   time.Duration // back-off after a document's first failed attempt, doubling [30s]
	RetryCap    time.Duration // longest back-off [1h]
	MaxAttempts int           // failed attempts after which a document is failed [6]
	Lease       time.Duration // how long a claimed document is held back from other workers [5m]
	BatchDocs   int           // documents claimed at once from one tenant [8]
	// SearchTimeout bounds the semantic ranking of one search [3s]: the
	// exact path's cost grows with the tenant's chunks (docs/scaling.md)
	// and a search must not hold a database core for long. A hybrid
	// search past it ranks by words only, with a note.
	SearchTimeout time.Duration
}

func (o EmbedderOptions) withDefaults() EmbedderOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Poll, 5*time.Second)
	def(&o.RetryBase, 30*time.Second)
	def(&o.RetryCap, time.Hour)
	def(&o.Lease, 5*time.Minute)
	def(&o.SearchTimeout, 3*time.Second)
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 6
	}
	if o.BatchDocs <= 0 {
		o.BatchDocs = 8
	}
	return o
}

// semantic is semantic search in one server: the provider (nil when not
// configured), how vectors are ranked, which tenants turned it on (cached
// for enabledTTL), recent query vectors, and the worker's wake-up and
// metrics.
type semantic struct {
	client  *embeddings.Client
	index   *store.VectorIndex // nil: exact ranking over real[]
	ranking string             // for /readyz
	opts    EmbedderOptions
	db      *store.DB
	log     *slog.Logger // the server's; details of provider failures tenants are told only in brief

	mu      sync.Mutex
	enabled map[string]enabledEntry // tenant id →
	indexed map[string]bool         // tenant schemas whose HNSW index exists
	// indexWait holds back the index builds of tenants whose last build a
	// lock held up (store.ErrIndexBuildLocked), by tenant schema.
	indexWait map[string]*indexBackoff
	// buildIndex builds a tenant's HNSW index (store.DB.EnsureVectorIndex
	// with index; tests replace it).
	buildIndex func(ctx context.Context, t *tenancy.Tenant) error
	// indexReady reports whether a tenant's index exists and is valid
	// (store.DB.VectorIndexReady, unless a test sets another).
	indexReady func(ctx context.Context, t *tenancy.Tenant) (bool, error)
	tooSlow    map[string]time.Time // tenant id → until when hybrid searches skip ranking by meaning
	failing    map[string]bool      // tenant ids whose last turn of the worker failed (logged once)
	// stateCounts are each tenant's documents by embedding state, as last
	// counted (the gauges sum those of the tenants with semantic search on).
	stateCounts map[string]map[string]int

	queries *ttlcache.Cache[[32]byte, []float32]
	wake    chan struct{}
	pause   time.Time // no requests before (the provider's Retry-After)

	requests  *prometheus.CounterVec
	documents *prometheus.CounterVec
	chunks    prometheus.Counter
	states    *prometheus.GaugeVec
	counted   time.Time
}

// chunksVersion is the tenant migration that adds document_chunks.
var chunksVersion = func() int {
	for _, m := range migrations.Tenant() {
		if m.Name == "document_chunks" {
			return m.Version
		}
	}
	panic("mcp: no tenant migration document_chunks")
}()

type enabledEntry struct {
	on   bool
	seen time.Time
}

// enabledTTL is how long a replica believes a tenant's setting; the
// replica that changed it knows at once.
const enabledTTL = 5 * time.Second

func newSemantic(ctx context.Context, db *store.DB, client *embeddings.Client, opts EmbedderOptions, reg prometheus.Registerer) (*semantic, error) {
	s := &semantic{client: client, db: db, opts: opts.withDefaults(), enabled: map[string]enabledEntry{}, indexed: map[string]bool{}, indexWait: map[string]*indexBackoff{}, tooSlow: map[string]time.Time{}, failing: map[string]bool{},
		stateCounts: map[string]map[string]int{},
		wake:        make(chan struct{}, 1),
		queries: ttlcache.New(ttlcache.WithTTL[[32]byte, []float32](10*time.Minute), ttlcache.WithCapacity[[32]byte, []float32](2000),
			ttlcache.WithDisableTouchOnHit[[32]byte, []float32]()),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_embedding_requests_total", Help: "Requests to the embeddings provider by purpose (documents, query) and outcome (ok, retryable_error, error).",
		}, []string{"purpose", "outcome"}),
		documents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_embedding_documents_total", Help: "Documents the embedding worker finished with, by result (embedded, retry, failed).",
		}, []string{"result"}),
		chunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_embedding_chunks_total", Help: "Document chunks embedded and stored.",
		}),
		states: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_embedding_documents", Help: "Documents of the tenants with semantic search on, by embedding state (pending, embedded, failed), as last counted by the worker (every minute).",
		}, []string{"state"}),
	}
	reg.MustRegister(s.requests, s.documents, s.chunks, s.states)
	switch {
	case client == nil:
		s.ranking = "off: no embeddings provider configured"
	default:
		idx, why, err := db.FindVectorIndex(ctx, client.Dimensions())
		if err != nil {
			return nil, fmt.Errorf("semantic search: looking for pgvector: %w", err)
		}
		s.index = idx
		if idx != nil {
			s.ranking = fmt.Sprintf("pgvector %s HNSW index (cosine, %d dimensions), model %s", idx.Version, idx.Dims, client.Model())
		} else {
			s.ranking = fmt.Sprintf("exact cosine over real[] (%s), model %s", why, client.Model())
		}
	}
	return s, nil
}

func (s *semantic) configured() bool { return s != nil && s.client != nil }

// isEnabled reports whether t's admin turned semantic search on.
func (s *semantic) isEnabled(ctx context.Context, t *tenancy.Tenant) (bool, error) {
	if !s.configured() {
		return false, nil
	}
	s.mu.Lock()
	e, ok := s.enabled[t.ID]
	s.mu.Unlock()
	if ok && time.Since(e.seen) < enabledTTL {
		return e.on, nil
	}
	on, _, _, err := s.db.SemanticSearchEnabled(ctx, t.ID)
	if err != nil {
		return false, err
	}
	s.remember(t.ID, on)
	return on, nil
}

func (s *semantic) remember(tenantID string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.enabled) > 10000 {
		clear(s.enabled)
	}
	s.enabled[tenantID] = enabledEntry{on: on, seen: time.Now()}
}

// slowFor is how long hybrid searches of a tenant whose ranking by meaning
// ran past SearchTimeout rank by words alone (in this process): each
// attempt would cost the database SearchTimeout of CPU.
const slowFor = 10 * time.Minute

func (s *semantic) slow(tenantID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Before(s.tooSlow[tenantID])
}

func (s *semantic) markSlow(tenantID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, until := range s.tooSlow {
		if time.Now().After(until) {
			delete(s.tooSlow, id)
		}
	}
	s.tooSlow[tenantID] = time.Now().Add(slowFor)
}

// kick wakes the worker (a document was saved, a tenant turned it on).
func (s *semantic) kick() {
	if !s.configured() {
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// queryVector embeds a search query for tenant t (cached per tenant: one
// tenant's queries never answer another's, not even by timing).
func (s *semantic) queryVector(ctx context.Context, t *tenancy.Tenant, query string) ([]float32, error) {
	key := sha256.Sum256([]byte(t.ID + "\x00" + s.client.Model() + "\x00" + query))
	if it := s.queries.Get(key); it != nil {
		return it.Value(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	vs, err := s.client.Embed(ctx, []string{query})
	s.countRequest("query", err)
	if err != nil {
		return nil, err
	}
	s.queries.Set(key, vs[0], ttlcache.DefaultTTL)
	return vs[0], nil
}

func (s *semantic) countRequest(purpose string, err error) {
	var e *embeddings.Error
	switch {
	case err == nil:
		s.requests.WithLabelValues(purpose, "ok").Inc()
	case errors.As(err, &e) && e.Retryable:
		s.requests.WithLabelValues(purpose, "retryable_error").Inc()
	default:
		s.requests.WithLabelValues(purpose, "error").Inc()
	}
}

// RunEmbedder embeds the documents of the tenants with semantic search on
// until ctx ends: after every save (in this process) and every Poll. Each
// round takes one batch from each such tenant in turn, so a tenant with
// many documents does not hold the others back; one request to the
// provider carries one tenant's text only. Failed attempts are retried
// with exponential back-off (the provider's Retry-After pauses all work);
// a document is failed after MaxAttempts, or at once when the provider
// refuses the input. It does nothing when no provider is configured.
func (s *Server) RunEmbedder(ctx context.Context) {
	sem := s.semantic
	if !sem.configured() {
		return
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-sem.wake:
		}
		for ctx.Err() == nil {
			if wait := time.Until(sem.pausedUntil()); wait > 0 {
				break
			}
			busy, err := sem.round(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("embedding worker", "error", err)
				break
			}
			if !busy {
				break
			}
		}
		next := sem.opts.Poll
		if wait := time.Until(sem.pausedUntil()); wait > 0 {
			next = wait
		}
		timer.Reset(next)
	}
}

func (s *semantic) pausedUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pause
}

// round embeds one batch of each tenant with semantic search on and
// reports whether any tenant had work. A tenant whose turn fails (its
// tables locked by a migration or maintenance: the worker's transactions
// wait at most store.BackgroundLockWait; a schema of its own that is
// broken) is logged once, when it starts failing, and again when it
// recovers, and the round goes on with the next tenant: it is tried
// again at the next round. (The first tenant to fail used to end every
// round, so the tenants after it, in creation order, were never
// embedded.) A database that cannot be reached still ends the round. err
// is that, the tenant list's error, or ctx's.
func (s *semantic) round(ctx context.Context) (busy bool, err error) {
	tenants, err := s.db.FindSemanticSearchTenants(ctx)
	if err != nil {
		return false, err
	}
	count := time.Since(s.counted) > time.Minute
	for _, t := range tenants {
		if ctx.Err() != nil || time.Until(s.pausedUntil()) > 0 {
			return false, ctx.Err()
		}
		if t.SchemaVersion < chunksVersion {
			continue // not migrated yet (the maintenance loop will)
		}
		did, err := s.turn(ctx, t, count)
		busy = busy || did
		if ctx.Err() != nil {
			return busy, ctx.Err()
		}
		if store.Unavailable(err) && !store.Locked(err) {
			// The database, not the tenant: every other turn would wait
			// for it too. The loop logs it and tries again later.
			return busy, fmt.Errorf("tenant %s: %w", t.Key, err)
		}
		s.failed(t, err)
	}
	if count {
		// Each tenant's last counts: one whose turn failed keeps its
		// previous ones rather than making the gauges dip.
		s.counted = time.Now()
		counts := map[string]int{store.EmbedPending: 0, store.EmbedEmbedded: 0, store.EmbedFailed: 0}
		s.mu.Lock()
		for _, t := range tenants {
			for k, v := range s.stateCounts[t.ID] {
				counts[k] += v
			}
		}
		s.mu.Unlock()
		for k, v := range counts {
			s.states.WithLabelValues(k).Set(float64(v))
		}
	}
	return busy, nil
}

// turn is t's part of a round: its index (once), one batch of its
// documents, and with count its documents' states, kept as its last
// counts (stateCounts). The documents are embedded whether or not the
// index could be built this round (searches rank exactly without it): a
// build held up by another session's lock or transaction
// (store.ErrIndexBuildLocked: a long query, a dump) is reported as the
// turn's error once the batch is done, and one that another replica is
// running (store.ErrIndexBuilding) is no error; both are tried again at
// the next round.
func (s *semantic) turn(ctx context.Context, t *tenancy.Tenant, count bool) (did bool, err error) {
	ierr := s.ensureIndex(ctx, t)
	switch {
	case errors.Is(ierr, store.ErrIndexBuilding):
		ierr = nil
	case store.Unavailable(ierr) && !store.Locked(ierr):
		return false, ierr // the database, not the index
	}
	defer func() {
		if !store.Unavailable(err) || store.Locked(err) {
			err = errors.Join(err, ierr)
		}
	}()
	if did, err = s.embedBatch(ctx, t); err != nil || !count {
		return did, err
	}
	return did, s.db.InTenantBackground(ctx, t, func(ctx context.Context, tx pgx.Tx) error {
		c, err := store.CountEmbeddingStates(ctx, tx, s.client.Model())
		if err == nil {
			s.mu.Lock()
			s.stateCounts[t.ID] = c
			s.mu.Unlock()
		}
		return err
	})
}

// failed notes the outcome of t's turn (err nil: it succeeded), logging a
// tenant that starts failing and one that recovers.
func (s *semantic) failed(t *tenancy.Tenant, err error) {
	s.mu.Lock()
	was := s.failing[t.ID]
	if err != nil {
		s.failing[t.ID] = true
	} else {
		delete(s.failing, t.ID)
	}
	s.mu.Unlock()
	switch {
	case err != nil && !was:
		s.log.Warn("embedding worker: a tenant's turn failed; the others go on, and it is tried again at each round", "tenant", t.Key, "error", err)
	case err == nil && was:
		s.log.Info("embedding worker: the tenant's turn succeeded again", "tenant", t.Key)
	}
}

// ensureIndex creates t's HNSW index once per process (pgvector only). A
// build held up by a lock (store.ErrIndexBuildLocked: a long transaction,
// a dump) is not tried again for indexBackoffMin, doubling at each such
// failure up to indexBackoffMax: each try waits up to the build's lock
// bound, twice, in every round, and a failed build may have done the
// whole build first. Meanwhile ensureIndex returns that failure again
// without trying (the tenant's turn stays failed, and is logged once),
// unless the index was built elsewhere meanwhile (another replica, an
// operator): that is one catalog read a round (indexReady), and ends the
// wait.
func (s *semantic) ensureIndex(ctx context.Context, t *tenancy.Tenant) error {
	if s.index == nil && s.buildIndex == nil {
		return nil
	}
	s.mu.Lock()
	done, wait := s.indexed[t.Schema], s.indexWait[t.Schema]
	s.mu.Unlock()
	if done {
		return nil
	}
	if wait != nil && time.Now().Before(wait.next) {
		ready := s.indexReady
		if ready == nil {
			ready = func(ctx context.Context, t *tenancy.Tenant) (bool, error) {
				if s.index == nil { // a test's build, and no way to look its index up
					return false, nil
				}
				return s.db.VectorIndexReady(ctx, t.Schema, s.index)
			}
		}
		if ok, err := ready(ctx, t); err != nil || !ok {
			return wait.err
		}
		s.mu.Lock()
		s.indexed[t.Schema] = true
		delete(s.indexWait, t.Schema)
		s.mu.Unlock()
		return nil
	}
	build := s.buildIndex
	if build == nil {
		build = func(ctx context.Context, t *tenancy.Tenant) error {
			return s.db.EnsureVectorIndex(ctx, t.Schema, s.index)
		}
	}
	err := build(ctx, t)
	if err != nil {
		err = fmt.Errorf("creating the HNSW index of %s: %w", t.Key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		s.indexed[t.Schema] = true
		delete(s.indexWait, t.Schema)
	case errors.Is(err, store.ErrIndexBuildLocked):
		d := indexBackoffMin
		if wait != nil {
			d = min(2*wait.d, indexBackoffMax)
		}
		s.indexWait[t.Schema] = &indexBackoff{next: time.Now().Add(d), d: d, err: err}
	}
	return err
}

// indexBackoff is a tenant's index build held back after a lock held it up.
type indexBackoff struct {
	next time.Time     // no try before
	d    time.Duration // the last wait
	err  error         // the failure, returned meanwhile
}

// Bounds of the wait between index builds that locks held up.
const (
	indexBackoffMin = time.Minute
	indexBackoffMax = 30 * time.Minute
)
