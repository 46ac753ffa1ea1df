package mcp

import (
	"context"
	"errors"
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

// DefaultAuditCommitWindow is Options.AuditCommitWindow's default,
// chosen by measurement (bench/README.md, "The commit window").
const DefaultAuditCommitWindow = 3 * time.Millisecond

// groupCommitter writes the audit records of calls that change nothing
// (whoami, reads, refusals) in shared transactions: a call enqueues its
// record when it has run, and waits; one writer at a time takes everything
// queued (up to groupCommitMax records, any tenants), writes it with one
// round trip and one commit (store.DB.WriteAuditEntries; one per control
// lane, in parallel, while many tenants are busy), and wakes the callers. Records that arrive during a flush form the next batch, and
// before flushing it the writer may wait (see [groupCommitter.hold]):
//   - while calls in flight have yet to queue their records, for them, up
//     to groupCommitDelay (not for calls that write their records in
//     their own transactions, nor tools running on their own connections:
//     see Server.awayFromGroupCommit);
//   - while fewer calls are in the server than a moment ago and records
//     arrive fast enough to expect another, for the calls on their way
//     back, until window has passed since the previous flush began
//     (PostgreSQL's commit_delay and commit_siblings idea: a busy server
//     flushes at most once per window, trading up to a window of latency
//     for fewer commits, the cost that does not scale out).
//
// So batches grow with load, and a lone call on an idle server is flushed
// at once.
//
// A call answers only after its record committed: an acknowledged call is
// never unaudited. If a batch fails, its records are written one by one
// (store.DB.InsertAuditRecord, which falls back to a reduced form), so one
// bad record never drops the others; when the database cannot be reached
// at all they fail together at once, and their calls answer 503.
type groupCommitter struct {
	db     *store.DB
	log    *slog.Logger
	window time.Duration // zero: no window

	mu      sync.Mutex
	queue   []*pendingAudit
	running bool // a writer goroutine is draining the queue
	wake    chan struct{}
	// inFlight counts the calls admitted and not answered; holding, the
	// records queued or being committed whose calls are among them (calls
	// that kept their admission slot, see Server.commitAudit), until each
	// such call has given its slot back (committed): a call answered
	// after its commit is never taken for one whose record is on its way.
	// While inFlight exceeds holding, admitted calls have yet to queue
	// their records: more may be on their way.
	inFlight func() int
	holding  int
	// away counts the calls in flight (among inFlight's) whose records
	// will not come here soon: calls that write their audit record
	// themselves, in their own transaction (a tool that changes data, a
	// resource read, a call whose group commit failed), and tools running
	// on their own connection (query), which may take up to the tool time
	// limit before they queue theirs. The writer does not wait for them
	// (see Server.awayFromGroupCommit).
	away atomic.Int64
	// lastStart is when the last flush began; peakCur and peakPrev, the
	// most calls seen in the server (records queued and calls running) in
	// the period that began at peakSince and in the one before.
	lastStart         time.Time
	peakCur, peakPrev int
	peakSince         time.Time
	// rate is the records per second that arrived over recent flushes (a
	// moving average of each batch's size over the time since the flush
	// before it began).
	rate float64

	flushes, records atomic.Int64 // for tests and benchmarks
	waits            atomic.Int64 // batches held back before their flush (tests)
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
}

// write enqueues rec for t's audit log and waits until it is durable (or
// could not be written). It waits even if ctx ends: the record may be
// committing, and the call must not answer before knowing. The wait is
// bounded by groupCommitTimeout per flush. holds says the call keeps its
// admission slot while it waits: it counts in holding until it calls
// committed, once it has given its slot back.
func (g *groupCommitter) write(t *tenancy.Tenant, rec *store.AuditRecord, holds bool) error {
	p := &pendingAudit{entry: store.AuditEntry{Tenant: t, Rec: rec}, done: make(chan error, 1)}
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

// committed notes that a call whose record was written with holds (it
// kept its admission slot) has given its slot back: it no longer counts
// in holding. Its slot must be released first (see Server.commitAudit).
func (g *groupCommitter) committed() {
	g.mu.Lock()
	g.holding--
	g.mu.Unlock()
}

// awayFromGroupCommit notes that c's call will not queue a record for
// the group commit soon, until done is called: it writes its audit record
// itself, in its own transaction, or it runs on its own connection (query)
// and may take up to the tool time limit before it queues one. Meanwhile
// the writer does not take it for a call whose record is on its way
// (groupCommitter.hold), so it does not hold other calls' records back for
// it: one tenant's slow statements must not delay every other tenant's
// answers. Only a call holding its admission slot (c.slot) counts among
// the calls in flight, so only such a call is noted. (Between a done at
// the call's end and the slot's release, a moment, the call counts as
// running again: at worst one batch waits groupCommitDelay for it, as
// every batch did before.)
func (s *Server) awayFromGroupCommit(c *Caller) (done func()) {
	if c.slot == nil {
		return func() {}
	}
	g := s.audit.group
	g.away.Add(1)
	var once sync.Once
	return func() { once.Do(func() { g.away.Add(-1) }) }
}

// hold says until when the writer waits before flushing the queue at
// now, the zero time for not at all; waitFor is when the writer began
// waiting for this batch's calls in flight. Called with mu held.
//
// Beyond the calls in flight, it waits for calls still to come, until
// window has passed since the last flush began, while both hold:
//   - fewer calls are in the server (records queued and calls running)
//     than at the recent peak: the calls answered a moment ago are
//     expected back from their clients. A client making one call after
//     another is never made to wait for itself (alone, it is the peak;
//     once others' burst has ended, at most once: see drain), nor are a
//     few clients once all of them are in;
//   - records arrive fast enough (rate) to expect one more before then.
//
// This is PostgreSQL's commit_delay and commit_siblings idea, bounded by
// the window.
func (g *groupCommitter) hold(now, waitFor time.Time) time.Time {
	n := len(g.queue)
	if n == 0 || n >= groupCommitMax {
		return time.Time{}
	}
	var until time.Time
	running := 0
	if g.inFlight != nil {
		running = max(g.inFlight()-g.holding-int(g.away.Load()), 0)
	}
	if running > 0 {
		// More records are on their way: wait for them, briefly.
		until = waitFor.Add(groupCommitDelay)
	}
	if inside := n + running; g.window > 0 && inside < g.peak(now, inside) {
		if w := g.lastStart.Add(g.window); w.After(until) && g.rate*w.Sub(now).Seconds() >= 1 {
			until = w
		}
	}
	if !now.Before(until) {
		return time.Time{}
	}
	return until
}

// peakPeriod is how long a peak of calls in the server counts: it is the
// highest of the current and the previous period.
const peakPeriod = 100 * time.Millisecond

// peak notes inside, the calls in the server at now, and returns the
// recent peak. Called with mu held.
func (g *groupCommitter) peak(now time.Time, inside int) int {
	if since := now.Sub(g.peakSince); since >= 2*peakPeriod {
		g.peakPrev, g.peakCur, g.peakSince = 0, 0, now
	} else if since >= peakPeriod {
		g.peakPrev, g.peakCur, g.peakSince = g.peakCur, 0, now
	}
	g.peakCur = max(g.peakCur, inside)
	return max(g.peakPrev, g.peakCur)
}

// drain flushes batches until the queue is empty, then exits (no goroutine
// outlives the work).
//
// A batch held back that no record joined before its flush says that the
// calls the peak expected back are not coming (a burst has ended; the
// clients left): the peak is forgotten, to be noted afresh, so that a
// client calling one call after another once the others have gone is held
// back once, not on every call until the burst's peak ages out
// (peakPeriod).
func (g *groupCommitter) drain() {
	var waitFor time.Time
	heldWith := 0 // records queued when this batch was first held back
	for {
		g.mu.Lock()
		now := time.Now()
		if waitFor.IsZero() {
			waitFor = now
		}
		if until := g.hold(now, waitFor); !until.IsZero() {
			if waitFor.Equal(now) {
				g.waits.Add(1)
				heldWith = len(g.queue)
			}
			g.mu.Unlock()
			timer := time.NewTimer(until.Sub(now))
			select {
			case <-g.wake:
			case <-timer.C:
			}
			timer.Stop()
			continue
		}
		waitFor = time.Time{}
		if heldWith > 0 && len(g.queue) == heldWith {
			g.peakCur, g.peakPrev = 0, 0 // no one came back: forget the peak
		}
		heldWith = 0
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
		if d := now.Sub(g.lastStart).Seconds(); d > 0 && !g.lastStart.IsZero() {
			g.rate += (float64(len(batch))/d - g.rate) / 4
		}
		g.lastStart = now
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
		// With many busy tenants a group commit is one transaction per
		// control lane: retried says which parts failed, and their sizes.
		g.log.Warn("audit: a group commit (or its part on a control lane) failed; its records were written one by one", "batch_records", len(batch), "error", retried)
	}
	for i, err := range errs {
		if errors.Is(err, store.ErrAuditProbe) {
			// Its tenant's audit log was locked a moment ago: written
			// alone, its outcome says whether the lock is gone, and the
			// next flushes do not wait for it (store: audit_busy.go).
			p := batch[i]
			go func() {
				pctx, cancel := context.WithTimeout(context.Background(), groupCommitTimeout)
				defer cancel()
				_, err := g.db.ProbeAuditRecord(pctx, p.entry.Tenant, p.entry.Rec)
				p.done <- err
			}()
			continue
		}
		batch[i].done <- err
	}
}

// GroupCommitStats reports how many group commits this server made and
// how many records they held (for benchmarks: records per commit).
func (s *Server) GroupCommitStats() (flushes, records int64) {
	return s.audit.group.flushes.Load(), s.audit.group.records.Load()
}
