package mcp_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// everyToolArgs gives each tool arguments it accepts (ids that do not
// exist are fine: "not found" is an answer, not a failure).
var everyToolArgs = map[string]string{
	"whoami":              `{}`,
	"read_audit_log":      `{}`,
	"list_tables":         `{}`,
	"describe_table":      `{"table":"todos"}`,
	"query":               `{"sql":"select 1"}`,
	"save_document":       `{"title":"doc","body":"text"}`,
	"get_document":        `{"id":"00000000-0000-4000-8000-000000000000"}`,
	"delete_document":     `{"id":"00000000-0000-4000-8000-000000000000"}`,
	"list_documents":      `{}`,
	"search_documents":    `{"query":"text"}`,
	"create_project":      `{"name":"p-%d"}`,
	"list_projects":       `{}`,
	"get_project":         `{"id":"00000000-0000-4000-8000-000000000000"}`,
	"update_project":      `{"id":"00000000-0000-4000-8000-000000000000","name":"x"}`,
	"archive_project":     `{"id":"00000000-0000-4000-8000-000000000000"}`,
	"unarchive_project":   `{"id":"00000000-0000-4000-8000-000000000000"}`,
	"add_todo":            `{"title":"todo %d"}`,
	"list_todos":          `{}`,
	"update_todo":         `{"id":"00000000-0000-4000-8000-000000000000","title":"x"}`,
	"complete_todo":       `{"id":"00000000-0000-4000-8000-000000000000"}`,
	"delete_todo":         `{"id":"00000000-0000-4000-8000-000000000000"}`,
	"get_usage":           `{}`,
	"list_members":        `{}`,
	"set_member_role":     `{"member_id":"00000000-0000-4000-8000-000000000000","role":"viewer"}`,
	"remove_member":       `{"member_id":"00000000-0000-4000-8000-000000000000"}`,
	"create_api_key":      `{"name":"k-%d","role":"viewer"}`,
	"list_api_keys":       `{}`,
	"revoke_api_key":      `{"id":"00000000-0000-4000-8000-000000000000"}`,
	"list_my_api_keys":    `{}`,
	"create_my_api_key":   `{"name":"mine-%d","role":"viewer","scopes":["mcp:read"]}`,
	"revoke_my_api_key":   `{"id":"00000000-0000-4000-8000-000000000000"}`,
	"list_my_sign_ins":    `{}`,
	"revoke_my_sign_in":   `{"id":"no-such-sign-in"}`,
	"set_semantic_search": `{"enabled":false}`,
	"list_alerts":         `{}`,
	"acknowledge_alert":   `{"id":999999}`,
}

// answer is what a raw tools/call POST got.
type answer struct {
	status     int
	retryAfter string
	body       string
	err        error
}

func rawCall(client *http.Client, url, token, tool, args string, id int) answer {
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, id, tool, args)
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), body: string(b), err: err}
}

// TestEveryToolConcurrentlyFromColdStart: every tool, called by one
// tenant's admin key from pool size + 1 goroutines released together, on a
// server that has not served that tenant yet (the query role's login is
// not set up, no secret is cached). Nothing hangs, nothing fails
// internally (no "tuple concurrently updated"), a call over a concurrency
// cap is refused with 429 and Retry-After, and another tenant's whoami is
// answered meanwhile. Run it with -race.
func TestEveryToolConcurrentlyFromColdStart(t *testing.T) {
	// Admission wide open: the pools themselves see the crowd, as they
	// would with caps set high.
	g := newGatehouse(t, func(s *setup) {
		s.admission = &mcp.Admission{Total: 10000, Tenant: 10000, Principal: 10000, TenantQueue: 10000, Wait: time.Minute}
	})
	cold := g.key(t, "cold.example", tenancy.Admin)
	other := g.key(t, "other.example", tenancy.Viewer)
	n := int(g.db.Limits().TenantConns) + 1
	list, err := g.connect(t, cold, "").ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var tools []string
	for _, tl := range list.Tools {
		tools = append(tools, tl.Name)
	}
	if len(tools) != len(everyToolArgs) {
		t.Fatalf("the server has %d tools, the test knows %d: add the new tool's arguments to everyToolArgs", len(tools), len(everyToolArgs))
	}
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 1000}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // a hang, not a measurement
	defer cancel()
	release := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string][]answer{}
	for _, tool := range tools {
		for i := range n {
			args := everyToolArgs[tool]
			if strings.Contains(args, "%d") {
				args = fmt.Sprintf(args, i)
			}
			wg.Go(func() {
				<-release
				a := rawCall(client, g.url, cold, tool, args, i)
				mu.Lock()
				got[tool] = append(got[tool], a)
				mu.Unlock()
			})
		}
	}
	var bystander answer
	wg.Go(func() {
		<-release
		time.Sleep(50 * time.Millisecond)
		bystander = rawCall(client, g.url, other, "whoami", `{}`, 1)
	})
	close(release)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the calls did not all finish: something hangs")
	}
	for _, tool := range tools {
		ok, refused := 0, 0
		for _, a := range got[tool] {
			switch {
			case a.err != nil:
				t.Errorf("%s: %v", tool, a.err)
			case a.status == http.StatusTooManyRequests:
				refused++
				if a.retryAfter == "" {
					t.Errorf("%s: 429 without Retry-After", tool)
				}
			case a.status != http.StatusOK:
				t.Errorf("%s: HTTP %d: %s", tool, a.status, a.body)
			case strings.Contains(a.body, "internal error"), strings.Contains(a.body, "timed out"):
				t.Errorf("%s: %s", tool, a.body)
			default:
				ok++
			}
		}
		if ok == 0 {
			t.Errorf("%s: none of %d calls was served", tool, n)
		}
		t.Logf("%s: %d served, %d refused (concurrency caps)", tool, ok, refused)
	}
	if bystander.status != http.StatusOK || !strings.Contains(bystander.body, "other.example") {
		t.Errorf("another tenant's whoami during the burst: %d %s %v", bystander.status, bystander.body, bystander.err)
	}
}

// TestConcurrencyCaps: a tenant at its concurrency cap (two slow queries
// in progress, no wait allowed) is refused with 429, Retry-After and a
// JSON-RPC error saying which bound; another tenant's calls are served
// meanwhile; the refusal is audited.
func TestConcurrencyCaps(t *testing.T) {
	g := newGatehouse(t, func(s *setup) {
		s.admission = &mcp.Admission{Total: 8, Tenant: 2, Principal: 2, TenantQueue: 0, Wait: 0}
	})
	a := g.key(t, "a.example", tenancy.Developer)
	a2 := g.key(t, "a.example", tenancy.Developer)
	b := g.key(t, "b.example", tenancy.Developer)
	client := &http.Client{}
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			for { // until admitted: the poller below may hold a slot for a moment
				got := rawCall(client, g.url, a, "query", `{"sql":"select pg_sleep(1.5)"}`, i)
				if got.status == http.StatusTooManyRequests {
					continue
				}
				if got.status != http.StatusOK || strings.Contains(got.body, "isError\":true") {
					t.Errorf("slow query: %d %s", got.status, got.body)
				}
				return
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	var refused answer
	for time.Now().Before(deadline) {
		refused = rawCall(client, g.url, a2, "whoami", `{}`, 7)
		if refused.status == http.StatusTooManyRequests {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if refused.status != http.StatusTooManyRequests || refused.retryAfter != "1" ||
		!strings.Contains(refused.body, `"code":-32031`) || !strings.Contains(refused.body, `"id":7`) ||
		!strings.Contains(refused.body, "your organisation (a.example) has 2 in progress") {
		t.Errorf("third call of tenant A: %d Retry-After %q %s", refused.status, refused.retryAfter, refused.body)
	}
	if got := rawCall(client, g.url, b, "whoami", `{}`, 1); got.status != http.StatusOK || !strings.Contains(got.body, "b.example") {
		t.Errorf("tenant B while A is at its cap: %d %s", got.status, got.body)
	}
	// initialize and tools/list do no database work: never refused.
	list := `{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}`
	req, _ := http.NewRequest(http.MethodPost, g.url, strings.NewReader(list))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+a)
	if res, err := client.Do(req); err != nil || res.StatusCode != http.StatusOK {
		t.Errorf("tools/list at the cap: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	wg.Wait()
	g.srv.FlushAudit(context.Background())
	if !strings.Contains(g.audit.String(), "too many concurrent calls (tenant bound 2)") {
		t.Errorf("the refusal is not in the audit stream")
	}
}

// TestQueryLoginCapAnswered429: a query over its tenant's query-login
// bound waits briefly, then is answered 429 with Retry-After and -32031
// (not a 200 tool result), and the refusal is audited as a failed call.
func TestQueryLoginCapAnswered429(t *testing.T) {
	db, err := store.Open(context.Background(), storetest.ConnString(t), &store.Options{TenantQueryConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	g := newGatehouse(t, func(s *setup) { s.db = db })
	key := g.key(t, "a.example", tenancy.Developer)
	client := &http.Client{}
	if got := rawCall(client, g.url, key, "query", `{"sql":"select 1"}`, 1); got.status != http.StatusOK {
		t.Fatalf("first query: %d %s", got.status, got.body)
	}
	slow := make(chan answer)
	go func() { slow <- rawCall(client, g.url, key, "query", `{"sql":"select pg_sleep(4)"}`, 2) }()
	var got answer
	for range 50 { // until the slow one holds the tenant's one login
		if got = rawCall(client, g.url, key, "query", `{"sql":"select 1"}`, 3); got.status == http.StatusTooManyRequests {
			break
		}
	}
	if got.status != http.StatusTooManyRequests || got.retryAfter != "1" || !strings.Contains(got.body, `"code":-32031`) ||
		!strings.Contains(got.body, `"scope":"tenant"`) || !strings.Contains(got.body, "your organisation's concurrent queries") || !strings.Contains(got.body, `"id":3`) {
		t.Errorf("a query over the tenant's login bound: %d Retry-After %q %s", got.status, got.retryAfter, got.body)
	}
	if a := <-slow; a.status != http.StatusOK || strings.Contains(a.body, `"isError":true`) {
		t.Errorf("the slow query: %d %s", a.status, a.body)
	}
	if !strings.Contains(g.audit.String(), `"reason":"busy"`) {
		t.Error("the refused query is not audited")
	}
}
