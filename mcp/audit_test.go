package mcp_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// settleAudit moves a tenant's records waiting in the audit intake into its
// audit log (store.DB.SettleAudit), for a test that reads the log's table.
func settleAudit(t testing.TB, g *gatehouse, tenant string) {
	t.Helper()
	ctx := context.Background()
	tn, err := g.db.FindTenantByKey(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.db.SettleAudit(ctx, tn); err != nil {
		t.Fatal(err)
	}
}

// auditRows returns a tenant's audit records, oldest first, after a flush.
func auditRows(t *testing.T, g *gatehouse, tenant string) []*store.AuditRecord {
	t.Helper()
	ctx := context.Background()
	g.srv.FlushAudit(ctx)
	tn, err := g.db.FindTenantByKey(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	var recs []*store.AuditRecord
	err = g.db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
		var err error
		recs, _, err = store.FindAudit(ctx, tx, store.AuditFilter{Limit: 1000})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, j := 0, len(recs)-1; i < j; i, j = i+1, j-1 {
		recs[i], recs[j] = recs[j], recs[i]
	}
	return recs
}

// TestAuditCompleteness: one record per tool call, whatever its outcome,
// in the tenant's log, chained; refused credentials in the control plane.
func TestAuditCompleteness(t *testing.T) {
	g := newGatehouse(t, withLimits(tenancy.Limits{Principal: tenancy.Rate{PerMinute: 60, Burst: 20}}))
	admin := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	viewer := g.connect(t, g.key(t, "acme.com", tenancy.Viewer, "mcp:read"), "")
	var todo store.Todo
	call(t, admin, "add_todo", map[string]any{"title": "audited"}, &todo)                   // ALLOWED
	call(t, viewer, "add_todo", map[string]any{"title": "not allowed"}, nil)                // DENIED
	call(t, admin, "complete_todo", map[string]any{"id": "00000000-0000-4000-8000-0"}, nil) // DENIED: not found
	call(t, admin, "add_todo", map[string]any{"title": ""}, nil)                            // DENIED: invalid arguments
	want := []struct{ decision, tool, reason string }{
		{store.Allowed, "add_todo", ""},
		{store.Denied, "add_todo", "needs role developer"},
		{store.Denied, "complete_todo", "not found"},
		{store.Denied, "add_todo", "invalid arguments: title must not be empty"},
	}
	recs := auditRows(t, g, "acme.com")
	var calls []*store.AuditRecord
	for _, r := range recs {
		if r.Tool != "" && r.Decision != store.RateLimited {
			calls = append(calls, r)
		}
	}
	if len(calls) != len(want) {
		t.Fatalf("%d audit records for %d calls: %+v", len(calls), len(want), calls)
	}
	for i, w := range want {
		r := calls[i]
		if r.Decision != w.decision || r.Tool != w.tool || !strings.Contains(r.Reason, w.reason) || r.Subject == "" ||
			r.APIKeyID == "" || r.ClientIP == "" || r.RequestID == "" || r.ArgsDigest == "" || r.ChainSeq == 0 {
			t.Errorf("record %d = %+v, want %+v, chained, with who/where/digest", i, r, w)
		}
	}
	// The same call twice has the same digest; the digest is not the arguments.
	if strings.Contains(calls[0].ArgsDigest, "audited") {
		t.Error("the digest reveals the arguments")
	}
	// The effect and its record commit together: one todo, one ALLOWED add_todo.
	tn, _ := g.db.FindTenantByKey(context.Background(), "acme.com")
	var todos int
	_ = g.db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{tn.Schema, "todos"}.Sanitize()).Scan(&todos)
	if todos != 1 {
		t.Errorf("%d todos for one allowed add_todo", todos)
	}
	// Each record is also a JSON line on the audit stream.
	lines := strings.Split(strings.TrimSpace(g.audit.String()), "\n")
	if len(lines) < len(want) {
		t.Errorf("%d audit lines, want at least %d", len(lines), len(want))
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["msg"] != "audit" || m["decision"] == "" {
			t.Errorf("audit line %q", l)
		}
	}
	rep, err := g.db.VerifyAudit(context.Background(), tn, testAuditKey)
	if err != nil || !rep.OK() || rep.Pending != 0 {
		t.Errorf("chain: %+v %v", rep, err)
	}
}

// TestAuditAggregatesFloods: a flood of rate-limited requests and of bad
// credentials becomes a few counted records, not one row each.
func TestAuditAggregatesFloods(t *testing.T) {
	g := newGatehouse(t, withLimits(tenancy.Limits{Principal: tenancy.Rate{PerMinute: 1, Burst: 1},
		AuthFailure: tenancy.Rate{PerMinute: 6000, Burst: 1000}}))
	key := g.key(t, "acme.com", tenancy.Admin)
	for range 50 {
		post(t, g.url, "Bearer "+key, whoamiCall)
	}
	for range 30 {
		post(t, g.url, "Bearer gk_bogus", whoamiCall)
	}
	var limited []*store.AuditRecord
	for _, r := range auditRows(t, g, "acme.com") {
		if r.Decision == store.RateLimited {
			limited = append(limited, r)
		}
	}
	if len(limited) != 1 || limited[0].Count != 49 || limited[0].Tool != "whoami" {
		t.Errorf("rate-limited records: %+v; want one record counting 49 whoami calls", limited)
	}
	var rows, count int
	err := g.db.Pool().QueryRow(context.Background(), "SELECT count(*), coalesce(sum(count), 0) FROM gatehouse.auth_failures").Scan(&rows, &count)
	if err != nil || rows != 1 || count != 30 {
		t.Errorf("auth failures: %d rows counting %d (%v); want 1 row counting 30", rows, count, err)
	}
}

func TestReadAuditLogTool(t *testing.T) {
	g := newGatehouse(t)
	admin := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	dev := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	for range 3 {
		call(t, dev, "add_todo", map[string]any{"title": "x"}, nil)
	}
	call(t, dev, "read_audit_log", nil, nil) // denied: developers may not read the log
	g.srv.FlushAudit(context.Background())
	var out struct {
		Records    []store.AuditRecord `json:"records"`
		NextCursor string              `json:"next_cursor"`
	}
	if res := call(t, admin, "read_audit_log", map[string]any{"decision": "DENIED"}, &out); res.IsError || len(out.Records) != 1 || out.Records[0].Tool != "read_audit_log" {
		t.Errorf("denied records: %+v (%s)", out.Records, text(res))
	}
	seen := 0
	cursor := ""
	for {
		args := map[string]any{"tool": "add_todo", "limit": 2}
		if cursor != "" {
			args["cursor"] = cursor
		}
		out.NextCursor = ""
		call(t, admin, "read_audit_log", args, &out)
		seen += len(out.Records)
		if cursor = out.NextCursor; cursor == "" {
			break
		}
	}
	if seen != 3 {
		t.Errorf("paged through %d add_todo records, want 3", seen)
	}
	if res := call(t, admin, "read_audit_log", map[string]any{"since": "yesterday"}, nil); !res.IsError || !strings.Contains(text(res), "RFC 3339") {
		t.Errorf("bad since: %q", text(res))
	}
}

// TestSecretsNeverReachLogsOrAudit: API keys and tokens, good and bad, are
// never written to the log, the audit stream or the audit tables.
func TestSecretsNeverReachLogsOrAudit(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	g := newGatehouse(t, withIssuer(t, "corp", iss), withLimits(tenancy.Limits{AuthFailure: tenancy.Rate{PerMinute: 600, Burst: 100}}))
	key := g.key(t, "acme.com", tenancy.Admin)
	jwt := token(iss, "alice", "alice@acme.com", true, nil)
	badKey := key[:len(key)-4] + "XXXX"
	for _, tok := range []string{key, jwt, badKey, "gk_garbage"} {
		post(t, g.url, "Bearer "+tok, addTodoCall)
		post(t, g.url, "Bearer "+tok, whoamiCall)
	}
	ctx := context.Background()
	g.srv.FlushAudit(ctx)
	var rows strings.Builder
	for _, tenant := range []string{"acme.com"} {
		for _, r := range auditRows(t, g, tenant) {
			b, _ := json.Marshal(r)
			rows.Write(b)
		}
	}
	var failures string
	_ = g.db.Pool().QueryRow(ctx, "SELECT coalesce(string_agg(f::text, ' '), '') FROM gatehouse.auth_failures f").Scan(&failures)
	secret := key[len("gk_")+16+1:]
	for name, hay := range map[string]string{"log": g.logs.String(), "audit stream": g.audit.String(), "audit rows": rows.String(), "auth failures": failures} {
		for _, s := range []string{key, secret, jwt, badKey, strings.Split(jwt, ".")[2]} {
			if strings.Contains(hay, s) {
				t.Errorf("a credential appears in the %s", name)
			}
		}
	}
	if !strings.Contains(g.audit.String(), "ALLOWED") || !strings.Contains(g.logs.String(), "request refused") {
		t.Error("the test did not exercise logging (no ALLOWED audit line or refusal log)")
	}
}

// TestAuditLinesResistInjection: a claim carrying a newline and a forged
// record stays inside its own JSON line.
func TestAuditLinesResistInjection(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	g := newGatehouse(t, withIssuer(t, "corp", iss))
	forged := "mallory@evil.com\n{\"time\":\"2026-01-01T00:00:00Z\",\"level\":\"INFO\",\"msg\":\"audit\",\"decision\":\"ALLOWED\",\"subject\":\"admin\"}"
	tok := iss.Sign(iss.Claims("mallory", "gatehouse", map[string]any{"email": forged, "email_verified": false, "name": "x\r\ny"}))
	whoami(t, g, tok)
	g.srv.FlushAudit(context.Background())
	for _, stream := range []string{g.audit.String(), g.logs.String()} {
		for _, line := range strings.Split(strings.TrimSpace(stream), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("a line is not one JSON object: %q", line)
			}
			if m["subject"] == "admin" {
				t.Fatalf("a forged record became a line of its own: %q", line)
			}
		}
	}
	// Control characters are cleaned out of audit text (store.CleanText).
	if !strings.Contains(g.audit.String(), "mallory@evil.com\uFFFD{") {
		t.Error("the email was not recorded (cleaned) at all")
	}
}
