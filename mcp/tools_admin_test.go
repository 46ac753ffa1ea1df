package mcp_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func TestQueryToolThroughMCP(t *testing.T) {
	g := newGatehouse(t)
	dev := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	call(t, dev, "add_todo", map[string]any{"title": "visible | to SQL"}, nil)
	other := g.connect(t, g.key(t, "globex.com", tenancy.Developer), "")
	call(t, other, "add_todo", map[string]any{"title": "globex only"}, nil)

	var out struct {
		Columns []string `json:"columns"`
		Rows    [][]any  `json:"rows"`
	}
	res := call(t, dev, "query", map[string]any{"sql": "SELECT title, done FROM todos ORDER BY title"}, &out)
	if res.IsError || len(out.Rows) != 1 || out.Rows[0][0] != "visible | to SQL" || !strings.Contains(text(res), `visible \| to SQL`) {
		t.Errorf("query: %+v %q", out, text(res))
	}
	var tables struct{ Tables []struct{ Name string } }
	call(t, dev, "list_tables", nil, &tables)
	if !slices.ContainsFunc(tables.Tables, func(x struct{ Name string }) bool { return x.Name == "todos" }) ||
		slices.ContainsFunc(tables.Tables, func(x struct{ Name string }) bool { return x.Name == "audit_log" }) {
		t.Errorf("list_tables: %+v", tables)
	}
	if res := call(t, dev, "describe_table", map[string]any{"table": "audit_log"}, nil); !res.IsError {
		t.Errorf("describe_table shows the audit log: %s", text(res))
	}
	globexSchema, _ := g.db.FindTenantByKey(context.Background(), "globex.com")
	for _, sql := range []string{
		"SELECT * FROM " + globexSchema.Schema + ".todos",
		"SELECT * FROM audit_log",
		"DELETE FROM todos",
		"SELECT set_config('role', 'none', true), (SELECT count(*) FROM " + globexSchema.Schema + ".todos)",
	} {
		res := call(t, dev, "query", map[string]any{"sql": sql}, nil)
		if !res.IsError || !strings.Contains(text(res), "the query failed") || strings.Contains(text(res), "globex only") {
			t.Errorf("%q: %s", sql, text(res))
		}
	}
	viewer := g.connect(t, g.key(t, "acme.com", tenancy.Viewer, "mcp:read"), "")
	if res := call(t, viewer, "query", map[string]any{"sql": "SELECT 1"}, nil); !res.IsError || !strings.Contains(text(res), "ACCESS DENIED") {
		t.Errorf("viewer query: %s", text(res))
	}
}

// TestAdminTools: members and keys managed through the tools, inside the
// tenant, with removal and revocation taking effect at once.
func TestAdminTools(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	g := newGatehouse(t, withIssuer(t, "corp", iss))
	aliceTok, bobTok := token(iss, "alice", "alice@acme.com", true, nil), token(iss, "bob", "bob@acme.com", true, nil)
	alice := g.connect(t, aliceTok, "")
	whoami(t, g, bobTok) // bob joins as a developer
	// Federated tokens carry the default scopes; admin tools need mcp:admin.
	admin := g.connect(t, token(iss, "alice", "alice@acme.com", true, map[string]any{"scope": "mcp:read mcp:write mcp:admin"}), "")
	if res := call(t, alice, "list_members", nil, nil); !res.IsError || !strings.Contains(text(res), "mcp:admin") {
		t.Errorf("list_members without mcp:admin: %s", text(res))
	}
	var members struct {
		Members []struct{ ID, Email, Role string }
	}
	call(t, admin, "list_members", nil, &members)
	if len(members.Members) != 2 {
		t.Fatalf("members: %+v", members)
	}
	var aliceID, bobID string
	for _, m := range members.Members {
		if m.Email == "alice@acme.com" {
			aliceID = m.ID
		} else {
			bobID = m.ID
		}
	}
	if res := call(t, admin, "set_member_role", map[string]any{"member_id": aliceID, "role": "developer"}, nil); !res.IsError || !strings.Contains(text(res), "at least one admin") {
		t.Errorf("demoting the last admin: %s", text(res))
	}
	// Bob becomes admin, creates a key, then is removed: he and his key are refused at once.
	call(t, admin, "set_member_role", map[string]any{"member_id": bobID, "role": "admin"}, nil)
	bobAdmin := g.connect(t, token(iss, "bob", "bob@acme.com", true, map[string]any{"scope": "mcp:read mcp:write mcp:admin"}), "")
	var created struct {
		Key    struct{ ID, Role string }
		Secret string
	}
	if res := call(t, bobAdmin, "create_api_key", map[string]any{"name": "ci", "role": "developer"}, &created); res.IsError || !strings.HasPrefix(created.Secret, "gk_") {
		t.Fatalf("create_api_key: %s", text(res))
	}
	if post(t, g.url, "Bearer "+created.Secret, whoamiCall).StatusCode != http.StatusOK {
		t.Fatal("bob's new key does not work")
	}
	var removed struct {
		RevokedKeys []string `json:"revoked_api_keys"`
	}
	call(t, admin, "remove_member", map[string]any{"member_id": bobID}, &removed)
	if len(removed.RevokedKeys) != 1 || removed.RevokedKeys[0] != created.Key.ID {
		t.Errorf("removal revoked %v, want bob's key %s", removed.RevokedKeys, created.Key.ID)
	}
	deadline := time.Now().Add(time.Second)
	for post(t, g.url, "Bearer "+created.Secret, whoamiCall).StatusCode != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("bob's key still works a second after his removal")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if res := post(t, g.url, "Bearer "+bobTok, whoamiCall); res.StatusCode != http.StatusForbidden || !strings.Contains(readBody(t, res), "removed you") {
		t.Errorf("removed member: %d", res.StatusCode)
	}
	// Restoring him works; his data stayed.
	call(t, admin, "set_member_role", map[string]any{"member_id": bobID, "role": "viewer"}, nil)
	if m := whoami(t, g, bobTok); m.Role != "viewer" {
		t.Errorf("restored bob: %+v", m)
	}
	// Keys: role and scopes never above the creator's; other tenants' keys are out of reach.
	dev := g.connect(t, g.key(t, "acme.com", tenancy.Admin, "mcp:read", "mcp:admin"), "")
	if res := call(t, dev, "create_api_key", map[string]any{"name": "x", "role": "developer", "scopes": []string{"mcp:write"}}, nil); !res.IsError || !strings.Contains(text(res), "beyond your own") {
		t.Errorf("a key with a scope the creator lacks: %s", text(res))
	}
	_, otherKey := g.keyWith(t, "globex.com", tenancy.Admin, time.Time{})
	if res := call(t, admin, "revoke_api_key", map[string]any{"id": otherKey.ID}, nil); !res.IsError || !strings.Contains(text(res), "no such") {
		t.Errorf("revoking another tenant's key: %s", text(res))
	}
	if k, _ := g.db.FindAPIKeyByID(context.Background(), otherKey.ID); !k.RevokedAt.IsZero() {
		t.Error("another tenant's key was revoked")
	}
	var keys struct{ Keys []struct{ ID string } }
	call(t, admin, "list_api_keys", nil, &keys)
	if slices.ContainsFunc(keys.Keys, func(k struct{ ID string }) bool { return k.ID == otherKey.ID }) {
		t.Error("list_api_keys shows another tenant's key")
	}
}

func TestGetUsage(t *testing.T) {
	g := newGatehouse(t, withLimits(tenancy.Limits{Tenant: tenancy.Rate{PerMinute: 60, Burst: 50}, Principal: tenancy.Rate{PerMinute: 60, Burst: 10}}))
	cs := g.connect(t, g.key(t, "acme.com", tenancy.Viewer, "mcp:read"), "")
	call(t, cs, "add_todo", map[string]any{"title": "x"}, nil) // denied
	call(t, cs, "whoami", nil, nil)
	var u struct {
		You          struct{ Remaining int } `json:"you"`
		YourCalls24h struct {
			Allowed, Denied int64
		} `json:"your_calls_24h"`
	}
	res := call(t, cs, "get_usage", nil, &u)
	if res.IsError || u.YourCalls24h.Allowed != 1 || u.YourCalls24h.Denied != 1 || u.You.Remaining <= 0 || u.You.Remaining >= 10 {
		t.Errorf("get_usage: %+v %s", u, text(res))
	}
}
