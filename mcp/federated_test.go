package mcp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
	"github.com/gatehouse-mcp/gatehouse/identity/oidc"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// withIssuer trusts an in-process OIDC issuer named name.
func withIssuer(t *testing.T, name string, iss *idptest.Issuer) func(*setup) {
	v, err := oidc.Config{Name: name, Issuer: iss.URL, Audiences: []string{"gatehouse"}, AllowInsecure: true, HTTPClient: iss.Client()}.Open()
	if err != nil {
		t.Fatal(err)
	}
	return func(s *setup) {
		if s.resolver.Issuers == nil {
			s.resolver.Issuers = map[string]identity.Verifier{}
		}
		s.resolver.Issuers[iss.URL] = v
	}
}

func token(iss *idptest.Issuer, sub, email string, verified bool, extra map[string]any) string {
	claims := map[string]any{"email": email, "email_verified": verified}
	for k, v := range extra {
		claims[k] = v
	}
	return iss.Sign(iss.Claims(sub, "gatehouse", claims))
}

type me struct {
	Subject, Tenant, Role, Email string
	TenantKind                   string `json:"tenant_kind"`
	Scopes                       []string
}

func whoami(t *testing.T, g *gatehouse, tok string) me {
	t.Helper()
	var m me
	if res := call(t, g.connect(t, tok, ""), "whoami", nil, &m); res.IsError {
		t.Fatalf("whoami: %s", text(res))
	}
	return m
}

// TestFederatedTenancy: colleagues share their organisation's tenant, the
// first is its admin, consumer-mail and unverified users get tenants of
// their own, and data follows the tenant.
func TestFederatedTenancy(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	g := newGatehouse(t, withIssuer(t, "corp", iss))
	alice := token(iss, "alice", "alice@acme.com", true, nil)
	bob := token(iss, "bob", "Bob@ACME.com", true, nil)
	carol := token(iss, "carol", "carol@gmail.com", true, nil)
	dave := token(iss, "dave", "dave@gmail.com", true, nil)
	mallory := token(iss, "mallory", "mallory@acme.com", false, nil)

	tests := []struct {
		tok, tenant, kind, role string
	}{
		{alice, "acme.com", "organization", "admin"},
		{bob, "acme.com", "organization", "developer"},
		{carol, "personal:corp:carol", "personal", "admin"},
		{dave, "personal:corp:dave", "personal", "admin"},
		{mallory, "personal:corp:mallory", "personal", "admin"},
	}
	for _, tt := range tests {
		m := whoami(t, g, tt.tok)
		if m.Tenant != tt.tenant || m.TenantKind != tt.kind || m.Role != tt.role {
			t.Errorf("%s: tenant %s (%s) role %s; want %s (%s) %s", m.Subject, m.Tenant, m.TenantKind, m.Role, tt.tenant, tt.kind, tt.role)
		}
		if strings.Join(m.Scopes, " ") != "mcp:read mcp:write" {
			t.Errorf("%s: default scopes %v", m.Subject, m.Scopes)
		}
	}
	call(t, g.connect(t, alice, ""), "add_todo", map[string]any{"title": "acme only"}, nil)
	for tok, want := range map[string]int{bob: 1, mallory: 0, carol: 0} {
		var list todoList
		call(t, g.connect(t, tok, ""), "list_todos", nil, &list)
		if len(list.Todos) != want {
			t.Errorf("%s sees %d todos, want %d", whoami(t, g, tok).Subject, len(list.Todos), want)
		}
	}
}

// TestLinkedIdentities: one person signing in through two providers with
// the same verified email is one member, with one role.
func TestLinkedIdentities(t *testing.T) {
	corp, other := idptest.NewIssuer(t, nil), idptest.NewIssuer(t, nil)
	g := newGatehouse(t, withIssuer(t, "corp", corp), withIssuer(t, "sso", other))
	first := whoami(t, g, token(corp, "a1", "alice@acme.com", true, nil))
	second := whoami(t, g, token(other, "zz9", "alice@acme.com", true, nil))
	if first.Role != "admin" || second.Role != "admin" || second.Tenant != "acme.com" {
		t.Errorf("alice via two providers: %+v / %+v", first, second)
	}
	tn, _ := g.db.FindTenantByKey(context.Background(), "acme.com")
	members, err := g.db.FindMembers(context.Background(), tn.ID)
	if err != nil || len(members) != 1 || len(members[0].Subjects) != 2 {
		t.Errorf("members = %+v (%v), want one member with two identities", members, err)
	}
}

func TestSignupPolicyRefusesNewTenants(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	g := newGatehouse(t, withIssuer(t, "corp", iss), func(s *setup) {
		s.policy.Signup, s.policy.Allowlist = tenancy.SignupAllowlist, []string{"acme.com"}
	})
	if m := whoami(t, g, token(iss, "a", "alice@acme.com", true, nil)); m.Tenant != "acme.com" {
		t.Errorf("allow-listed tenant: %+v", m)
	}
	for _, tok := range []string{token(iss, "e", "eve@evil.com", true, nil), token(iss, "g", "gus@gmail.com", true, nil)} {
		res := post(t, g.url, "Bearer "+tok, addTodoCall)
		var body map[string]string
		_ = json.NewDecoder(res.Body).Decode(&body)
		if res.StatusCode != http.StatusForbidden || !strings.Contains(body["error_description"], "sign-up is restricted") {
			t.Errorf("refused sign-up: %d %v", res.StatusCode, body)
		}
	}
	if ts, _ := g.db.FindTenants(context.Background()); len(ts) != 1 {
		t.Errorf("%d tenants exist, want only acme.com", len(ts))
	}
}

// TestIssuerOutage: a token validated before the issuer went down keeps
// working; a new token gets 503 with Retry-After (not 401, which would make
// the client discard a good token).
func TestIssuerOutage(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	g := newGatehouse(t, withIssuer(t, "corp", iss))
	known := token(iss, "alice", "alice@acme.com", true, nil)
	whoami(t, g, known)

	cold := idptest.NewIssuer(t, nil) // a second issuer whose keys were never fetched
	g2 := newGatehouse(t, withIssuer(t, "corp", cold))
	iss.SetDown(true)
	cold.SetDown(true)
	if res := post(t, g.url, "Bearer "+known, addTodoCall); res.StatusCode != http.StatusOK {
		t.Errorf("cached principal during outage: %d", res.StatusCode)
	}
	res := post(t, g2.url, "Bearer "+token(cold, "bob", "bob@acme.com", true, nil), addTodoCall)
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Errorf("new token during outage: %d, Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
	}
	// The answer names the provider's kind and says it is not the database.
	if body := readBody(t, res); !strings.Contains(body, `"code":-32030`) || !strings.Contains(body, `"unavailable":"identity_provider"`) ||
		!strings.Contains(body, "the identity provider (OpenID Connect issuer 127.0.0.1) cannot be reached") || strings.Contains(body, "database") {
		t.Errorf("new token during outage: %s", body)
	}
}

func TestFederatedTokenScopesAndErrors(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	g := newGatehouse(t, withIssuer(t, "corp", iss))
	readOnly := token(iss, "alice", "alice@acme.com", true, map[string]any{"scope": "openid mcp:read"})
	res := call(t, g.connect(t, readOnly, ""), "add_todo", map[string]any{"title": "x"}, nil)
	if !res.IsError || !strings.Contains(text(res), "mcp:write") {
		t.Errorf("read-only token add_todo: %q", text(res))
	}
	expired := iss.Sign(iss.Claims("alice", "gatehouse", map[string]any{"exp": time.Now().Add(-time.Minute).Unix()}))
	wrongAud := iss.Sign(iss.Claims("alice", "someone-else", nil))
	for tok, want := range map[string]string{expired: "expired", wrongAud: "audience", idptest.Unsigned(iss.Claims("alice", "gatehouse", nil)): "algorithm"} {
		res := post(t, g.url, "Bearer "+tok, addTodoCall)
		h := res.Header.Get("WWW-Authenticate")
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(h, `error="invalid_token"`) || !strings.Contains(h, want) {
			t.Errorf("status %d, WWW-Authenticate %q; want 401 mentioning %q", res.StatusCode, h, want)
		}
		if strings.Contains(h, tok) {
			t.Error("challenge echoes the token")
		}
	}
}
