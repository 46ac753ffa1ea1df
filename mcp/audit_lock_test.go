package mcp_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestLockedAuditLogStallsOnlyItsTenant: while another session holds one
// tenant's audit log locked (a migration's ALTER TABLE, VACUUM FULL), the
// calls of other tenants, sent at the same time from goroutines released
// together, are answered without waiting for the lock. Through the audit
// intake (the default), the locked tenant's calls that change nothing are
// served too, their records waiting in the intake, and only a read of its
// audit log is refused as a transient outage (503, Retry-After); once the
// lock is gone every call has its record, chained. Straight into the logs
// (GATEHOUSE_AUDIT_INTAKE=off), the locked tenant's calls are refused as a
// transient outage, never as an internal error: in a first burst, and in
// a second one after the moment for which the locked tenant is refused
// outright (when one of its records is tried alone). Before, one writer's
// group commit waited for the lock and every tenant's calls waited behind
// it, for 5 to 10 s. Once the lock is gone the locked tenant is served
// again, and both audit chains verify.
func TestLockedAuditLogStallsOnlyItsTenant(t *testing.T) {
	t.Run("through the intake", func(t *testing.T) { lockedAuditLog(t, true) })
	t.Run("straight into the logs", func(t *testing.T) { lockedAuditLog(t, false) })
}

func lockedAuditLog(t *testing.T, intake bool) {
	ctx := context.Background()
	db, err := store.Open(ctx, storetest.ConnString(t), &store.Options{Logger: storetest.Logger(t), PrepareAfter: 1, NoAuditIntake: !intake})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	g := newGatehouse(t, func(s *setup) { s.db = db })
	url := g.ts.URL + "/mcp"
	client := &http.Client{Timeout: 30 * time.Second}
	lockedKey := g.key(t, "locked.example", tenancy.Admin)
	otherKey := g.key(t, "other.example", tenancy.Admin)
	for _, key := range []string{lockedKey, otherKey} { // warm: prepared statements, caches
		for _, tool := range []string{"whoami", "list_todos"} {
			if a := rawCall(client, url, key, tool, "{}", 1); a.status != http.StatusOK || strings.Contains(a.body, `"isError":true`) {
				t.Fatalf("%s: %d %s %v", tool, a.status, a.body, a.err)
			}
		}
	}
	locked, err := g.db.FindTenantByKey(ctx, "locked.example")
	if err != nil {
		t.Fatal(err)
	}
	holder, err := g.db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	if _, err := holder.Exec(ctx, "LOCK TABLE "+pgx.Identifier{locked.Schema, "audit_log"}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}

	type result struct {
		locked bool
		tool   string
		took   time.Duration
		a      answer
	}
	var mu sync.Mutex
	var results []result
	burst := func() {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := range 8 {
			key, isLocked := otherKey, w%4 == 0
			if isLocked {
				key = lockedKey
			}
			wg.Go(func() {
				<-start
				for i := range 4 {
					tool := []string{"whoami", "list_todos"}[i%2]
					s := time.Now()
					a := rawCall(client, url, key, tool, "{}", w*10+i)
					mu.Lock()
					results = append(results, result{isLocked, tool, time.Since(s), a})
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
	}
	burst()
	time.Sleep(1200 * time.Millisecond) // past the moment the locked tenant is refused outright
	burst()
	if intake {
		// A read of the locked log is refused as a transient outage.
		a := rawCall(client, url, lockedKey, "read_audit_log", "{}", 98)
		if a.status != http.StatusServiceUnavailable || a.retryAfter == "" || !strings.Contains(a.body, "held by another database session") {
			t.Errorf("read_audit_log of the locked tenant: %d, Retry-After %q: %.300s; want 503 saying its data is held", a.status, a.retryAfter, a.body)
		}
	}
	// Every call above was answered while the lock was held.
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		what := fmt.Sprintf("%s (locked tenant %v): %d, Retry-After %q, in %v: %.200s", r.tool, r.locked, r.a.status, r.a.retryAfter, r.took, r.a.body)
		switch {
		case r.a.err != nil:
			t.Errorf("%s: %v", what, r.a.err)
		case intake && (r.a.status != http.StatusOK || strings.Contains(r.a.body, `"isError":true`)):
			t.Errorf("%s; want it served, its record in the intake", what)
		case intake && r.took >= 2500*time.Millisecond:
			t.Errorf("%s: waited on the lock", what)
		case intake:
		case r.locked && (r.a.status != http.StatusServiceUnavailable || r.a.retryAfter == "" || strings.Contains(r.a.body, "internal error")):
			t.Errorf("%s; want 503 with Retry-After", what)
		case r.locked && !strings.Contains(r.a.body, "held by another database session"):
			t.Errorf("%s; want it to say the tenant's data is held, not that the database is unavailable", what)
		case !r.locked && (r.a.status != http.StatusOK || strings.Contains(r.a.body, `"isError":true`)):
			t.Errorf("%s; want it served", what)
		case !r.locked && r.took >= 2500*time.Millisecond:
			// Half the group commit's time limit (5 s), which each of
			// these calls waited out before.
			t.Errorf("%s: waited on another tenant's lock", what)
		}
	}

	if intake {
		g.srv.FlushAudit(ctx)
		// Every call has its record, chained.
		want := map[bool]int{}
		for _, r := range results {
			want[r.locked]++
		}
		for _, k := range []string{"locked.example", "other.example"} {
			var n int
			for _, r := range auditRows(t, g, k) {
				if r.Tool == "whoami" || r.Tool == "list_todos" {
					n++
				}
				if r.ChainSeq == 0 {
					t.Errorf("%s: record %d unchained after the flush", k, r.ID)
				}
			}
			if n != want[k == "locked.example"]+2 { // and the warm-up's two
				t.Errorf("%s: %d records of its calls, want %d", k, n, want[k == "locked.example"]+2)
			}
			tn, _ := g.db.FindTenantByKey(ctx, k)
			if rep, err := g.db.VerifyAudit(ctx, tn, testAuditKey); err != nil || !rep.OK() || rep.Pending != 0 {
				t.Errorf("%s: %+v, %v", k, rep, err)
			}
		}
		return
	}

	_, metrics := getText(t, g.ts.URL+"/metrics")
	if !strings.Contains(metrics, `gatehouse_unavailable_total{dependency="database_lock"}`) || strings.Contains(metrics, `gatehouse_unavailable_total{dependency="database"}`) {
		t.Errorf("the locked tenant's refusals, counted:\n%s", grepLines(metrics, "gatehouse_unavailable_total"))
	}

	deadline := time.Now().Add(15 * time.Second)
	refused := 0 // calls of the locked tenant refused, each with its record
	for _, r := range results {
		if r.locked {
			refused++
		}
	}
	for {
		a := rawCall(client, url, lockedKey, "whoami", "{}", 99)
		if a.status == http.StatusOK && !strings.Contains(a.body, `"isError":true`) {
			break
		}
		refused++
		if time.Now().After(deadline) {
			t.Fatalf("the locked tenant after the lock: %d %s %v", a.status, a.body, a.err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.srv.FlushAudit(ctx)
	// Every call refused while the lock was held has its record: the
	// records that could not be stored then were kept, and stored now.
	var errors int
	if err := g.db.WithTenant(ctx, locked, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE decision = 'ERROR' AND reason = 'unavailable'").Scan(&errors)
	}); err != nil {
		t.Fatal(err)
	}
	if errors != refused {
		t.Errorf("%d ERROR records in the locked tenant's audit log, for %d calls refused while it was locked", errors, refused)
	}
	if logs := g.logs.String(); !strings.Contains(logs, "kept, and tried again shortly") || strings.Contains(logs, `"msg":"audit record not stored"`) ||
		strings.Contains(logs, "records lost") {
		t.Errorf("the records not stored at first, logged:\n%s", grepLines(g.logs.String(), "audit"))
	}
	for _, k := range []string{"locked.example", "other.example"} {
		tn, _ := g.db.FindTenantByKey(ctx, k)
		if rep, err := g.db.VerifyAudit(ctx, tn, testAuditKey); err != nil || !rep.OK() {
			t.Errorf("%s: %+v, %v", k, rep, err)
		}
	}
}
