package mcp_test

import (
	"context"
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

// TestAuditWaitGivesBackTheSlot: one API key may have one call in flight
// (Principal and Tenant bounds 1); its whoami calls are sent while the
// first group commit is held back. A call waiting only for its record's
// commit holds no connection, so it gives its slot to the next call: all
// eight calls sent at once run and queue their records, none waits for
// admission, none is answered before the commit, and the held-back commit
// is followed by one commit of the other seven (before, the seven waited
// for admission and were committed one at a time). With a bound of three
// such waiting calls per tenant (TenantQueue 3), calls sent one by one:
// the fourth keeps its slot while it waits, and the next three wait for
// admission. Every call is answered and audited either way. Run it with
// -race.
func TestAuditWaitGivesBackTheSlot(t *testing.T) {
	type state struct{ inFlight, waiting, queued int }
	for _, tc := range []struct {
		name    string
		queue   int
		steps   []state // after each call (the first's record is held back: not queued), or after all at once
		flushes int64
	}{
		{"all yield", 64, []state{{0, 0, 7}}, 2},
		{"three may yield", 3, []state{{0, 0, 1}, {0, 0, 2}, {1, 0, 3}, {1, 1, 3}, {1, 2, 3}, {1, 3, 3}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGatehouse(t, func(s *setup) {
				s.admission = &mcp.Admission{Total: 8, Tenant: 1, Principal: 1, TenantQueue: tc.queue, Wait: time.Minute}
			})
			key := g.key(t, "yield.example", tenancy.Developer)
			held, hold := make(chan struct{}), make(chan struct{})
			var first sync.Once
			mcp.SetBeforeGroupCommit(g.srv, func() {
				first.Do(func() {
					close(held)
					<-hold
				})
			})
			client := &http.Client{}
			var answered atomic.Int32
			var wg sync.WaitGroup
			calls := 1 + len(tc.steps)
			if len(tc.steps) == 1 {
				calls = 8
			}
			answers := make([]answer, calls)
			call := func(i int) {
				wg.Go(func() {
					answers[i] = rawCall(client, g.url, key, "whoami", `{}`, i+1)
					answered.Add(1)
				})
			}
			reach := func(want state) {
				t.Helper()
				var got state
				for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
					if got.inFlight, got.waiting, got.queued = mcp.AdmissionState(g.srv); got == want {
						return
					}
				}
				t.Fatalf("while the first commit is held: %d in flight, %d waiting for admission, %d queued; want %+v", got.inFlight, got.waiting, got.queued, want)
			}
			call(0)
			<-held // the first call's record is being committed
			defer close(hold)
			if len(tc.steps) == 1 {
				for i := 1; i < calls; i++ {
					call(i)
				}
				reach(tc.steps[0])
			} else {
				for i, want := range tc.steps {
					call(i + 1)
					reach(want)
				}
			}
			if n := answered.Load(); n != 0 {
				t.Errorf("%d calls answered before their records were committed", n)
			}
			hold <- struct{}{} // (the deferred close is then a no-op for the flush)
			wg.Wait()
			for i, a := range answers {
				if a.err != nil || a.status != http.StatusOK || !strings.Contains(a.body, "yield.example") {
					t.Errorf("call %d: %d %v %s", i, a.status, a.err, a.body)
				}
			}
			if flushes, records := g.srv.GroupCommitStats(); records != int64(calls) || (tc.flushes > 0 && flushes != tc.flushes) {
				t.Errorf("%d group commits of %d records; want %d records (in %d commits)", flushes, records, calls, tc.flushes)
			}
			var schema string
			var n int
			ctx := context.Background()
			if err := g.db.Pool().QueryRow(ctx, "SELECT schema_name FROM gatehouse.tenants WHERE key = 'yield.example'").Scan(&schema); err != nil {
				t.Fatal(err)
			}
			settleAudit(t, g, "yield.example")
			if err := g.db.Pool().QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "audit_log"}.Sanitize()+
				" WHERE tool = 'whoami' AND decision = 'ALLOWED'").Scan(&n); err != nil || n != calls {
				t.Errorf("audit records of the whoami calls: %d, %v; want %d", n, err, calls)
			}
			if inFlight, waiting, queued := mcp.AdmissionState(g.srv); inFlight != 0 || waiting != 0 || queued != 0 {
				t.Errorf("afterwards: %d in flight, %d waiting, %d queued", inFlight, waiting, queued)
			}
		})
	}
}
