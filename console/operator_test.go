package console_test

import (
	"archive/zip"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// callTool calls a tool at /mcp with token and returns the status and body.
func (s *site) callTool(t testing.TB, token, tool, args string) (int, string) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":` + args + `}}`
	req, _ := http.NewRequest(http.MethodPost, s.ts.URL+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// keyOf has b create a key in the console and returns its secret.
func keyOf(t testing.TB, b *person, name string) string {
	t.Helper()
	f := b.get("/console/keys").form(t, "/console/keys")
	f.Set("name", name)
	f.Set("role", "developer")
	f["scope"] = []string{"mcp:read", "mcp:write"}
	m := secretOnPage.FindStringSubmatch(b.post("/console/keys", f).body)
	if m == nil {
		t.Fatalf("no key %s", name)
	}
	return m[1]
}

// TestOperatorLifecycle: an operator suspends a tenant (its key and its
// members are refused with a clear 403, nothing is lost), resumes it,
// exports it (the archive holds its members, keys without secrets, audit
// log and workspace rows), and deletes it (no schema, no roles, no rows
// left; the operator record stays; another tenant's audit chain still
// verifies).
func TestOperatorLifecycle(t *testing.T) {
	s := newSite(t, siteOpts{operators: []string{"corp:op-1"}})
	ada := s.signedIn("ada-1", "ada@acme.example")
	acmeKey := keyOf(t, ada, "acme ci")
	if code, body := s.callTool(t, acmeKey, "add_todo", `{"title":"ship the console"}`); code != http.StatusOK || strings.Contains(body, `"isError":true`) {
		t.Fatalf("add_todo: %d %s", code, body)
	}
	bea := s.signedIn("bea-1", "bea@beta.example")
	betaKey := keyOf(t, bea, "beta ci")
	s.callTool(t, betaKey, "add_todo", `{"title":"beta stays"}`)
	op := s.signedIn("op-1", "op@ops.example")
	list := op.get("/console/operator")
	for _, want := range []string{"acme.example", "beta.example", "ops.example"} {
		if !strings.Contains(list.body, want) {
			t.Errorf("the tenant list lacks %s", want)
		}
	}

	// Suspend.
	suspend := "/console/operator/tenants/acme.example/suspend"
	if p := op.post(suspend, list.form(t, suspend)); p.status != http.StatusOK || !strings.Contains(p.body, "acme.example is now suspended") {
		t.Fatalf("suspend: %d\n%s", p.status, p.body)
	}
	code, body := s.callTool(t, acmeKey, "whoami", `{}`)
	if code != http.StatusForbidden || !strings.Contains(body, "suspended") {
		t.Errorf("a suspended tenant's key: %d %s, want 403 saying suspended", code, body)
	}
	if p := ada.get("/console/connect"); p.status != http.StatusForbidden || !strings.Contains(p.body, "suspended") {
		t.Errorf("a suspended tenant's member in the console: %d", p.status)
	}
	if code, _ := s.callTool(t, betaKey, "whoami", `{}`); code != http.StatusOK {
		t.Errorf("another tenant while acme is suspended: %d", code)
	}
	resume := "/console/operator/tenants/acme.example/resume"
	if p := op.post(resume, op.get("/console/operator").form(t, resume)); p.status != http.StatusOK {
		t.Fatalf("resume: %d", p.status)
	}
	if code, _ := s.callTool(t, acmeKey, "whoami", `{}`); code != http.StatusOK {
		t.Errorf("after resume: %d", code)
	}

	// Export.
	exp := op.get("/console/operator/tenants/acme.example/export")
	if exp.status != http.StatusOK || exp.header.Get("Content-Type") != "application/zip" {
		t.Fatalf("export: %d %s", exp.status, exp.header.Get("Content-Type"))
	}
	zr, err := zip.NewReader(bytes.NewReader([]byte(exp.body)), int64(len(exp.body)))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, f := range zr.File {
		rc, _ := f.Open()
		b, _ := io.ReadAll(rc)
		rc.Close()
		files[f.Name] = string(b)
	}
	for name, want := range map[string]string{"tenant.json": `"key":"acme.example"`, "members.jsonl": "ada@acme.example",
		"api_keys.jsonl": "acme ci", "audit_log.jsonl": "add_todo", "todos.jsonl": "ship the console"} {
		if !strings.Contains(files[name], want) {
			t.Errorf("export %s lacks %q:\n%s", name, want, files[name])
		}
	}
	all := strings.Join(func() []string {
		var v []string
		for _, c := range files {
			v = append(v, c)
		}
		return v
	}(), "\n")
	if strings.Contains(all, acmeKey) || strings.Contains(all, "secret_hash") || strings.Contains(all, "beta") {
		t.Error("the export holds a key secret, a secret hash, or another tenant's data")
	}

	// Delete: a wrong confirmation changes nothing.
	tn, _ := s.db.FindTenantByKey(context.Background(), "acme.example")
	del := "/console/operator/tenants/acme.example/delete"
	page := op.get(del)
	if p := op.post(del, url.Values{"csrf": page.form(t, del)["csrf"], "confirm": {"acme"}}); p.status != http.StatusBadRequest {
		t.Errorf("delete with a wrong confirmation: %d", p.status)
	}
	if p := op.post(del, url.Values{"csrf": page.form(t, del)["csrf"], "confirm": {"acme.example"}}); p.status != http.StatusOK || !strings.Contains(p.body, "was deleted") {
		t.Fatalf("delete: %d\n%s", p.status, p.body)
	}
	for sql, want := range map[string]string{
		"SELECT count(*)::text FROM pg_namespace WHERE nspname = $1":                  tn.Schema,
		"SELECT count(*)::text FROM pg_roles WHERE rolname IN ($1)":                   tn.DBRole,
		"SELECT count(*)::text FROM gatehouse.tenants WHERE id = $1":                  tn.ID,
		"SELECT count(*)::text FROM gatehouse.members WHERE tenant_id = $1":           tn.ID,
		"SELECT count(*)::text FROM gatehouse.api_keys WHERE tenant_id = $1":          tn.ID,
		"SELECT count(*)::text FROM gatehouse.member_identities WHERE tenant_id = $1": tn.ID,
		"SELECT count(*)::text FROM gatehouse.audit_heads WHERE tenant_id = $1":       tn.ID,
		"SELECT count(*)::text FROM gatehouse.tenant_calls WHERE tenant_id = $1":      tn.ID,
		"SELECT count(*)::text FROM pg_roles WHERE rolname = $1 AND rolname <> ''":    tn.QueryRole,
	} {
		if n := s.scalar(t, sql, want); n != "0" {
			t.Errorf("after delete, %s (%s) = %s", sql, want, n)
		}
	}
	if n := s.scalar(t, "SELECT count(*)::text FROM gatehouse.operator_audit WHERE tenant_key = 'acme.example' AND action = 'delete' AND operator = 'corp:op-1'"); n != "1" {
		t.Errorf("operator records of the deletion: %s, want 1", n)
	}
	if code, _ := s.callTool(t, acmeKey, "whoami", `{}`); code != http.StatusUnauthorized {
		t.Errorf("a deleted tenant's key: %d, want 401", code)
	}
	if p := ada.get("/console/connect"); !strings.Contains(p.body, "Sign in to the Gatehouse console") {
		t.Errorf("a deleted tenant's member is still signed in to the console: %d", p.status)
	}
	s.srv.FlushAudit(context.Background())
	beta, _ := s.db.FindTenantByKey(context.Background(), "beta.example")
	if rep, err := s.db.VerifyAudit(context.Background(), beta, testAuditKey); err != nil || !rep.OK() {
		t.Errorf("beta's audit chain after acme's deletion: %+v %v", rep, err)
	}
	if code, _ := s.callTool(t, betaKey, "list_todos", `{}`); code != http.StatusOK {
		t.Errorf("beta after acme's deletion: %d", code)
	}
}
