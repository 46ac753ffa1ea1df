package console_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

var secretOnPage = regexp.MustCompile(`<pre id="secret">([^<]+)</pre>`)

// mcpStatus calls tools/list at /mcp with token and returns the status.
func (s *site) mcpStatus(t *testing.T, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.ts.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestSignInCreateKeyRevoke: an admin signs in through the upstream,
// lands in the tenant of their verified domain as its first member
// (admin), creates a key in the console, the key works at /mcp, they
// revoke it, it is refused, and the tenant's audit log holds both changes
// marked via=console, in a chain that verifies.
func TestSignInCreateKeyRevoke(t *testing.T) {
	s := newSite(t, siteOpts{})
	b := s.signedIn("ada-1", "ada@acme.example")
	p := b.get("/console/connect")
	for _, want := range []string{s.ts.URL + "/mcp", "claude mcp add --transport http gatehouse " + s.ts.URL + "/mcp",
		"@modelcontextprotocol/inspector@2.12.0", "acme.example · admin"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("the Connect page lacks %q", want)
		}
	}
	keys := b.get("/console/keys")
	form := keys.form(t, "/console/keys")
	form.Set("name", "CI deploy")
	form.Set("role", "developer")
	form["scope"] = []string{"mcp:read", "mcp:write"}
	form.Set("expires_in_days", "30")
	created := b.post("/console/keys", form)
	m := secretOnPage.FindStringSubmatch(created.body)
	if created.status != http.StatusOK || m == nil {
		t.Fatalf("creating a key: %d\n%s", created.status, created.body)
	}
	secret := m[1]
	if code := s.mcpStatus(t, secret); code != http.StatusOK {
		t.Fatalf("the new key at /mcp: %d", code)
	}
	if again := b.get("/console/keys"); strings.Contains(again.body, secret) {
		t.Error("the secret is shown again after the first time")
	}
	var keyID string
	if err := s.db.Pool().QueryRow(context.Background(), "SELECT id FROM gatehouse.api_keys WHERE name = 'CI deploy'").Scan(&keyID); err != nil {
		t.Fatal(err)
	}
	action := "/console/keys/" + keyID + "/revoke"
	if p := b.post(action, b.get("/console/keys").form(t, action)); p.status != http.StatusOK || !strings.Contains(p.body, "Key revoked") {
		t.Fatalf("revoking: %d\n%s", p.status, p.body)
	}
	if code := s.mcpStatus(t, secret); code != http.StatusUnauthorized {
		t.Fatalf("the revoked key at /mcp: %d, want 401", code)
	}
	s.srv.FlushAudit(context.Background())
	tn, err := s.db.FindTenantByKey(context.Background(), "acme.example")
	if err != nil {
		t.Fatal(err)
	}
	var recs []*store.AuditRecord
	_ = s.db.WithTenant(context.Background(), tn, func(tx pgx.Tx) error {
		recs, _, err = store.FindAudit(context.Background(), tx, store.AuditFilter{Limit: 100})
		return err
	})
	seen := map[string]string{}
	for _, r := range recs {
		if r.Via == "console" && r.Subject == "corp:ada-1" {
			seen[r.Tool] = r.Decision
		}
	}
	// Changes (their own transaction) and reads (group-committed records)
	// both say via=console.
	for _, tool := range []string{"create_my_api_key", "revoke_my_api_key", "list_my_api_keys"} {
		if seen[tool] != store.Allowed {
			t.Errorf("no ALLOWED %s record via console by corp:ada-1 (have %v)", tool, seen)
		}
	}
	audit := b.get("/console/admin/audit")
	for _, want := range []string{"create_my_api_key", "revoke_my_api_key", "console"} {
		if !strings.Contains(audit.body, want) {
			t.Errorf("the audit page lacks %q", want)
		}
	}
	verified := b.post("/console/admin/audit/verify", audit.form(t, "/console/admin/audit/verify"))
	if !strings.Contains(verified.body, "Verified:") {
		t.Errorf("after Verify now, the audit page does not say verified:\n%s", verified.body)
	}
	exp := b.get("/console/admin/audit/export?format=csv&tool=create_my_api_key")
	if exp.status != http.StatusOK || !strings.Contains(exp.body, "create_my_api_key") || !strings.HasPrefix(exp.body, "id,at,decision") {
		t.Errorf("CSV export: %d\n%s", exp.status, exp.body)
	}
	if strings.Contains(exp.body, "revoke_my_api_key") {
		t.Error("the export ignored its tool filter")
	}
	// Ada was seen (her console session): the members page says when.
	if m := regexp.MustCompile(`(?s)ada@acme\.example.*?<td>[^<]*UTC</td><td>([^<]*)</td>`).FindStringSubmatch(b.get("/console/admin/members").body); m == nil || !strings.HasSuffix(m[1], "UTC") {
		t.Errorf("the members page shows no last-seen time for ada: %v", m)
	}
	for _, path := range []string{"/console/admin/members", "/console/admin/keys", "/console/admin/usage", "/console/signins"} {
		if p := b.get(path); p.status != http.StatusOK {
			t.Errorf("%s: %d\n%s", path, p.status, p.body)
		}
	}
	if !bytes.Contains([]byte(b.get("/console/admin/usage").body), []byte("<svg")) {
		t.Error("the usage page draws no chart")
	}
}

// TestAuditRecordInTheIntake: a record still in the audit intake (its id
// already in the audit stream, the chainer not yet by) is shown by its
// page, and then has moved into the tenant's audit log.
func TestAuditRecordInTheIntake(t *testing.T) {
	s := newSite(t, siteOpts{})
	ada := s.signedIn("ada-1", "ada@acme.example")
	ctx := context.Background()
	tn, err := s.db.FindTenantByKey(ctx, "acme.example")
	if err != nil {
		t.Fatal(err)
	}
	rec := &store.AuditRecord{RequestID: "in-the-intake", Decision: store.Allowed, Tool: "whoami", Subject: "corp:ada-1"}
	if errs, _ := s.db.WriteAuditEntries(ctx, []store.AuditEntry{{Tenant: tn, Rec: rec}}); errs[0] != nil || rec.ID == 0 {
		t.Fatalf("written: id %d, %v", rec.ID, errs[0])
	}
	if n := s.scalar(t, "SELECT count(*)::text FROM gatehouse.audit_intake WHERE tenant_id = $1 AND id = $2", tn.ID, rec.ID); n != "1" {
		t.Fatalf("the record is not in the intake (%s): the test shows nothing", n)
	}
	p := ada.get(fmt.Sprintf("/console/admin/audit/%d", rec.ID))
	if p.status != http.StatusOK || !strings.Contains(p.body, "in-the-intake") {
		t.Fatalf("the record's page: %d\n%s", p.status, p.body)
	}
	if n := s.scalar(t, "SELECT count(*)::text FROM gatehouse.audit_intake WHERE tenant_id = $1", tn.ID); n != "0" {
		t.Errorf("%s records left in the intake after the page", n)
	}
}

// TestAuditPageSaysIncomplete: records the tenant's audit log refused,
// kept out of the chain in the audit intake, make the audit page say the
// chain is incomplete after Verify now (as `gatehouse audit verify` exits
// 1), and no longer once they are moved back.
func TestAuditPageSaysIncomplete(t *testing.T) {
	s := newSite(t, siteOpts{})
	b := s.signedIn("ada-1", "ada@acme.example")
	ctx := context.Background()
	tn, err := s.db.FindTenantByKey(ctx, "acme.example")
	if err != nil {
		t.Fatal(err)
	}
	storetest.RefuseIntakeRecord(t, s.db, tn, "r-refused", "corp:ada-1")
	verify := func() string {
		t.Helper()
		p := b.post("/console/admin/audit/verify", b.get("/console/admin/audit").form(t, "/console/admin/audit/verify"))
		if p.status != http.StatusOK || !strings.Contains(p.body, "Verified:") {
			t.Fatalf("Verify now: %d\n%s", p.status, p.body)
		}
		return p.body
	}
	if body := verify(); !strings.Contains(body, `id="chain-refused"`) || !strings.Contains(body, "Incomplete: 1 records were refused") {
		t.Errorf("with a refused record, the audit page does not say the chain is incomplete:\n%s", body)
	}
	if _, err := s.db.Pool().Exec(ctx, "UPDATE gatehouse.audit_intake SET refused = NULL WHERE tenant_id = $1", tn.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.db.SettleAudit(ctx, tn); err != nil {
		t.Fatal(err)
	}
	if body := verify(); strings.Contains(body, "chain-refused") {
		t.Errorf("after the repair, the audit page still says incomplete:\n%s", body)
	}
}
