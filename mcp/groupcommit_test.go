package mcp_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestGroupCommitIgnoresOwnRecordCalls: the audit writer waits for calls
// in flight only when their records will come to it soon. A call that
// writes its record in its own transaction (a tool that changes data, a
// resource read) never queues one, and a tool with its own connection
// (query, which may run for the whole tool time limit) queues one only
// once it has run, so while such a call of tenant A is in flight (held by
// a table lock), tenant B's whoami calls,
// made one after another, are flushed at once: none of their group
// commits is held back. Before, each waited groupCommitDelay (or the
// commit window) for a record that never came: one tenant's slow
// statements made every other tenant's calls slower. For each kind of
// such call; every call is answered and audited.
func TestGroupCommitIgnoresOwnRecordCalls(t *testing.T) {
	for _, tc := range []struct {
		name, table string
		request     func(g *gatehouse, key string) answer
	}{
		{"a tool that changes data", "todos", func(g *gatehouse, key string) answer {
			return rawCall(&http.Client{}, g.url, key, "add_todo", `{"title":"behind a lock"}`, 1)
		}},
		{"a tool with its own connection (query), until it has run", "todos", func(g *gatehouse, key string) answer {
			return rawCall(&http.Client{}, g.url, key, "query", `{"sql":"select count(*) from todos"}`, 1)
		}},
		{"a resource read", "documents", func(g *gatehouse, key string) answer {
			return rawRPC(g.url, key, `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"gatehouse://documents/00000000-0000-4000-8000-000000000000"}}`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGatehouse(t)
			keyA := g.key(t, "slow.example", tenancy.Developer)
			keyB := g.key(t, "quick.example", tenancy.Developer)
			ctx := context.Background()
			// Tenant A's first call prepares its schema; then lock the table.
			if a := rawCall(&http.Client{}, g.url, keyA, "whoami", `{}`, 1); a.status != http.StatusOK {
				t.Fatalf("whoami A: %d %v %s", a.status, a.err, a.body)
			}
			var schema string
			if err := g.db.Pool().QueryRow(ctx, "SELECT schema_name FROM gatehouse.tenants WHERE key = 'slow.example'").Scan(&schema); err != nil {
				t.Fatal(err)
			}
			lock, err := g.db.Pool().Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer lock.Rollback(ctx)
			if _, err := lock.Exec(ctx, "LOCK TABLE "+pgx.Identifier{schema, tc.table}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
				t.Fatal(err)
			}
			slow := make(chan answer, 1)
			go func() { slow <- tc.request(g, keyA) }()
			// Wait until A's call is in flight and waits for the lock.
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				var n int
				if err := g.db.Pool().QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()").Scan(&n); err != nil {
					t.Fatal(err)
				}
				if inFlight, _, _ := mcp.AdmissionState(g.srv); n == 1 && inFlight == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("tenant A's call never waited for the lock")
				}
			}
			before := mcp.GroupCommitWaits(g.srv)
			for i := range 5 {
				if a := rawCall(&http.Client{}, g.url, keyB, "whoami", `{}`, i+2); a.status != http.StatusOK || !strings.Contains(a.body, "quick.example") {
					t.Fatalf("whoami B %d: %d %v %s", i, a.status, a.err, a.body)
				}
			}
			if n := mcp.GroupCommitWaits(g.srv) - before; n != 0 {
				t.Errorf("%d of tenant B's 5 group commits were held back for tenant A's call, whose record does not come to the writer soon", n)
			}
			if err := lock.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if a := <-slow; a.err != nil || a.status != http.StatusOK {
				t.Errorf("tenant A's call: %d %v %s", a.status, a.err, a.body)
			}
			for key, want := range map[string]int{"slow.example": 2, "quick.example": 5} {
				if err := g.db.Pool().QueryRow(ctx, "SELECT schema_name FROM gatehouse.tenants WHERE key = $1", key).Scan(&schema); err != nil {
					t.Fatal(err)
				}
				settleAudit(t, g, key)
				var n int
				if err := g.db.Pool().QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "audit_log"}.Sanitize()).Scan(&n); err != nil || n != want {
					t.Errorf("%s: %d audit records (%v), want %d", key, n, err, want)
				}
			}
		})
	}
}

// TestGroupCommitForgetsAFinishedBurst: after a burst of tenant A's
// calls (32 clients at once) has ended, tenant B's client calling whoami
// one call after another is held back by the commit window at most once:
// the hold that no record joined tells the writer that the calls it
// expected back (the burst's peak) are gone. Before, each of B's calls was
// held back until the burst's peak aged out (100 to 200 ms): measured
// with the default 3 ms window, a sequential client ran ~3x slower
// (0.9 -> ~2.9 ms a call) for ~150 ms after every burst, 60-75% of its
// commits held. The window here is 50 ms, so that B's calls, however slow
// the machine, come back well within it. Every call is answered.
func TestGroupCommitForgetsAFinishedBurst(t *testing.T) {
	g := newGatehouse(t, func(s *setup) {
		s.admission = &mcp.Admission{Total: 32, Tenant: 32, Principal: 32, TenantQueue: 64, Wait: time.Minute}
		s.options = func(o *mcp.Options) { o.AuditCommitWindow = 50 * time.Millisecond }
	})
	keyA := g.key(t, "burst.example", tenancy.Developer)
	keyB := g.key(t, "steady.example", tenancy.Developer)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, key := range []string{keyA, keyB} {
		if a := rawCall(client, g.url, key, "whoami", `{}`, 1); a.status != http.StatusOK {
			t.Fatalf("whoami: %d %v %s", a.status, a.err, a.body)
		}
	}
	var wg sync.WaitGroup
	release := make(chan struct{})
	var failed atomic.Int32
	for range 32 {
		wg.Go(func() {
			<-release
			for i := range 3 {
				if a := rawCall(client, g.url, keyA, "whoami", `{}`, i+2); a.status != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	close(release)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of the burst's calls failed", n)
	}
	before := mcp.GroupCommitWaits(g.srv)
	for i := range 8 {
		if a := rawCall(client, g.url, keyB, "whoami", `{}`, i+2); a.status != http.StatusOK {
			t.Fatalf("whoami B %d: %d %v %s", i, a.status, a.err, a.body)
		}
	}
	if n := mcp.GroupCommitWaits(g.srv) - before; n > 1 {
		t.Errorf("%d of tenant B's 8 one-after-another calls were held back after tenant A's burst had ended; want at most 1", n)
	}
}

// TestGroupCommitNoPhantomAfterFlush: a call that kept its admission
// slot while it waited for its record's commit (its tenant at its bound of
// calls waiting that way, see admitter.yield) stays in flight until it has
// answered, after the commit; the writer must not take it, meanwhile, for
// a call whose record is still on its way. Tenant T may have one call in
// flight and one waiting for a commit: T's first whoami gives its slot
// back and its commit is held; T's second keeps its slot; U's call joins
// it; that commit (#2) is held while U's second call queues. When #2
// ends, the writer commits U's second call at once: none of its batches
// waits for T's answered call (window off, so only that rule could hold
// it). Before, #2's calls left the writer's count of calls holding slots
// when the batch was taken, while T's call still held its slot until it
// answered, so the next batch waited groupCommitDelay for it.
func TestGroupCommitNoPhantomAfterFlush(t *testing.T) {
	g := newGatehouse(t, func(s *setup) {
		s.admission = &mcp.Admission{Total: 8, Tenant: 1, Principal: 1, TenantQueue: 1, Wait: time.Minute}
		s.options = func(o *mcp.Options) { o.AuditCommitWindow = -1 }
	})
	keyT := g.key(t, "t.example", tenancy.Developer)
	keyU := g.key(t, "u.example", tenancy.Developer)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for _, key := range []string{keyT, keyU} {
		if a := rawCall(client, g.url, key, "whoami", `{}`, 1); a.status != http.StatusOK {
			t.Fatalf("whoami: %d %v %s", a.status, a.err, a.body)
		}
	}
	began := make(chan struct{}, 4)
	proceed := make(chan struct{}, 4)
	var holding atomic.Bool
	mcp.SetBeforeGroupCommit(g.srv, func() {
		if holding.Load() {
			began <- struct{}{}
			<-proceed
		}
	})
	reach := func(queued int) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			if _, _, q := mcp.AdmissionState(g.srv); q == queued {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("never %d records queued", queued)
			}
		}
	}
	holding.Store(true)
	answers := make(chan answer, 4)
	send := func(key string, id int) { go func() { answers <- rawCall(client, g.url, key, "whoami", `{}`, id) }() }
	send(keyT, 2) // gives its slot back; its commit (#1) is held
	<-began
	send(keyT, 3) // keeps its slot (T's one call waiting for a commit is #1's)
	send(keyU, 4)
	reach(2)
	proceed <- struct{}{} // #1 ends; #2 (T's second call and U's) begins, held
	<-began
	holding.Store(false)
	before := mcp.GroupCommitWaits(g.srv)
	send(keyU, 5)
	reach(1)
	proceed <- struct{}{} // #2 ends; U's second call is committed next
	for range 4 {
		if a := <-answers; a.status != http.StatusOK || a.err != nil {
			t.Fatalf("whoami: %d %v %s", a.status, a.err, a.body)
		}
	}
	if n := mcp.GroupCommitWaits(g.srv) - before; n != 0 {
		t.Errorf("the commit after #2 was held back %d times for a call that had already been committed", n)
	}
}

// rawRPC posts one JSON-RPC request to url with token.
func rawRPC(url, token, body string) answer {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return answer{err: fmt.Errorf("reading the answer: %w", err)}
	}
	return answer{status: res.StatusCode, body: string(b)}
}
