package mcp_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// downVerifier is an identity provider that cannot be reached.
type downVerifier struct{}

func (downVerifier) Verify(context.Context, string) (*identity.Principal, error) {
	return nil, identity.ErrUnavailable
}

// send makes one request and returns its status and headers.
func send(t *testing.T, method, url string, h map[string]string, body string) (int, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range h {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, res.Header
}

// mcpHeaders are the headers of an MCP request from origin with token.
func mcpHeaders(origin, token string) map[string]string {
	h := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-11-25"}
	if origin != "" {
		h["Origin"] = origin
	}
	if token != "" {
		h["Authorization"] = "Bearer " + token
	}
	return h
}

func hasAll(t *testing.T, what, list string, want ...string) {
	t.Helper()
	got := strings.Split(strings.ToLower(strings.ReplaceAll(list, " ", "")), ",")
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == strings.ToLower(w)
		}
		if !found {
			t.Errorf("%s %q lacks %s", what, list, w)
		}
	}
}

// TestCORSOnMCP: an allowed origin's preflight is answered before
// authentication, and every answer to it carries its CORS headers; any
// other web origin is refused before authentication, so it costs the
// credential's holder (and the client's address) no rate limit.
func TestCORSOnMCP(t *testing.T) {
	const app, evil = "http://localhost:6274", "http://localhost:6666"
	g := newGatehouse(t,
		withLimits(tenancy.Limits{Principal: tenancy.Rate{PerMinute: 1, Burst: 2}, AuthFailure: tenancy.Rate{PerMinute: 1, Burst: 2}}),
		func(su *setup) {
			su.origins = []string{"HTTP://LocalHost:6274/"} // compared canonically
			su.resolver.Prefixes = append(su.resolver.Prefixes, identity.PrefixRoute{Prefix: "down_", Verifier: downVerifier{}})
		})

	// Preflights need no credential and are never rate-limited.
	for range 5 {
		status, h := send(t, http.MethodOptions, g.url, map[string]string{"Origin": app, "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "authorization,content-type,mcp-protocol-version,mcp-session-id,last-event-id"}, "")
		if status != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != app {
			t.Fatalf("preflight: %d %v", status, h)
		}
		hasAll(t, "Allow-Methods", h.Get("Access-Control-Allow-Methods"), "GET", "POST", "DELETE")
		hasAll(t, "Allow-Headers", h.Get("Access-Control-Allow-Headers"), "Authorization", "Content-Type", "Mcp-Protocol-Version", "Mcp-Session-Id", "Last-Event-ID")
		hasAll(t, "Vary", strings.Join(h.Values("Vary"), ","), "Origin")
	}
	if status, h := send(t, http.MethodOptions, g.url, map[string]string{"Origin": evil, "Access-Control-Request-Method": "POST"}, ""); h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %d %v", status, h)
	}

	limited := g.key(t, "acme.com", tenancy.Developer)
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"allowed", g.key(t, "acme.com", tenancy.Developer), 200},
		{"no credential", "", 401},
		{"wrong credential", "gk_nope", 401},
		{"no mcp:read", g.key(t, "acme.com", tenancy.Developer, "mcp:write"), 403},
		{"within the limit", limited, 200},
		{"within the limit again", limited, 200},
		{"over the limit", limited, 429},
		{"provider down", "down_token", 503},
	} {
		status, h := send(t, http.MethodPost, g.url, mcpHeaders(app, tc.token), whoamiCall)
		if status != tc.want || h.Get("Access-Control-Allow-Origin") != app {
			t.Errorf("%s: %d ACAO %q, want %d with %s", tc.name, status, h.Get("Access-Control-Allow-Origin"), tc.want, app)
		}
		hasAll(t, tc.name+": Vary", strings.Join(h.Values("Vary"), ","), "Origin")
		hasAll(t, tc.name+": Expose-Headers", h.Get("Access-Control-Expose-Headers"),
			"WWW-Authenticate", "Mcp-Session-Id", "Mcp-Protocol-Version", "Retry-After", "RateLimit", "RateLimit-Policy")
	}

	// Another origin, with the victim's good key or with guesses: refused
	// before authentication, without CORS headers, charging nothing.
	victim := g.key(t, "acme.com", tenancy.Developer)
	for _, origin := range []string{evil, "null", "http://localhost", "https://localhost:6274", "http://127.0.0.1:6274"} {
		for _, tok := range []string{victim, "gk_guess"} {
			status, h := send(t, http.MethodPost, g.url, mcpHeaders(origin, tok), whoamiCall)
			if status != http.StatusForbidden || h.Get("Access-Control-Allow-Origin") != "" || h.Get("WWW-Authenticate") != "" {
				t.Errorf("from %s: %d %v, want 403 without CORS or challenge", origin, status, h)
			}
		}
	}
	if status, _ := send(t, http.MethodPost, g.url, mcpHeaders("", victim), whoamiCall); status != 200 {
		t.Errorf("the victim after another origin's calls with their key: %d, want 200 (nothing charged)", status)
	}
	if status, _ := send(t, http.MethodPost, g.url, mcpHeaders("", "gk_guess"), whoamiCall); status != 401 {
		t.Errorf("a wrong key after another origin's guesses: %d, want 401 (no failures charged)", status)
	}
	// Gatehouse's own origin needs no CORS.
	if status, h := send(t, http.MethodPost, g.url, mcpHeaders(g.ts.URL, g.key(t, "acme.com", tenancy.Viewer)), whoamiCall); status != 200 || h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("same origin: %d %v", status, h)
	}
}

// TestCORSOnOAuthEndpoints: metadata documents are readable from any
// origin and their preflight allows Mcp-Protocol-Version; registration,
// token and revocation answer any origin; the person's browser steps
// answer no CORS.
func TestCORSOnOAuthEndpoints(t *testing.T) {
	const origin = "https://webclient.example"
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	for _, p := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-authorization-server", "/oauth/jwks"} {
		status, h := send(t, http.MethodGet, g.ts.URL+p, map[string]string{"Origin": origin, "Mcp-Protocol-Version": "2025-11-25"}, "")
		if status != 200 || h.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("GET %s: %d ACAO %q", p, status, h.Get("Access-Control-Allow-Origin"))
		}
		status, h = send(t, http.MethodOptions, g.ts.URL+p, map[string]string{"Origin": origin, "Access-Control-Request-Method": "GET",
			"Access-Control-Request-Headers": "mcp-protocol-version"}, "")
		if status != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("preflight %s: %d %v", p, status, h)
		}
		hasAll(t, p+" Allow-Headers", h.Get("Access-Control-Allow-Headers"), "Mcp-Protocol-Version")
	}
	for _, p := range []string{"/oauth/register", "/oauth/token", "/oauth/revoke"} {
		status, h := send(t, http.MethodOptions, g.ts.URL+p, map[string]string{"Origin": origin, "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "content-type,authorization"}, "")
		if status != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("preflight %s: %d %v", p, status, h)
		}
		hasAll(t, p+" Allow-Methods", h.Get("Access-Control-Allow-Methods"), "POST")
		hasAll(t, p+" Allow-Headers", h.Get("Access-Control-Allow-Headers"), "Content-Type", "Authorization")
		// Errors are readable too.
		status, h = send(t, http.MethodPost, g.ts.URL+p, map[string]string{"Origin": origin, "Content-Type": "application/x-www-form-urlencoded"}, "x=1")
		if status < 400 || h.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("POST %s: %d ACAO %q", p, status, h.Get("Access-Control-Allow-Origin"))
		}
	}
	c := g.register(t, loopbackRedirect)
	for _, u := range []string{c.authURL(nil), g.ts.URL + "/oauth/login/corp?request=x", g.ts.URL + "/oauth/callback/corp?state=x", g.ts.URL + "/oauth/consent"} {
		for _, m := range []string{http.MethodGet, http.MethodOptions} {
			_, h := send(t, m, u, map[string]string{"Origin": origin, "Access-Control-Request-Method": "GET"}, "")
			if h.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("%s %s answers CORS: %v", m, u, h)
			}
		}
	}
}
