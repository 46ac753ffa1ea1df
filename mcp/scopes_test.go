package mcp_test

import (
	"net/url"
	"testing"
)

// TestScopeNegotiation: scope tokens Gatehouse does not offer never break a
// sign-in (RFC 6749 §3.3): the Gatehouse scopes asked for are granted and
// named in the token response; only a request left with none is refused.
func TestScopeNegotiation(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	c := g.register(t, loopbackRedirect)
	b := newBrowser(t, g.ts.URL)
	for _, tc := range []struct{ asked, granted string }{
		{"mcp:read mcp:write offline_access", "mcp:read mcp:write"}, // Claude Code
		{"openid profile email mcp:read", "mcp:read"},               // generic OAuth clients
		{"offline_access mcp:write mcp:read mcp:read", "mcp:read mcp:write"},
		{"mcp:admin  mcp:read\tmcp:write", "mcp:read mcp:write mcp:admin"},
		{"MCP:READ mcp:read", "mcp:read"}, // scope tokens are case-sensitive
		{"urn:example:other mcp:write mcp:read", "mcp:read mcp:write"},
		{"", "mcp:read mcp:write"}, // none asked: the default
	} {
		_, tr := c.signInFor(b, tc.asked)
		if tr.status != 200 || tr.Scope != tc.granted || tr.AccessToken == "" {
			t.Errorf("asked %q: %d granted %q (%s), want %q", tc.asked, tr.status, tr.Scope, tr.Error, tc.granted)
			continue
		}
		if status, _ := g.mcpStatus(t, tr.AccessToken); status != 200 {
			t.Errorf("asked %q: the token is refused: %d", tc.asked, status)
		}
	}
	for _, asked := range []string{"offline_access", "openid profile email", "mcp:READ", "mcp:root"} {
		p := b.visit(c.authURL(func(q url.Values) { q.Set("scope", asked) }), "http://127.0.0.1:40123/")
		u, _ := url.Parse(p.location)
		if u == nil || u.Query().Get("error") != "invalid_scope" || u.Query().Get("state") != "st-123" {
			t.Errorf("asked %q: %q, want invalid_scope back at the client", asked, p.location)
		}
	}
	// A refresh naming offline_access (or openid) keeps to the grant (the
	// refresh token keeps the scope first granted, RFC 6749 §6).
	_, tr := c.signInFor(b, "mcp:read mcp:write offline_access")
	for _, tc := range []struct{ asked, granted string }{
		{"mcp:read offline_access", "mcp:read"},
		{"offline_access", "mcp:read mcp:write"},
		{"openid mcp:write", "mcp:write"},
	} {
		tr = c.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "scope": {tc.asked}})
		if tr.Scope != tc.granted || tr.AccessToken == "" {
			t.Errorf("refresh asking %q: %+v, want %q", tc.asked, tr, tc.granted)
		}
	}
}
