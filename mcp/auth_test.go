package mcp_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

const addTodoCall = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_todo","arguments":{"title":"intruder"}}}`

func post(t *testing.T, url, authorization, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// TestBadCredentials: every kind of bad credential gets 401 with an RFC 6750
// challenge pointing at the RFC 9728 metadata, a JSON body, and writes nothing.
func TestBadCredentials(t *testing.T) {
	g := newGatehouse(t)
	ctx := context.Background()
	good := g.key(t, "acme.com", tenancy.Admin)
	expired, _ := g.keyWith(t, "acme.com", tenancy.Admin, time.Now().Add(-time.Minute))
	revoked, rk := g.keyWith(t, "acme.com", tenancy.Admin, time.Time{})
	if _, err := g.db.RevokeAPIKey(ctx, rk.ID); err != nil {
		t.Fatal(err)
	}
	// Same id, different secret: the id alone must not authenticate.
	forged := good[:len("gk_")+16+1] + strings.Repeat("A", 43)
	metadata := g.ts.URL + "/.well-known/oauth-protected-resource/mcp"

	tests := []struct {
		name, authorization, description string
	}{
		{"missing", "", ""},
		{"not bearer", "Basic " + good, ""},
		{"empty bearer", "Bearer ", ""},
		{"malformed", "Bearer gk_short", "malformed"},
		{"unknown shape", "Bearer hello-world", "not issued by an identity provider"},
		{"unknown key", "Bearer gk_aaaaaaaaaaaaaaaa_" + strings.Repeat("B", 43), "unknown API key"},
		{"forged secret", "Bearer " + forged, "unknown API key"},
		{"expired", "Bearer " + expired, "expired"},
		{"revoked", "Bearer " + revoked, "revoked"},
		{"oversized", "Bearer gk_" + strings.Repeat("x", 9000), "malformed"},
	}
	for _, tt := range tests {
		res := post(t, g.url, tt.authorization, addTodoCall)
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", tt.name, res.StatusCode)
			continue
		}
		challenge := res.Header.Get("WWW-Authenticate")
		if !strings.HasPrefix(challenge, "Bearer ") || !strings.Contains(challenge, `resource_metadata="`+metadata+`"`) {
			t.Errorf("%s: WWW-Authenticate = %q", tt.name, challenge)
		}
		hasError := strings.Contains(challenge, `error="invalid_token"`)
		if tt.description != "" && (!hasError || !strings.Contains(challenge, tt.description)) {
			t.Errorf("%s: WWW-Authenticate = %q, want error=\"invalid_token\" and %q", tt.name, challenge, tt.description)
		}
		if tt.description == "" && hasError { // RFC 6750 §3.1: no error code without credentials
			t.Errorf("%s: WWW-Authenticate = %q has an error code", tt.name, challenge)
		}
		var body map[string]string
		if err := json.NewDecoder(res.Body).Decode(&body); err != nil || body["error"] == "" || body["request_id"] == "" {
			t.Errorf("%s: body %v (%v)", tt.name, body, err)
		}
		for _, secret := range []string{good, expired, revoked, forged} {
			if strings.Contains(challenge, secret) || strings.Contains(body["error_description"], secret) {
				t.Errorf("%s: response echoes a credential", tt.name)
			}
		}
	}
	var n int
	tn, _ := g.db.FindTenantByKey(ctx, "acme.com")
	if err := g.db.Pool().QueryRow(ctx, `SELECT count(*) FROM `+tn.Schema+`.todos`).Scan(&n); err != nil || n != 0 {
		t.Errorf("refused requests wrote %d todos (%v)", n, err)
	}
	// And the good key does work, through the same request.
	if res := post(t, g.url, "Bearer "+good, addTodoCall); res.StatusCode != http.StatusOK {
		t.Errorf("good key: status %d", res.StatusCode)
	}
}

// TestRevocationIsImmediate: a key whose validation is cached stops working
// as soon as it is revoked (through the invalidation channel, the same way a
// revocation by another process reaches this one).
func TestRevocationIsImmediate(t *testing.T) {
	g := newGatehouse(t)
	secret, k := g.keyWith(t, "acme.com", tenancy.Admin, time.Time{})
	cs := g.connect(t, secret, "")
	call(t, cs, "whoami", nil, nil) // cached now
	if _, err := g.db.RevokeAPIKey(context.Background(), k.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		res := post(t, g.url, "Bearer "+secret, addTodoCall)
		if res.StatusCode == http.StatusUnauthorized {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked key still accepted after 1s (status %d)", res.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSuspendedTenantIsRefused(t *testing.T) {
	g := newGatehouse(t)
	secret := g.key(t, "acme.com", tenancy.Admin)
	if _, err := g.db.Pool().Exec(context.Background(), "UPDATE gatehouse.tenants SET status = 'suspended'"); err != nil {
		t.Fatal(err)
	}
	res := post(t, g.url, "Bearer "+secret, addTodoCall)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "suspended") {
		t.Errorf("suspended tenant: %d %s", res.StatusCode, body)
	}
}

func TestAccessDeniedByRoleAndScope(t *testing.T) {
	g := newGatehouse(t)
	viewer := g.connect(t, g.key(t, "acme.com", tenancy.Viewer), "")
	res := call(t, viewer, "add_todo", map[string]any{"title": "x"}, nil)
	if !res.IsError || !strings.Contains(text(res), "ACCESS DENIED") || !strings.Contains(text(res), "developer") || !strings.Contains(text(res), "your role is viewer") {
		t.Errorf("viewer add_todo: %q", text(res))
	}
	readOnly := g.connect(t, g.key(t, "acme.com", tenancy.Admin, "mcp:read"), "")
	res = call(t, readOnly, "add_todo", map[string]any{"title": "x"}, nil)
	if !res.IsError || !strings.Contains(text(res), "ACCESS DENIED") || !strings.Contains(text(res), "mcp:write") {
		t.Errorf("read-only admin add_todo: %q", text(res))
	}
	if res := call(t, readOnly, "whoami", nil, nil); res.IsError {
		t.Errorf("read-only whoami: %q", text(res))
	}
}

func TestOperationalEndpoints(t *testing.T) {
	g := newGatehouse(t)
	get := func(path string) (int, http.Header, string) {
		res, err := http.Get(g.ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header, string(b)
	}
	if code, _, body := get("/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz = %d %s", code, body)
	}
	if code, _, body := get("/readyz"); code != 200 || !strings.Contains(body, "ready") {
		t.Errorf("/readyz = %d %s", code, body)
	}
	for _, p := range []string{"/.well-known/oauth-protected-resource/mcp"} {
		code, h, body := get(p)
		var doc map[string]any
		if err := json.Unmarshal([]byte(body), &doc); err != nil || code != 200 || doc["resource"] != g.url {
			t.Errorf("%s = %d %s", p, code, body)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no security headers", p)
		}
	}
	res := post(t, g.url, "Bearer "+g.key(t, "acme.com", tenancy.Admin), addTodoCall)
	readBody(t, res)
	// The access-log middleware counts a request after its handler returns,
	// which may be just after the client has the whole response: wait for it.
	for _, want := range []string{`gatehouse_tool_calls_total{outcome="ok",tool="add_todo"} 1`, `gatehouse_http_requests_total{code="200",method="POST",route="/mcp"}`} {
		deadline := time.Now().Add(2 * time.Second)
		for {
			code, _, body := get("/metrics")
			if code == 200 && strings.Contains(body, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("/metrics lacks %s", want)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	g.srv.Drain()
	if code, _, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Errorf("/readyz while draining = %d %s", code, body)
	}
	if code, _, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz while draining = %d", code)
	}
}
