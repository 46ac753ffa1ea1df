package mcp

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// groupCommitMax bounds the records of one group commit.
const groupCommitMax = 512

// groupCommitTimeout bounds one flush (and so how long a call waits for
// its record when the database hangs).
const groupCommitTimeout = 5 * time.Second

// groupCommitter writes the audit records of calls that change nothing
// (whoami, reads, refusals) in shared transactions: a call enqueues its
// record and waits; one writer at a time takes everything queued (up to
// groupCommitMax records, any tenants), writes it with one round trip and
// one commit (store.InsertAuditBatch), and wakes the callers. Records that
// arrive while a flush runs form the next batch, so batches grow with load
// and an idle server flushes each record at once (no timer adds latency).
//
// A call answers only after its record committed: an acknowledged call is
// never unaudited. If a batch fails, its records are written one by one
// (store.DB.InsertAuditRecord, which falls back to a reduced form), so one
// bad record never drops the others; when the database cannot be reached
// at all they fail together at once, and their calls answer 503.
type groupCommitter struct {
	db  *store.DB
	log *slog.Logger

	mu      sync.Mutex
	queue   []*pendingAudit
	running bool // a writer goroutine is draining the queue
}

type pendingAudit struct {
	entry store.AuditEntry
	done  chan error
}

// write enqueues rec for t's audit log and waits until it is durable (or
// could not be written). It waits even if ctx ends: the record may be
// committing, and the call must not answer before knowing. The wait is
// bounded by groupCommitTimeout per flush.
func (g *groupCommitter) write(t *tenancy.Tenant, rec *store.AuditRecord) error {
	p := &pendingAudit{entry: store.AuditEntry{Tenant: t, Rec: rec}, done: make(chan error, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if !g.running {
		g.running = true
		go g.drain()
	}
	g.mu.Unlock()
	return <-p.done
}

// drain flushes batches until the queue is empty, then exits (no goroutine
// outlives the work).
func (g *groupCommitter) drain() {
	for {
		g.mu.Lock()
		batch := g.queue
		if len(batch) > groupCommitMax {
			batch, g.queue = batch[:groupCommitMax:groupCommitMax], batch[groupCommitMax:]
		} else {
			g.queue = nil
		}
		if len(batch) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.flush(batch)
	}
}

func (g *groupCommitter) flush(batch []*pendingAudit) {
	ctx, cancel := context.WithTimeout(context.Background(), groupCommitTimeout)
	defer cancel()
	entries := make([]store.AuditEntry, len(batch))
	for i, p := range batch {
		entries[i] = p.entry
	}
	err := g.db.InsertAuditBatch(ctx, entries)
	if err == nil {
		for _, p := range batch {
			p.done <- nil
		}
		return
	}
	if store.Unavailable(err) || ctx.Err() != nil {
		for _, p := range batch {
			p.done <- err
		}
		return
	}
	g.log.Warn("audit: a group commit failed; writing its records one by one", "records", len(batch), "error", err)
	for _, p := range batch {
		p.entry.Rec.ID = 0
		_, e := g.db.InsertAuditRecord(ctx, p.entry.Tenant, p.entry.Rec)
		p.done <- e
	}
}
