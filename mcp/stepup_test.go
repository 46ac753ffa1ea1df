package mcp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// signInFor runs a whole sign-in asking for scope and returns the consent
// page's text ("" when none was asked) and the tokens.
func (c *oauthClient) signInFor(b *browser, scope string) (consent string, tr tokenResponse) {
	c.t.Helper()
	p := b.visit(c.authURL(func(q url.Values) { q.Set("scope", scope) }), c.redirect)
	m := loginLink.FindStringSubmatch(p.body)
	if m == nil {
		c.t.Fatalf("no sign-in page for scope %q: %d %q", scope, p.status, p.location)
	}
	p = b.visit(htmlUnescape(m[1]), c.redirect)
	if p.location == "" {
		if !strings.Contains(p.body, `action="/oauth/consent"`) {
			c.t.Fatalf("scope %q: neither consent nor a return to the client: %d\n%s", scope, p.status, p.body)
		}
		consent = p.body
		form := hidden(p.body)
		form.Set("decision", "allow")
		p = b.post("/oauth/consent", form)
	}
	code, _, _ := codeFrom(c.t, p)
	return consent, c.exchange(code, nil)
}

// mcpCall posts one JSON-RPC request with token and returns the response.
func (g *gatehouse) mcpCall(t *testing.T, token, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, g.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	return res, readBody(t, res)
}

func toolCall(name string) string {
	return `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"` + name + `","arguments":{}}}`
}

// TestStepUpChallenge: a token from an OAuth sign-in that lacks a scope the
// person's role allows gets HTTP 403 insufficient_scope naming the scopes
// held plus the one needed; a role shortfall, and any shortfall of a
// credential that cannot sign in again, stays a readable tool result.
func TestStepUpChallenge(t *testing.T) {
	sso := newCorpSSO(t)
	g := newGatehouse(t, withSignIn(sso.up))
	c := g.register(t, loopbackRedirect)
	_, admin := c.signInFor(newBrowser(t, g.ts.URL), "mcp:read mcp:write") // alice, acme.com's first member: admin
	_, adminRead := c.signInFor(newBrowser(t, g.ts.URL), "mcp:read")
	_, adminOnly := c.signInFor(newBrowser(t, g.ts.URL), "mcp:admin")
	sso.login.SignInAs("bob-2", map[string]any{"email": "bob@acme.com", "email_verified": true})
	_, dev := c.signInFor(newBrowser(t, g.ts.URL), "mcp:read")
	if admin.Scope != "mcp:read mcp:write" || adminRead.Scope != "mcp:read" || adminOnly.Scope != "mcp:admin" || dev.Scope != "mcp:read" {
		t.Fatalf("granted scopes: %q %q %q %q", admin.Scope, adminRead.Scope, adminOnly.Scope, dev.Scope)
	}
	tenant := mustTenant(t, g, "acme.com")
	devToken, err := g.as.MintDeveloperToken("ci", tenant, "admin", "mcp:read mcp:write", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	metadata := `resource_metadata="` + g.ts.URL + `/.well-known/oauth-protected-resource/mcp"`

	for _, tc := range []struct {
		name, token, tool string
		wantScope         string // the challenge's scope; "" means no challenge: a tool result
		wantText          string // in the tool result, or in the challenge
	}{
		{"admin with read write calls an admin tool", admin.AccessToken, "list_members", "mcp:read mcp:write mcp:admin", "needs the scope mcp:admin"},
		{"admin with read write reads the audit log", admin.AccessToken, "read_audit_log", "mcp:read mcp:write mcp:admin", "read_audit_log"},
		{"admin with read writes", adminRead.AccessToken, "add_todo", "mcp:read mcp:write", "needs the scope mcp:write"},
		{"admin with read calls an admin tool", adminRead.AccessToken, "list_members", "mcp:read mcp:admin", "mcp:admin"},
		{"admin with read write writes", admin.AccessToken, "add_todo", "", "title is required"},
		{"developer with read calls an admin tool: role", dev.AccessToken, "list_members", "", "role admin or higher (your role is developer)"},
		{"developer with read writes", dev.AccessToken, "add_todo", "mcp:read mcp:write", "mcp:write"},
		{"admin API key with read write", g.key(t, "acme.com", tenancy.Admin, "mcp:read", "mcp:write"), "list_members", "", "scope mcp:admin (your credential has mcp:read mcp:write)"},
		{"admin developer token with read write", devToken, "list_members", "", "scope mcp:admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := g.mcpCall(t, tc.token, toolCall(tc.tool))
			challenge := res.Header.Get("WWW-Authenticate")
			if tc.wantScope == "" {
				if res.StatusCode != http.StatusOK || challenge != "" || !strings.Contains(body, tc.wantText) {
					t.Errorf("%d %q, want 200 with a tool result saying %q:\n%s", res.StatusCode, challenge, tc.wantText, body)
				}
				return
			}
			if res.StatusCode != http.StatusForbidden || !strings.HasPrefix(challenge, "Bearer ") ||
				!strings.Contains(challenge, `error="insufficient_scope"`) || !strings.Contains(challenge, `scope="`+tc.wantScope+`"`) ||
				!strings.Contains(challenge, metadata) || !strings.Contains(challenge, tc.wantText) {
				t.Fatalf("%d %q, want 403 insufficient_scope for %q", res.StatusCode, challenge, tc.wantScope)
			}
			var rpc struct {
				ID    int `json:"id"`
				Error struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &rpc); err != nil || rpc.ID != 7 || rpc.Error.Code == 0 || !strings.Contains(rpc.Error.Message, tc.tool) {
				t.Errorf("body %s: %v", body, err)
			}
		})
	}
	// A token without mcp:read is challenged on any request, for mcp:read
	// next to what it holds.
	res, _ := g.mcpCall(t, adminOnly.AccessToken, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	if h := res.Header.Get("WWW-Authenticate"); res.StatusCode != 403 || !strings.Contains(h, `scope="mcp:read mcp:admin"`) {
		t.Errorf("token without mcp:read: %d %q", res.StatusCode, h)
	}
	// Each challenge is audited as a denied call.
	g.srv.FlushAudit(context.Background())
	if n := strings.Count(g.audit.String(), "step-up challenge sent"); n != 5 {
		t.Errorf("%d step-up denials audited, want 5:\n%s", n, g.audit.String())
	}
	// The 401 challenge keeps naming the minimal scopes.
	if status, h := g.mcpStatus(t, ""); status != 401 || !strings.Contains(h, `scope="mcp:read mcp:write"`) {
		t.Errorf("401: %d %q", status, h)
	}
}

// TestStepUpToolsList: a signed-in person's client sees every tool their
// role allows, so it can discover the ones it must step up for; a
// credential that cannot re-authorize sees only what it can call.
func TestStepUpToolsList(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	c := g.register(t, loopbackRedirect)
	_, admin := c.signInFor(newBrowser(t, g.ts.URL), "mcp:read")
	ctx := context.Background()
	names := func(token string) []string {
		list, err := g.connect(t, token, "").ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, tl := range list.Tools {
			out = append(out, tl.Name)
		}
		return out
	}
	signedIn := names(admin.AccessToken)
	key := names(g.key(t, "acme.com", tenancy.Admin, "mcp:read"))
	for name, rule := range mcp.ToolNames() {
		if name == "query" && !slices.Contains(signedIn, name) {
			continue // off where the database cannot confine it
		}
		if !slices.Contains(signedIn, name) {
			t.Errorf("a signed-in admin (mcp:read) does not see %s", name)
		}
		if want := rule.Scope == "mcp:read"; slices.Contains(key, name) != want {
			t.Errorf("an admin API key with mcp:read sees %s: %v, want %v", name, !want, want)
		}
	}
}

// TestConsentFollowsScopes: consent lists exactly the scopes asked that the
// person's role can use, is asked again when a sign-in widens them, and not
// when it narrows them; a role that can use none of them is refused.
func TestConsentFollowsScopes(t *testing.T) {
	sso := newCorpSSO(t)
	policy := tenancy.DefaultPolicy()
	policy.DefaultRole = tenancy.Viewer
	g := newGatehouse(t, withSignIn(sso.up), func(su *setup) { su.policy = policy })
	c := g.register(t, loopbackRedirect)
	b := newBrowser(t, g.ts.URL) // alice's browser: she is the admin
	consent, tr := c.signInFor(b, "mcp:read mcp:write")
	if !strings.Contains(consent, "(mcp:read)") || !strings.Contains(consent, "(mcp:write)") || strings.Contains(consent, "mcp:admin") {
		t.Errorf("first consent does not list exactly mcp:read mcp:write:\n%s", consent)
	}
	if consent, tr = c.signInFor(b, "mcp:read"); consent != "" || tr.Scope != "mcp:read" {
		t.Errorf("narrower sign-in asked for consent (%v) or granted %q", consent != "", tr.Scope)
	}
	consent, tr = c.signInFor(b, "mcp:read mcp:write mcp:admin")
	if !strings.Contains(consent, "(mcp:admin)") || tr.Scope != "mcp:read mcp:write mcp:admin" {
		t.Errorf("widening sign-in: consent shown %v, granted %q", consent != "", tr.Scope)
	}
	if consent, _ = c.signInFor(b, "mcp:admin mcp:read"); consent != "" {
		t.Error("asked again for scopes already consented to")
	}
	// Consents add up: a client consented to for read admin, then for
	// read write, is asked nothing again for either, or for write admin.
	other := g.register(t, loopbackRedirect)
	for i, scope := range []string{"mcp:read mcp:admin", "mcp:read mcp:write", "mcp:read mcp:admin", "mcp:write mcp:admin"} {
		consent, _ := other.signInFor(b, scope)
		if asked := consent != ""; asked != (i < 2) {
			t.Errorf("sign-in %d for %q: consent asked %v", i, scope, asked)
		}
	}

	// Bob joins as a viewer: asking for everything, he is shown (and
	// granted) what a viewer can use.
	sso.login.SignInAs("bob-2", map[string]any{"email": "bob@acme.com", "email_verified": true})
	bob := newBrowser(t, g.ts.URL)
	consent, tr = c.signInFor(bob, "mcp:read mcp:write mcp:admin")
	if !strings.Contains(consent, "viewer") || !strings.Contains(consent, "(mcp:read)") || strings.Contains(consent, "mcp:write") ||
		strings.Contains(consent, "mcp:admin") || tr.Scope != "mcp:read" {
		t.Errorf("viewer asking for every scope: granted %q, consent:\n%s", tr.Scope, consent)
	}
	// Asking only for what his role cannot use is refused at the client.
	p := bob.signIn(c.authURL(func(q url.Values) { q.Set("scope", "mcp:admin") }), "http://127.0.0.1:40123/")
	if u, _ := url.Parse(p.location); u == nil || u.Query().Get("error") != "invalid_scope" || !strings.Contains(u.Query().Get("error_description"), "viewer") {
		t.Errorf("viewer asking only for mcp:admin: %q", p.location)
	}
}

// TestStepUpWithGoSDKClient: the go-sdk client signs an admin in with the
// challenge's default scopes, calls list_members, meets the 403, signs in
// again for mcp:admin (the person consents again), and the call succeeds.
func TestStepUpWithGoSDKClient(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	b := newBrowser(t, g.ts.URL)
	const redirect = "http://127.0.0.1:33419/callback"
	var mu sync.Mutex
	var asked []string
	handler, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			RedirectURIs: []string{redirect}, ClientName: "go-sdk step-up client", TokenEndpointAuthMethod: "none",
			GrantTypes: []string{"authorization_code", "refresh_token"},
		}},
		RedirectURL: redirect,
		AuthorizationCodeFetcher: func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
			u, _ := url.Parse(args.URL)
			mu.Lock()
			asked = append(asked, u.Query().Get("scope"))
			mu.Unlock()
			code, state, iss := codeFrom(t, b.signIn(args.URL, redirect))
			return &auth.AuthorizationResult{Code: code, State: state, Iss: iss}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "gatehouse-step-up-test", Version: "1"}, nil).
		Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: g.url, OAuthHandler: handler}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	list, err := cs.ListTools(context.Background(), nil)
	if err != nil || !slices.ContainsFunc(list.Tools, func(tl *sdk.Tool) bool { return tl.Name == "list_members" }) {
		t.Fatalf("tools/list after sign-in does not show list_members (%v)", err)
	}
	var members listMembers
	if res := call(t, cs, "list_members", nil, &members); res.IsError || len(members.Members) != 1 {
		t.Fatalf("list_members after step-up: %s %+v", text(res), members)
	}
	sorted := func(scope string) string { f := strings.Fields(scope); slices.Sort(f); return strings.Join(f, " ") }
	if len(asked) != 2 || sorted(asked[0]) != "mcp:read mcp:write" || sorted(asked[1]) != "mcp:admin mcp:read mcp:write" {
		t.Errorf("scopes asked: %q, want the challenge's then the step-up's", asked)
	}
}
