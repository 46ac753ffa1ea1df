package mcp

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// SetAlertClock sets the clock of s's anomaly detector (tests: closing the
// minutes of failed authentications without waiting for them).
func SetAlertClock(s *Server, now func() time.Time) { s.alerts.now = now }

// RegisterFailAfterFinal registers a tool, fail_after_final, that adds a
// todo with its write's final statement (store.Final), which commits the
// todo with the call's audit record, and then fails: the case
// store.ErrWriteCommitted reports (tests: how such a call is answered and
// audited).
func RegisterFailAfterFinal(s *Server) {
	type in struct {
		Title string `json:"title"`
	}
	type out struct{}
	s.register(newTool(ToolSpec{Name: "fail_after_final", Title: "Fail after final", Description: "Test tool.",
		Role: tenancy.Developer, Scope: identity.ScopeWrite},
		func(ctx context.Context, c *Call, in in) (out, error) {
			if _, err := store.AddTodo(store.Final(ctx), c.Tx, in.Title, "", c.Principal.Subject); err != nil {
				return out{}, err
			}
			return out{}, errors.New("the tool failed after its final statement")
		}))
}

// SetBeforeGroupCommit makes f run as each group commit of s begins,
// before its records are written (tests: holding a commit back).
func SetBeforeGroupCommit(s *Server, f func()) { s.audit.group.beforeFlush = f }

// AdmissionState reports s's calls admitted and in flight, waiting for
// admission, and records queued for the next group commit.
func AdmissionState(s *Server) (inFlight, waiting, queued int) {
	s.audit.group.mu.Lock()
	queued = len(s.audit.group.queue)
	s.audit.group.mu.Unlock()
	return s.admit.inFlight(), s.admit.waiting(), queued
}

// GroupCommitWaits reports how many group commits of s were held back
// (groupCommitter.hold) before they began.
func GroupCommitWaits(s *Server) int64 { return s.audit.group.waits.Load() }

// lockedBuffer is a bytes.Buffer safe for concurrent writers (loggers'),
// for the tests of both packages (LockedBuffer).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// LockedBuffer is lockedBuffer for the external tests.
type LockedBuffer = lockedBuffer

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Reset empties the buffer.
func (l *lockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}

// ReadNewAudit runs s's anomaly detector on tcs (tenants and cursors the
// caller listed with store.DB.TenantsWithNewAudit) as a pass does once it
// has listed them: no lease, no failed authentications. It returns the
// tenants' errors, joined.
func ReadNewAudit(ctx context.Context, s *Server, tcs []store.TenantCursor) error {
	_, errs, _, _, err := s.alerts.read(ctx, tcs, nil, func() (bool, error) { return true, nil })
	return errors.Join(append(errs, err)...)
}

// AlertFailing returns the ids of the tenants s's anomaly detector reads
// alone because their last read failed, sorted.
func AlertFailing(s *Server) []string {
	s.alerts.mu.Lock()
	defer s.alerts.mu.Unlock()
	return slices.Sorted(maps.Keys(s.alerts.failing))
}

// WatchAlertGroups has s's anomaly detector call f with the ids of the
// tenants it reads many to a transaction, each time it does.
func WatchAlertGroups(s *Server, f func(ids []string)) {
	detect := s.alerts.detectTenants
	s.alerts.detectTenants = func(ctx context.Context, in []store.DetectInput, limit int, fn func(int, store.AnomalyInput) (store.AnomalyOutput, error)) []store.DetectResult {
		ids := make([]string, len(in))
		for i, d := range in {
			ids[i] = d.Tenant.ID
		}
		f(ids)
		return detect(ctx, in, limit, fn)
	}
}

// SetVectorIndex makes s's embedding worker build v's index for each tenant
// (tests: a build that fails, where pgvector is not installed).
func SetVectorIndex(s *Server, v *store.VectorIndex) { s.semantic.index = v }

// SetIndexBuild makes s's embedding worker build each tenant's index with
// build instead of pgvector's HNSW index (tests: a build a lock holds up,
// where pgvector is not installed).
func SetIndexBuild(s *Server, build func(ctx context.Context, t *tenancy.Tenant) error) {
	s.semantic.buildIndex = build
}

// SetIndexReady makes s's embedding worker ask ready whether a tenant's
// index exists, instead of looking for pgvector's HNSW index.
func SetIndexReady(s *Server, ready func(ctx context.Context, t *tenancy.Tenant) (bool, error)) {
	s.semantic.indexReady = ready
}
