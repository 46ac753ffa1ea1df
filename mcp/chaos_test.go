package mcp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestPostgresRestartUnderLoad: PostgreSQL is restarted as after a crash
// (pg_ctl restart -m immediate) while three tenants write and read. Every
// acknowledged write is in the database afterwards, every stored effect
// has its audit record, every call that failed was answered 503 with
// Retry-After and JSON-RPC error -32030 (never a result saying "internal
// error"), and calls succeed again once PostgreSQL accepts connections
// (the time it took is logged, not asserted). Calls that change nothing
// (whoami, list_todos: group-committed records) that were answered with a
// result have their records, no record is of a call never sent, and every
// tenant's audit chain verifies. Each call carries its own X-Request-Id, so
// these are checked call by call (each answered call has its ALLOWED
// record; each record is of a call sent to that tenant), not only counted.
func TestPostgresRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a PostgreSQL cluster")
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "gatehouse-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// fsync off for speed, synchronous_commit on: an immediate shutdown
	// kills PostgreSQL, not the machine, so committed WAL survives it.
	cluster, err := store.StartEmbedded(ctx, store.EmbeddedOptions{DataDir: dir, Settings: map[string]string{"fsync": "off"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Stop(context.Background()) })
	db, err := store.Open(ctx, cluster.ConnString(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.MigrateControl(ctx); err != nil {
		t.Fatal(err)
	}
	g := newGatehouse(t, func(s *setup) {
		s.db = db
		s.admission = &mcp.Admission{Total: 8, Tenant: 8, Principal: 8, TenantQueue: 64, Wait: 5 * time.Second}
	})
	tenants := []string{"one.example", "two.example", "three.example"}
	keys := map[string]string{}
	for _, tn := range tenants {
		keys[tn] = g.key(t, tn, tenancy.Admin)
	}
	unused := g.key(t, "one.example", tenancy.Viewer) // not in the validation cache

	type failure struct{ status, retryAfter, body string }
	var (
		mu        sync.Mutex
		acked     = map[string][]string{} // tenant → titles acknowledged
		okCalls   = map[[2]string]int{}   // {tenant, tool} → calls answered with a result
		sentIDs   = map[string]string{}   // request id → tenant, of every call sent
		okIDs     = map[string]string{}   // request id → tool, of every call answered with a result
		tried     = map[[2]string]int{}   // {tenant, tool} → calls sent
		failures  []failure
		restarted atomic.Int64 // unix nanos when PostgreSQL accepted connections again
		recovered atomic.Int64 // unix nanos of the first success that started after that
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		calls     atomic.Int64
	)
	client := &http.Client{Timeout: time.Minute}
	for _, tn := range tenants {
		for w := range 2 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					tool, args := "add_todo", fmt.Sprintf(`{"title":"%s w%d #%d"}`, tn, w, i)
					switch i % 3 {
					case 1:
						tool, args = "whoami", `{}`
					case 2:
						tool, args = "list_todos", `{"limit":5}`
					}
					began := time.Now().UnixNano()
					// Each call's own request id, kept in its audit record.
					id := fmt.Sprintf("chaos-%s-w%d-%d", strings.TrimSuffix(tn, ".example"), w, i)
					mu.Lock()
					sentIDs[id] = tn
					mu.Unlock()
					a := rawCallID(client, g.url, keys[tn], tool, args, i, id)
					calls.Add(1)
					ok := a.err == nil && a.status == http.StatusOK && !strings.Contains(a.body, `"isError":true`)
					mu.Lock()
					tried[[2]string{tn, tool}]++
					if ok {
						okIDs[id] = tool
						okCalls[[2]string{tn, tool}]++
						if tool == "add_todo" {
							acked[tn] = append(acked[tn], fmt.Sprintf("%s w%d #%d", tn, w, i))
						}
						if r := restarted.Load(); r != 0 && began > r {
							recovered.CompareAndSwap(0, time.Now().UnixNano())
						}
					} else {
						failures = append(failures, failure{fmt.Sprint(a.status, " ", a.err), a.retryAfter, a.body})
					}
					mu.Unlock()
					if !ok {
						time.Sleep(10 * time.Millisecond) // a client honouring Retry-After would wait longer
					}
				}
			})
		}
	}
	time.Sleep(time.Second)
	before := calls.Load()
	start := time.Now()
	if err := cluster.Restart(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	restarted.Store(time.Now().UnixNano())
	t.Logf("PostgreSQL restarted (immediate) in %s; %d calls before", time.Since(start).Round(time.Millisecond), before)
	deadline := time.Now().Add(30 * time.Second)
	for recovered.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second) // more load after recovery
	close(stop)
	wg.Wait()
	if recovered.Load() == 0 {
		t.Fatal("no call succeeded within 30 s of PostgreSQL accepting connections again")
	}
	t.Logf("recovery: first success %s after PostgreSQL accepted connections; %d calls, %d failed",
		time.Duration(recovered.Load()-restarted.Load()).Round(time.Millisecond), calls.Load(), len(failures))

	for _, f := range failures {
		var body struct {
			Error struct {
				Code int `json:"code"`
				Data struct {
					Unavailable string `json:"unavailable"`
				} `json:"data"`
			} `json:"error"`
		}
		_ = json.Unmarshal([]byte(f.body), &body)
		if f.status != "503 <nil>" || f.retryAfter == "" || body.Error.Code != -32030 || body.Error.Data.Unavailable != "database" {
			t.Errorf("a failed call was answered %s, Retry-After %q: %.300s", f.status, f.retryAfter, f.body)
		}
	}
	g.srv.FlushAudit(ctx)
	// The records the outage kept from being stored when their calls
	// were refused (audit_held.go), by request id: each is stored now.
	kept := map[string]string{} // request id → tenant
	for line := range strings.Lines(g.logs.String()) {
		var l struct {
			Msg       string `json:"msg"`
			RequestID string `json:"request_id"`
			Tenant    string `json:"tenant"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && strings.HasPrefix(l.Msg, "audit record not stored yet; kept") {
			kept[l.RequestID] = l.Tenant
		}
	}
	if logs := g.logs.String(); strings.Contains(logs, "records lost") {
		t.Errorf("records lost:\n%s", grepLines(logs, "lost"))
	}
	t.Logf("%d calls' records kept during the outage and stored after it", len(kept))
	for _, tn := range tenants {
		ten, err := db.FindTenantByKey(ctx, tn)
		if err != nil {
			t.Fatal(err)
		}
		stored := map[string]bool{}
		var audited int
		err = db.WithTenant(ctx, ten, func(tx pgx.Tx) error {
			rows, _ := tx.Query(ctx, "SELECT title FROM todos")
			titles, err := pgx.CollectRows(rows, pgx.RowTo[string])
			for _, s := range titles {
				stored[s] = true
			}
			if err != nil {
				return err
			}
			return tx.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE tool = 'add_todo' AND decision = $1", store.Allowed).Scan(&audited)
		})
		if err != nil {
			t.Fatal(err)
		}
		lost := 0
		for _, title := range acked[tn] {
			if !stored[title] {
				lost++
			}
		}
		if lost > 0 {
			t.Errorf("%s: %d of %d acknowledged writes lost", tn, lost, len(acked[tn]))
		}
		if audited != len(stored) {
			t.Errorf("%s: %d todos stored, %d allowed add_todo audit records: effects without audit", tn, len(stored), audited)
		}
		t.Logf("%s: %d writes acknowledged, %d stored, %d audited", tn, len(acked[tn]), len(stored), audited)

		// Calls that change nothing (group-committed records): every one
		// answered with a result has its record, and no record is of a
		// call that was not sent. The chain verifies.
		for _, tool := range []string{"whoami", "list_todos"} {
			var recs int
			err := db.WithTenant(ctx, ten, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE tool = $1 AND decision = $2", tool, store.Allowed).Scan(&recs)
			})
			if err != nil {
				t.Fatal(err)
			}
			k := [2]string{tn, tool}
			if recs < okCalls[k] || recs > tried[k] {
				t.Errorf("%s %s: %d allowed records for %d calls answered with a result and %d sent", tn, tool, recs, okCalls[k], tried[k])
			}
			t.Logf("%s %s: %d answered, %d sent, %d audited", tn, tool, okCalls[k], tried[k], recs)
		}
		// By request id: every call answered with a result has its
		// ALLOWED record, and every record is of a call that was sent to
		// this tenant.
		recorded := map[string]bool{}
		err = db.WithTenant(ctx, ten, func(tx pgx.Tx) error {
			rows, _ := tx.Query(ctx, "SELECT request_id, tool, decision FROM audit_log WHERE request_id LIKE 'chaos-%'")
			for rows.Next() {
				var id, tool, decision string
				if err := rows.Scan(&id, &tool, &decision); err != nil {
					return err
				}
				if sentIDs[id] != tn {
					t.Errorf("%s: audit record %s (%s %s) is of no call sent to this tenant", tn, id, tool, decision)
				}
				if okIDs[id] != "" && decision == store.Allowed && tool == okIDs[id] {
					recorded[id] = true
				}
				if decision == store.Failed && kept[id] == tn {
					delete(kept, id)
				}
			}
			return rows.Err()
		})
		if err != nil {
			t.Fatal(err)
		}
		for id, kt := range kept {
			if kt == tn {
				t.Errorf("%s: call %s was refused during the outage, and its ERROR record, kept then, is not stored", tn, id)
			}
		}
		for id, tool := range okIDs {
			if sentIDs[id] == tn && !recorded[id] {
				t.Errorf("%s: %s call %s was answered but has no ALLOWED audit record", tn, tool, id)
			}
		}
		if rep, err := db.VerifyAudit(ctx, ten, testAuditKey); err != nil || !rep.OK() || rep.Pending != 0 {
			t.Errorf("%s: audit chain after the restart: %+v %v", tn, rep, err)
		}
	}

	// While PostgreSQL is down: a credential that must be looked up gets
	// 503 naming the database (not an identity provider), and /readyz
	// says the database is unreachable.
	if err := cluster.Halt(ctx); err != nil {
		t.Fatal(err)
	}
	a := rawCall(client, g.url, unused, "whoami", `{}`, 1)
	if a.status != http.StatusServiceUnavailable || a.retryAfter == "" || !strings.Contains(a.body, `"unavailable":"database"`) ||
		!strings.Contains(a.body, "the database is temporarily unavailable") || !strings.Contains(a.body, `"code":-32030`) {
		t.Errorf("an uncached API key while the database is down: %d Retry-After %q %s", a.status, a.retryAfter, a.body)
	}
	if res, err := http.Get(strings.TrimSuffix(g.url, "/mcp") + "/readyz"); err != nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz while the database is down: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	if err := cluster.Resume(ctx); err != nil {
		t.Fatal(err)
	}
}

// rawCallID is rawCall with X-Request-Id set to requestID, which the
// server takes as the call's request id (and puts in its audit record).
func rawCallID(client *http.Client, url, token, tool, args string, id int, requestID string) answer {
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, id, tool, args)
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Request-Id", requestID)
	res, err := client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), body: string(b), err: err}
}
