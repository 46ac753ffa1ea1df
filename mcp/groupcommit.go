package mcp

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// groupCommitMax bounds the records of one group commit.
const groupCommitMax = 512

// groupCommitDelay bounds how long the writer waits for records of calls
// already running before it flushes what it has (PostgreSQL's commit_delay
// idea, but only while other calls are in flight).
const groupCommitDelay = 2 * time.Millisecond

// groupCommitTimeout bounds one flush (and so how long a call waits for
// its record when the database hangs).
const groupCommitTimeout = 5 * time.Second

// groupCommitter writes the audit records of calls that change nothing
// (whoami, reads, refusals) in shared transactions: a call enqueues its
// record when it has run, and waits; one writer at a time takes everything
// queued (up to groupCommitMax records, any tenants), writes it with one
// round trip and one commit (store.InsertAuditBatch), and wakes the
// callers. While more calls are in flight than records are queued, the
// writer waits for them up to groupCommitDelay; records that arrive during
// a flush form the next batch. So batches grow with load, and a lone call
// on an idle server is flushed at once.
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
	wake    chan struct{}
	// inFlight counts the calls admitted and not answered; holding, the
	// records queued whose calls are among them (calls that kept their
	// admission slot, see Server.commitAudit). While inFlight exceeds
	// holding, admitted calls have yet to queue their records: more may
	// be on their way.
	inFlight func() int
	holding  int

	flushes, records atomic.Int64 // for tests and benchmarks
	beforeFlush      func()       // tests: runs as each flush begins
}

func (g *groupCommitter) signal() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

type pendingAudit struct {
	entry store.AuditEntry
	done  chan error
	holds bool // its call holds an admission slot while it waits
}

// write enqueues rec for t's audit log and waits until it is durable (or
// could not be written). It waits even if ctx ends: the record may be
// committing, and the call must not answer before knowing. The wait is
// bounded by groupCommitTimeout per flush. holds says the call keeps its
// admission slot while it waits.
func (g *groupCommitter) write(t *tenancy.Tenant, rec *store.AuditRecord, holds bool) error {
	p := &pendingAudit{entry: store.AuditEntry{Tenant: t, Rec: rec}, done: make(chan error, 1), holds: holds}
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if holds {
		g.holding++
	}
	if !g.running {
		g.running = true
		go g.drain()
	}
	g.mu.Unlock()
	g.signal()
	return <-p.done
}

// drain flushes batches until the queue is empty, then exits (no goroutine
// outlives the work).
func (g *groupCommitter) drain() {
	var timer *time.Timer
	for {
		g.mu.Lock()
		if n := len(g.queue); n > 0 && n < groupCommitMax && g.inFlight != nil && g.holding < g.inFlight() {
			// More records are on their way: wait for them, briefly.
			if timer == nil {
				timer = time.NewTimer(groupCommitDelay)
			}
			g.mu.Unlock()
			select {
			case <-g.wake:
				continue
			case <-timer.C:
			}
			g.mu.Lock()
		}
		timer = nil
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
		for _, p := range batch {
			if p.holds {
				g.holding--
			}
		}
		g.mu.Unlock()
		g.flush(batch)
	}
}

func (g *groupCommitter) flush(batch []*pendingAudit) {
	if g.beforeFlush != nil {
		g.beforeFlush()
	}
	g.flushes.Add(1)
	g.records.Add(int64(len(batch)))
	ctx, cancel := context.WithTimeout(context.Background(), groupCommitTimeout)
	defer cancel()
	entries := make([]store.AuditEntry, len(batch))
	for i, p := range batch {
		entries[i] = p.entry
	}
	errs, retried := g.db.WriteAuditEntries(ctx, entries)
	if retried != nil {
		g.log.Warn("audit: a group commit failed; its records were written one by one", "records", len(batch), "error", retried)
	}
	for i, err := range errs {
		batch[i].done <- err
	}
}

// GroupCommitStats reports how many group commits this server made and
// how many records they held (for benchmarks: records per commit).
func (s *Server) GroupCommitStats() (flushes, records int64) {
	return s.audit.group.flushes.Load(), s.audit.group.records.Load()
}
