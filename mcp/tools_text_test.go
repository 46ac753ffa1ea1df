package mcp_test

import (
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestAdminToolTexts: admin tools answer a model in sentences, with the
// structured result alongside; members are found by id, email or identity;
// refusing to remove the last admin is audited as DENIED with the reason.
func TestAdminToolTexts(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	g := newGatehouse(t, withIssuer(t, "corp", iss))
	admin := g.connect(t, token(iss, "alice", "alice@acme.com", true, map[string]any{"scope": "mcp:read mcp:write mcp:admin"}), "")
	whoami(t, g, token(iss, "bob", "bob@acme.com", true, nil)) // bob joins as a developer

	notJSON := func(name, s string) {
		t.Helper()
		if strings.HasPrefix(strings.TrimSpace(s), "{") {
			t.Errorf("%s answers raw JSON: %s", name, s)
		}
	}
	res := call(t, admin, "list_members", nil, nil)
	notJSON("list_members", text(res))
	if !strings.Contains(text(res), "bob@acme.com: developer (id ") {
		t.Errorf("list_members: %s", text(res))
	}
	// By email (any case), by identity, by id.
	for _, ref := range []string{"BOB@acme.com", "corp:bob"} {
		var out struct{ Role string }
		res := call(t, admin, "set_member_role", map[string]any{"member_id": ref, "role": "viewer"}, &out)
		if res.IsError || out.Role != "viewer" || !strings.HasPrefix(text(res), "bob@acme.com (id ") || !strings.HasSuffix(text(res), "is now viewer.") {
			t.Errorf("set_member_role %s: %s", ref, text(res))
		}
	}
	if res := call(t, admin, "set_member_role", map[string]any{"member_id": "carol@acme.com", "role": "viewer"}, nil); !res.IsError ||
		!strings.Contains(text(res), `no member "carol@acme.com" in acme.com`) {
		t.Errorf("unknown member: %s", text(res))
	}
	// The last admin: a refusal, audited as DENIED with the reason.
	res = call(t, admin, "remove_member", map[string]any{"member_id": "alice@acme.com"}, nil)
	if !res.IsError || !strings.Contains(text(res), "must keep at least one admin") {
		t.Errorf("removing the last admin: %s", text(res))
	}
	var audit struct {
		Records []struct{ Decision, Tool, Reason string }
	}
	call(t, admin, "read_audit_log", map[string]any{"tool": "remove_member"}, &audit)
	if len(audit.Records) != 1 || audit.Records[0].Decision != "DENIED" || !strings.Contains(audit.Records[0].Reason, "must keep at least one admin") {
		t.Errorf("the refusal's audit record: %+v", audit.Records)
	}
	var removed struct {
		RevokedKeys []string `json:"revoked_api_keys"`
	}
	res = call(t, admin, "remove_member", map[string]any{"member_id": "corp:bob"}, &removed)
	if res.IsError || !strings.Contains(text(res), "Removed bob@acme.com (id ") || !strings.Contains(text(res), "they had created no API keys") {
		t.Errorf("remove_member: %s", text(res))
	}

	// Keys: readable lines, never a secret.
	call(t, admin, "create_api_key", map[string]any{"name": "ci", "role": "viewer"}, nil)
	res = call(t, admin, "list_api_keys", nil, nil)
	notJSON("list_api_keys", text(res))
	if !strings.Contains(text(res), "(ci): role viewer, scopes mcp:read") || !strings.Contains(text(res), "never used") || strings.Contains(text(res), "gk_") {
		t.Errorf("list_api_keys: %s", text(res))
	}
	var keys struct{ Keys []struct{ ID string } }
	call(t, admin, "list_api_keys", nil, &keys)
	res = call(t, admin, "revoke_api_key", map[string]any{"id": keys.Keys[0].ID}, nil)
	if res.IsError || !strings.HasPrefix(text(res), "Revoked API key "+keys.Keys[0].ID+" (ci)") {
		t.Errorf("revoke_api_key: %s", text(res))
	}

	// A tenant with no members (keys only) gets a sentence, not nothing.
	keysOnly := g.connect(t, g.key(t, "initech.com", tenancy.Admin, "mcp:read", "mcp:write", "mcp:admin"), "")
	if res := call(t, keysOnly, "list_members", nil, nil); res.IsError || !strings.Contains(text(res), "no members yet") {
		t.Errorf("list_members with none: %q", text(res))
	}
}

// TestReadAuditLogCursors: read_audit_log pages with sealed cursors like
// every other list, and refuses made-up ones.
func TestReadAuditLogCursors(t *testing.T) {
	g := newGatehouse(t)
	admin := g.connect(t, g.key(t, "acme.com", tenancy.Admin, "mcp:read", "mcp:write", "mcp:admin"), "")
	for range 3 {
		call(t, admin, "whoami", nil, nil)
	}
	var page struct {
		Records    []struct{ ID int64 }
		NextCursor string `json:"next_cursor"`
	}
	call(t, admin, "read_audit_log", map[string]any{"limit": 2}, &page)
	if len(page.Records) != 2 || page.NextCursor == "" {
		t.Fatalf("first page: %+v", page)
	}
	first := page.Records
	cursor := page.NextCursor
	page.NextCursor = ""
	if res := call(t, admin, "read_audit_log", map[string]any{"limit": 2, "cursor": cursor}, &page); res.IsError || len(page.Records) == 0 || page.Records[0].ID >= first[1].ID {
		t.Errorf("second page: %+v %s", page, text(res))
	}
	for _, bad := range []string{"zzz", "1", cursor + "x", strings.Replace(cursor, ".", "", 1)} {
		if res := call(t, admin, "read_audit_log", map[string]any{"cursor": bad}, nil); !res.IsError || !strings.Contains(text(res), "cursor is not one this tool returned") {
			t.Errorf("cursor %q accepted: %s", bad, text(res))
		}
	}
	// Another tenant's cursor is refused too.
	other := g.connect(t, g.key(t, "globex.com", tenancy.Admin, "mcp:read", "mcp:write", "mcp:admin"), "")
	if res := call(t, other, "read_audit_log", map[string]any{"cursor": cursor}, nil); !res.IsError {
		t.Errorf("another tenant's cursor accepted: %s", text(res))
	}
}

// TestWorkspaceToolTexts: honest row counts, defaults shown, "1 row".
func TestWorkspaceToolTexts(t *testing.T) {
	g := newGatehouse(t)
	dev := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	call(t, dev, "add_todo", map[string]any{"title": "one"}, nil)
	var tables struct {
		Tables []struct {
			Name  string
			Rows  int64
			Exact bool `json:"rows_exact"`
		}
	}
	res := call(t, dev, "list_tables", nil, &tables)
	if !strings.Contains(text(res), "todos (1 row)") || strings.Contains(text(res), "~") {
		t.Errorf("list_tables: %s", text(res))
	}
	for _, tb := range tables.Tables {
		if tb.Name == "todos" && (tb.Rows != 1 || !tb.Exact) {
			t.Errorf("todos: %+v", tb)
		}
	}
	res = call(t, dev, "describe_table", map[string]any{"table": "todos"}, nil)
	if !strings.Contains(text(res), " default ") {
		t.Errorf("describe_table shows no default: %s", text(res))
	}
	res = call(t, dev, "query", map[string]any{"sql": "SELECT title FROM todos"}, nil)
	if !strings.HasSuffix(text(res), "1 row") {
		t.Errorf("query: %q", text(res))
	}
}

// TestProjectNamesAndDocuments: texts name projects, save_document answers
// with metadata and an excerpt (not the body twice), and an archived
// project can be made active again.
func TestProjectNamesAndDocuments(t *testing.T) {
	g := newGatehouse(t)
	dev := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	var p struct{ ID string }
	call(t, dev, "create_project", map[string]any{"name": "Launch"}, &p)
	for _, tc := range []struct {
		tool string
		args map[string]any
	}{
		{"add_todo", map[string]any{"title": "ship", "project_id": p.ID}},
		{"list_todos", nil},
		{"list_documents", nil},
	} {
		if tc.tool == "list_documents" {
			call(t, dev, "save_document", map[string]any{"title": "plan", "body": "short", "project_id": p.ID}, nil)
		}
		res := call(t, dev, tc.tool, tc.args, nil)
		if !strings.Contains(text(res), `project "Launch"`) || strings.Contains(text(res), "project "+p.ID) {
			t.Errorf("%s does not name the project: %s", tc.tool, text(res))
		}
	}

	var todos struct {
		Todos []struct {
			ProjectName string `json:"project_name"`
		}
	}
	call(t, dev, "list_todos", nil, &todos)
	if len(todos.Todos) != 1 || todos.Todos[0].ProjectName != "Launch" {
		t.Errorf("list_todos structured: %+v", todos)
	}

	body := strings.Repeat("All work and no play makes a dull document. ", 20000) // ~900 KB
	var saved map[string]any
	res := call(t, dev, "save_document", map[string]any{"title": "big", "body": body}, &saved)
	if res.IsError {
		t.Fatal(text(res))
	}
	if len(text(res)) > 1000 || !strings.HasPrefix(text(res), `Saved. Document "big" (id `) || !strings.Contains(text(res), "All work and no play") || !strings.HasSuffix(text(res), "…") {
		t.Errorf("save_document text (%d bytes): %.300s", len(text(res)), text(res))
	}
	if _, ok := saved["body"]; ok {
		t.Error("save_document's structured result carries the body")
	}
	if ex, _ := saved["excerpt"].(string); len(ex) == 0 || len(ex) > 1000 || saved["size"] != float64(len(body)) {
		t.Errorf("structured result: excerpt %d bytes, size %v", len(ex), saved["size"])
	}
	var got struct{ Body string }
	call(t, dev, "get_document", map[string]any{"id": saved["id"]}, &got)
	if got.Body != body {
		t.Error("get_document does not return the whole body")
	}

	// Archive, take the name, unarchive: refused until renamed; then active.
	call(t, dev, "archive_project", map[string]any{"id": p.ID}, nil)
	var taker struct{ ID string }
	call(t, dev, "create_project", map[string]any{"name": "launch"}, &taker)
	if res := call(t, dev, "unarchive_project", map[string]any{"id": p.ID}, nil); !res.IsError || !strings.Contains(text(res), "already has this project's name") {
		t.Errorf("unarchive with the name taken: %s", text(res))
	}
	call(t, dev, "update_project", map[string]any{"id": taker.ID, "name": "Launch v2"}, nil)
	var back struct{ Archived bool }
	if res := call(t, dev, "unarchive_project", map[string]any{"id": p.ID}, &back); res.IsError || back.Archived || strings.Contains(text(res), "archived") {
		t.Errorf("unarchive: %s", text(res))
	}
	if res := call(t, dev, "add_todo", map[string]any{"title": "again", "project_id": p.ID}, nil); res.IsError {
		t.Errorf("adding to the unarchived project: %s", text(res))
	}
	viewer := g.connect(t, g.key(t, "acme.com", tenancy.Viewer, "mcp:read"), "")
	if res := call(t, viewer, "unarchive_project", map[string]any{"id": p.ID}, nil); !res.IsError {
		t.Errorf("a viewer unarchived: %s", text(res))
	}
}
