package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/internal/testdeps"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// mcpResult is the outcome of one tools/call over plain HTTP.
type mcpResult struct {
	status  int
	isError bool
	data    map[string]any // structuredContent
	text    string         // the first content's text; the body of an HTTP error
	// challenge is the WWW-Authenticate header of a refusal.
	challenge string
}

// callTool posts one stateless tools/call to base with token (none when
// empty: a client certificate, or nothing).
func callTool(client *http.Client, base, token, tool string, args map[string]any) (mcpResult, error) {
	return callToolID(client, base, token, tool, args, "")
}

// callToolID is callTool with the request id the server takes from
// X-Request-Id (and puts in the call's audit record), unless "".
func callToolID(client *http.Client, base, token, tool string, args map[string]any, requestID string) (mcpResult, error) {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
		"params": map[string]any{"name": tool, "arguments": args}})
	req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(string(body)))
	if requestID != "" {
		req.Header.Set("X-Request-Id", requestID)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	res, err := client.Do(req)
	if err != nil {
		return mcpResult{}, err
	}
	defer res.Body.Close()
	r := mcpResult{status: res.StatusCode, challenge: res.Header.Get("WWW-Authenticate")}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		r.text = string(b)
		return r, nil
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20) // grows as needed: a 1 MiB buffer per call would dominate a benchmark's client
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var msg struct {
			Result struct {
				IsError           bool             `json:"isError"`
				StructuredContent map[string]any   `json:"structuredContent"`
				Content           []map[string]any `json:"content"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(line), &msg); err != nil {
			return r, err
		}
		r.isError, r.data = msg.Result.IsError, msg.Result.StructuredContent
		if len(msg.Result.Content) > 0 {
			r.text, _ = msg.Result.Content[0]["text"].(string)
		}
		return r, nil
	}
	return r, fmt.Errorf("no result in the answer (%v)", sc.Err())
}

// burst makes n calls at once and counts those admitted (200) and those
// rate-limited (429); any other outcome fails the test.
func burst(t *testing.T, n int, call func(i int) (mcpResult, error)) (admitted, limited int64) {
	t.Helper()
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := call(i)
			switch {
			case err != nil:
				t.Error(err)
			case r.status == http.StatusOK:
				ok.Add(1)
			case r.status == http.StatusTooManyRequests:
				refused.Add(1)
			default:
				t.Errorf("status %d", r.status)
			}
		})
	}
	wg.Wait()
	return ok.Load(), refused.Load()
}

// TestThreeReplicas runs three `gatehouse serve` processes on one
// database, the third through PgBouncer in transaction mode, and shows
// that nothing a request needs lives in one process: any replica serves
// any request, a rate limit holds across all three, a revocation on one is
// honoured by the others within a second, and killing one replica
// mid-load loses no acknowledged write.
func TestThreeReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three servers and PgBouncer")
	}
	testdeps.Need(t, testdeps.PgBouncer) // before starting anything
	direct := storetest.ConnString(t)
	pooled := pgBouncer(t, direct)
	dir := storetest.TempDir(t)
	// Default limits off: the load below is one key's; the rate-limit case
	// sets its tenant's own limit.
	env := []string{"GATEHOUSE_TENANT_RATE=off", "GATEHOUSE_PRINCIPAL_RATE=off"}
	a := runBinaryOn(t, dir+"/a", append(env, "DATABASE_URL="+direct)...)
	b := runBinaryOn(t, dir+"/b", append(env, "DATABASE_URL="+direct)...)
	c := runBinaryOn(t, dir+"/c", append(env, "DATABASE_URL="+pooled, "GATEHOUSE_PGBOUNCER=true")...)
	if !strings.Contains(c.logs.String(), "PgBouncer (transaction mode)") {
		t.Fatalf("the third replica is not in PgBouncer mode:\n%s", c.logs.String())
	}
	replicas := []*server{a, b, c}
	client := &http.Client{Timeout: 10 * time.Second}
	key := strings.TrimSpace(a.cli(t, "apikey", "create", "--tenant", "acme.com", "--role", "admin"))

	t.Run("any replica serves any request", func(t *testing.T) {
		for i, s := range replicas {
			if r, err := callTool(client, s.base, key, "add_todo", map[string]any{"title": fmt.Sprintf("from replica %d", i)}); err != nil || r.isError {
				t.Fatalf("add_todo on replica %d: %v %+v", i, err, r)
			}
		}
		for i, s := range replicas {
			r, err := callTool(client, s.base, key, "list_todos", map[string]any{"limit": 200})
			todos, _ := r.data["todos"].([]any)
			if err != nil || len(todos) != 3 {
				t.Errorf("replica %d lists %d todos (%v), want the 3 written through all three", i, len(todos), err)
			}
		}
	})

	t.Run("a rate limit holds across all three", func(t *testing.T) {
		limitedKey := strings.TrimSpace(a.cli(t, "apikey", "create", "--tenant", "limited.example", "--role", "viewer"))
		a.cli(t, "tenant", "limits", "set", "limited.example", "--rate", "6/m", "--burst", "30")
		const n = 90
		start := time.Now()
		admitted, limited := burst(t, n, func(i int) (mcpResult, error) {
			return callTool(client, replicas[i%3].base, limitedKey, "whoami", nil)
		})
		// The burst of 30, plus what the rate (one every 10 s) replenished.
		tolerance := int64(time.Since(start)/(10*time.Second)) + 1
		if admitted < 30 || admitted > 30+tolerance || admitted+limited != n {
			t.Errorf("three replicas admitted %d and limited %d of %d, want 30 (+%d) admitted", admitted, limited, n, tolerance)
		}
		t.Logf("admitted %d, limited %d of %d in %v", admitted, limited, n, time.Since(start))
	})

	t.Run("leased limits hold within 5% over 30 s", func(t *testing.T) {
		// 100/s with a burst of 40: each replica leases 5 at a time
		// (tenancy.LeaseWindow), so most calls are admitted without a
		// database round trip. Twelve callers over the three replicas
		// (one through PgBouncer) offer far more than the limit.
		leasedKey := strings.TrimSpace(a.cli(t, "apikey", "create", "--tenant", "leased.example", "--role", "viewer"))
		a.cli(t, "tenant", "limits", "set", "leased.example", "--rate", "6000/m", "--burst", "40")
		const window = 30 * time.Second
		var admitted, limited atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for w := range 12 {
			wg.Go(func() {
				for time.Since(start) < window {
					r, err := callTool(client, replicas[w%3].base, leasedKey, "whoami", nil)
					switch {
					case err != nil:
						t.Error(err)
						return
					case r.status == http.StatusOK:
						admitted.Add(1)
					case r.status == http.StatusTooManyRequests:
						limited.Add(1)
						time.Sleep(5 * time.Millisecond)
					default:
						t.Errorf("status %d: %s", r.status, r.text)
						return
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		rate := 100 * elapsed.Seconds()
		// Never more than one burst above the limit; within 5% of it.
		if got := float64(admitted.Load()); got > rate+40+100*0.1 || got < 0.95*rate || limited.Load() == 0 {
			t.Errorf("three replicas admitted %v (limited %d) in %v: want %.0f (rate) to %.0f (rate + one burst), within 5%%", got, limited.Load(), elapsed, rate, rate+40)
		}
		t.Logf("admitted %d, limited %d in %v (%.3f of the rate)", admitted.Load(), limited.Load(), elapsed, float64(admitted.Load())/rate)
	})

	t.Run("a revocation on one is honoured by the others within a second", func(t *testing.T) {
		victim := strings.TrimSpace(a.cli(t, "apikey", "create", "--tenant", "acme.com", "--role", "viewer", "--json"))
		var k struct{ ID, Secret string }
		if err := json.Unmarshal([]byte(victim), &k); err != nil {
			t.Fatal(err)
		}
		for i, s := range replicas { // each replica has it cached
			if r, err := callTool(client, s.base, k.Secret, "whoami", nil); err != nil || r.status != 200 {
				t.Fatalf("replica %d before revocation: %v %d", i, err, r.status)
			}
		}
		// Revoked through replica a (its admin tool), not the CLI.
		if r, err := callTool(client, a.base, key, "revoke_api_key", map[string]any{"id": k.ID}); err != nil || r.isError {
			t.Fatalf("revoke_api_key: %v %+v", err, r)
		}
		revoked := time.Now()
		for i, s := range replicas[1:] {
			for {
				r, err := callTool(client, s.base, k.Secret, "whoami", nil)
				if err != nil {
					t.Fatal(err)
				}
				if r.status == http.StatusUnauthorized {
					t.Logf("replica %d refuses the revoked key after %v", i+1, time.Since(revoked))
					break
				}
				if time.Since(revoked) > time.Second {
					t.Fatalf("replica %d still accepts a key revoked %v ago", i+1, time.Since(revoked))
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})

	t.Run("killing a replica mid-load loses no acknowledged write", func(t *testing.T) {
		var mu sync.Mutex
		acked := map[string]bool{}
		var failed atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		// Calls that change nothing have their records group-committed:
		// every one answered must be audited, even on the killed replica.
		// Every call carries its own request id (X-Request-Id), which its
		// audit record keeps: each answered call must have its record, and
		// each record must be of a call that was sent.
		var whoSent, whoAcked atomic.Int64
		sent, answered := map[string]bool{}, map[string]string{} // request id → tool
		note := func(m map[string]bool, id string) {
			mu.Lock()
			m[id] = true
			mu.Unlock()
		}
		for w := range 3 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					whoSent.Add(1)
					id := fmt.Sprintf("kill-who-%d-%d", w, i)
					note(sent, id)
					r, err := callToolID(client, replicas[w].base, key, "whoami", nil, id)
					if err == nil && r.status == http.StatusOK && !r.isError {
						whoAcked.Add(1)
						mu.Lock()
						answered[id] = "whoami"
						mu.Unlock()
					}
				}
			})
		}
		for w := range 6 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					title := fmt.Sprintf("load w%d-%d", w, i)
					id := fmt.Sprintf("kill-add-%d-%d", w, i)
					note(sent, id)
					r, err := callToolID(client, replicas[w%3].base, key, "add_todo", map[string]any{"title": title}, id)
					if err != nil || r.status != http.StatusOK || r.isError {
						failed.Add(1) // refused or cut off: not acknowledged
						continue
					}
					mu.Lock()
					acked[title] = true
					answered[id] = "add_todo"
					mu.Unlock()
				}
			})
		}
		time.Sleep(time.Second)
		if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-b.exited
		b.done = true
		time.Sleep(time.Second)
		close(stop)
		wg.Wait()
		// Every acknowledged todo is there, read through the other replicas.
		found := map[string]bool{}
		cursor := ""
		for {
			args := map[string]any{"limit": 200}
			if cursor != "" {
				args["cursor"] = cursor
			}
			r, err := callTool(client, c.base, key, "list_todos", args)
			if err != nil || r.status != http.StatusOK || r.isError {
				t.Fatalf("list_todos: %v %+v", err, r)
			}
			todos, _ := r.data["todos"].([]any)
			for _, td := range todos {
				found[td.(map[string]any)["title"].(string)] = true
			}
			if cursor, _ = r.data["next_cursor"].(string); cursor == "" {
				break
			}
		}
		var lost []string
		for title := range acked {
			if !found[title] {
				lost = append(lost, title)
			}
		}
		if len(acked) < 50 || len(lost) > 0 {
			t.Errorf("%d writes acknowledged, %d lost: %v", len(acked), len(lost), lost)
		}
		t.Logf("%d writes acknowledged, all found; %d requests refused or cut off by the kill", len(acked), failed.Load())

		conn, err := pgx.Connect(context.Background(), direct)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var schema, tenantID string
		if err := conn.QueryRow(context.Background(), "SELECT schema_name, id FROM gatehouse.tenants WHERE key = 'acme.com'").Scan(&schema, &tenantID); err != nil {
			t.Fatal(err)
		}
		// The tenant's records: in its audit log, or still in the audit
		// intake (the killed replica's were not moved yet).
		records := "(SELECT request_id, tool, decision, subject FROM " + pgx.Identifier{schema, "audit_log"}.Sanitize() +
			" UNION ALL SELECT request_id, tool, decision, subject FROM gatehouse.audit_intake WHERE tenant_id = '" + tenantID + "') r"
		var recs int64
		// Only this case calls whoami with this key.
		q := "SELECT count(*) FROM " + records + " WHERE tool = 'whoami' AND decision = 'ALLOWED' AND subject = $1"
		if err := conn.QueryRow(context.Background(), q, "apikey:"+strings.Split(key, "_")[1]).Scan(&recs); err != nil {
			t.Fatal(err)
		}
		if recs < whoAcked.Load() || recs > whoSent.Load() {
			t.Errorf("whoami: %d answered, %d sent, %d audited: want answered <= audited <= sent", whoAcked.Load(), whoSent.Load(), recs)
		}
		t.Logf("whoami: %d answered, %d sent, %d audited", whoAcked.Load(), whoSent.Load(), recs)
		rows, _ := conn.Query(context.Background(), "SELECT request_id, tool, decision FROM "+records+" WHERE request_id LIKE 'kill-%'")
		audited := map[string]bool{}
		for rows.Next() {
			var id, tool, decision string
			if err := rows.Scan(&id, &tool, &decision); err != nil {
				t.Fatal(err)
			}
			if !sent[id] {
				t.Errorf("audit record %s (%s, %s) is of no call that was sent", id, tool, decision)
			}
			if audited[id] {
				t.Errorf("call %s has two audit records", id)
			}
			audited[id] = true
			if want := answered[id]; want != "" && (tool != want || decision != "ALLOWED") {
				t.Errorf("answered call %s (%s) is audited as %s %s", id, want, tool, decision)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		missing := 0
		for id := range answered {
			if !audited[id] {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("%d of %d answered calls have no audit record", missing, len(answered))
		}
		t.Logf("%d calls sent, %d answered, %d audited by request id", len(sent), len(answered), len(audited))
		// The survivors chain what the killed replica wrote: the chain verifies.
		deadline := time.Now().Add(10 * time.Second)
		for {
			out := a.cli(t, "audit", "verify", "--tenant", "acme.com")
			if strings.Contains(out, "intact") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("audit verify after the kill: %s", out)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
	a.stop(t)
	c.stop(t)
}
