package mcp_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

const loopbackRedirect = "http://127.0.0.1:40123/callback"

func getJSON(t *testing.T, u string, h http.Header) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for k, v := range h {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var doc map[string]any
	_ = json.NewDecoder(res.Body).Decode(&doc)
	return res.StatusCode, res.Header, doc
}

func TestOAuthMetadata(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	_, _, prm := getJSON(t, g.ts.URL+"/.well-known/oauth-protected-resource/mcp", nil)
	if as, _ := prm["authorization_servers"].([]any); len(as) != 1 || as[0] != g.ts.URL {
		t.Errorf("the protected resource metadata names authorization servers %v, want [%s]", prm["authorization_servers"], g.ts.URL)
	}
	for _, p := range []string{"/.well-known/oauth-authorization-server"} {
		status, h, md := getJSON(t, g.ts.URL+p, http.Header{"Origin": {"http://localhost:6274"}})
		if status != 200 || md["issuer"] != g.ts.URL || h.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("%s: %d issuer %v CORS %q", p, status, md["issuer"], h.Get("Access-Control-Allow-Origin"))
		}
		want := map[string]string{
			"response_types_supported":                       `["code"]`,
			"code_challenge_methods_supported":               `["S256"]`,
			"grant_types_supported":                          `["authorization_code","refresh_token"]`,
			"token_endpoint_auth_methods_supported":          `["none","client_secret_basic","client_secret_post"]`,
			"client_id_metadata_document_supported":          `true`,
			"authorization_response_iss_parameter_supported": `true`,
			"registration_endpoint":                          fmt.Sprintf("%q", g.ts.URL+"/oauth/register"),
			"scopes_supported":                               `["mcp:read","mcp:write","mcp:admin"]`,
		}
		for k, v := range want {
			if b, _ := json.Marshal(md[k]); string(b) != v {
				t.Errorf("%s: %s = %s, want %s", p, k, b, v)
			}
		}
	}
	// A browser-based client (MCP Inspector) may call the token endpoint
	// from its own origin.
	req, _ := http.NewRequest(http.MethodOptions, g.ts.URL+"/oauth/token", nil)
	req.Header.Set("Origin", "http://localhost:6274")
	req.Header.Set("Access-Control-Request-Method", "POST")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent || !strings.Contains(res.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight of /oauth/token: %d %v", res.StatusCode, res.Header)
	}
	// Every 401 says where to start.
	if status, challenge := g.mcpStatus(t, ""); status != 401 || !strings.Contains(challenge, `resource_metadata="`+g.ts.URL+`/.well-known/oauth-protected-resource/mcp"`) {
		t.Errorf("bare request: %d %q", status, challenge)
	}
	// JWKS publishes the signing key (public part only).
	_, _, jwks := getJSON(t, g.ts.URL+"/oauth/jwks", nil)
	keys, _ := jwks["keys"].([]any)
	if len(keys) != 1 {
		t.Fatalf("jwks: %v", jwks)
	}
	if k := keys[0].(map[string]any); k["kty"] != "EC" || k["alg"] != "ES256" || k["d"] != nil {
		t.Errorf("published key: %v", k)
	}
}

func TestOAuthWithoutSignInIsNotAdvertised(t *testing.T) {
	g := newGatehouse(t, func(su *setup) { su.oauth = true }) // keys, but no upstream
	_, _, prm := getJSON(t, g.ts.URL+"/.well-known/oauth-protected-resource/mcp", nil)
	if as, _ := prm["authorization_servers"].([]any); len(as) != 0 {
		t.Errorf("authorization servers %v advertised with no way to sign in", as)
	}
	if status, _, _ := getJSON(t, g.ts.URL+"/.well-known/oauth-authorization-server", nil); status != http.StatusNotFound {
		t.Errorf("authorization server metadata: %d, want 404", status)
	}
	// Developer tokens still work.
	tok, err := g.as.MintDeveloperToken("script", mustTenant(t, g, "dev.example"), "developer", "mcp:read mcp:write", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if status, _ := g.mcpStatus(t, tok); status != http.StatusOK {
		t.Errorf("developer token: %d", status)
	}
}

func mustTenant(t *testing.T, g *gatehouse, key string) string {
	tn, _, err := g.db.EnsureTenant(context.Background(), key, tenancy.Organization)
	if err != nil {
		t.Fatal(err)
	}
	return tn.ID
}

// TestAuthorizeRules: what /authorize refuses, and where the refusal goes.
// Until the client and its redirect URI are known good, the person sees
// the error; after, it goes back to the client with state and iss.
func TestAuthorizeRules(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	c := g.register(t, loopbackRedirect)
	b := newBrowser(t, g.ts.URL)
	shown := func(name string, mod func(url.Values), wantText string) {
		t.Helper()
		p := b.visit(c.authURL(mod), "http://never/")
		if p.location != "" || p.status != http.StatusBadRequest || !strings.Contains(p.body, wantText) {
			t.Errorf("%s: status %d location %q, want a 400 page saying %q:\n%s", name, p.status, p.location, wantText, p.body)
		}
	}
	shown("unknown client", func(q url.Values) { q.Set("client_id", "gh_nobody") }, "not registered")
	shown("unregistered redirect", func(q url.Values) { q.Set("redirect_uri", "https://evil.example/cb") }, "did not register")
	shown("other path on loopback", func(q url.Values) { q.Set("redirect_uri", "http://127.0.0.1:40123/other") }, "did not register")
	shown("https in place of loopback http", func(q url.Values) { q.Set("redirect_uri", "https://127.0.0.1:40123/callback") }, "did not register")

	back := func(name string, mod func(url.Values), wantErr string) {
		t.Helper()
		p := b.visit(c.authURL(mod), "http://127.0.0.1:40123/")
		u, _ := url.Parse(p.location)
		q := u.Query()
		if q.Get("error") != wantErr || q.Get("state") != "st-123" || q.Get("iss") != g.ts.URL {
			t.Errorf("%s: redirect %q, want error=%s with state and iss", name, p.location, wantErr)
		}
	}
	back("no PKCE", func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") }, "invalid_request")
	back("plain PKCE", func(q url.Values) { q.Set("code_challenge_method", "plain") }, "invalid_request")
	back("implicit flow", func(q url.Values) { q.Set("response_type", "token") }, "unsupported_response_type")
	back("another resource", func(q url.Values) { q.Set("resource", "https://other.example/mcp") }, "invalid_target")
	back("no Gatehouse scope", func(q url.Values) { q.Set("scope", "openid email") }, "invalid_scope")

	// RFC 8252 §7.3: a loopback redirect may use any port.
	p := b.signIn(c.authURL(func(q url.Values) { q.Set("redirect_uri", "http://127.0.0.1:51999/callback") }), "http://127.0.0.1:51999/")
	if code, _, _ := codeFrom(t, p); code == "" {
		t.Error("no code for a loopback redirect on another port")
	}
}

func TestRegistrationRules(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up), withLimits(tenancy.Limits{Registration: tenancy.Rate{PerMinute: 1.0 / 60, Burst: 3}}))
	register := func(body string) (int, map[string]any, http.Header) {
		res, err := http.Post(g.ts.URL+"/oauth/register", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out, res.Header
	}
	for _, bad := range []struct{ body, want string }{
		{`{"redirect_uris":["javascript:alert(1)"]}`, "invalid_redirect_uri"},
		{`{"redirect_uris":["http://evil.example/cb"]}`, "invalid_redirect_uri"},
		{`{"redirect_uris":["https://ok.example/cb#frag"]}`, "invalid_redirect_uri"},
	} {
		if status, out, _ := register(bad.body); status != 400 || out["error"] != bad.want {
			t.Errorf("%s: %d %v", bad.body, status, out)
		}
	}
	// The three refusals above were charged too: the burst of 3 is spent.
	status, out, h := register(`{"redirect_uris":["vscode://auth/callback"],"token_endpoint_auth_method":"none"}`)
	if status != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Fatalf("fourth registration: %d %v", status, out)
	}
}

func TestRegisteredConfidentialClient(t *testing.T) {
	sso := newCorpSSO(t)
	g := newGatehouse(t, withSignIn(sso.up))
	res, err := http.Post(g.ts.URL+"/oauth/register", "application/json",
		strings.NewReader(`{"redirect_uris":["https://app.example/cb"],"client_name":"Web app"}`))
	if err != nil {
		t.Fatal(err)
	}
	var reg struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
		Method       string `json:"token_endpoint_auth_method"`
	}
	_ = json.NewDecoder(res.Body).Decode(&reg)
	res.Body.Close()
	if reg.ClientSecret == "" || reg.Method != "client_secret_basic" {
		t.Fatalf("registration: %+v", reg)
	}
	c := &oauthClient{t: t, g: g, id: reg.ClientID, redirect: "https://app.example/cb", verifier: strings.Repeat("v", 43)}
	c.challenge = s256(c.verifier)
	code := c.code(newBrowser(t, g.ts.URL))
	// Without its secret, or with a wrong one, the client is refused.
	if tr := c.exchange(code, nil); tr.status != 401 || tr.Error != "invalid_client" {
		t.Errorf("no secret: %d %s", tr.status, tr.Error)
	}
	if tr := c.exchange(code, func(f url.Values) { f.Set("client_secret", "wrong") }); tr.status != 401 || tr.Error != "invalid_client" {
		t.Errorf("wrong secret: %d %s", tr.status, tr.Error)
	}
	if tr := c.exchange(code, func(f url.Values) { f.Set("client_secret", reg.ClientSecret) }); tr.status != 200 || tr.AccessToken == "" {
		t.Errorf("with its secret: %d %s %s", tr.status, tr.Error, tr.ErrorDescription)
	}
}

func s256(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestCodeExchangeRules: a code is bound to its client, redirect URI,
// PKCE verifier and resource, and is single use; a replayed code revokes
// the refresh tokens it gave.
func TestCodeExchangeRules(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	c := g.register(t, loopbackRedirect)
	other := g.register(t, loopbackRedirect)
	b := newBrowser(t, g.ts.URL)
	for _, tc := range []struct {
		name      string
		mod       func(url.Values)
		wantError string
	}{
		{"no verifier", func(f url.Values) { f.Del("code_verifier") }, "invalid_grant"},
		{"wrong verifier", func(f url.Values) { f.Set("code_verifier", strings.Repeat("x", 43)) }, "invalid_grant"},
		{"the challenge as verifier", func(f url.Values) { f.Set("code_verifier", c.challenge) }, "invalid_grant"},
		{"other redirect", func(f url.Values) { f.Set("redirect_uri", "http://127.0.0.1:40123/other") }, "invalid_grant"},
		{"no redirect", func(f url.Values) { f.Del("redirect_uri") }, "invalid_grant"},
		{"other resource", func(f url.Values) { f.Set("resource", "https://other.example/mcp") }, "invalid_target"},
		{"other client", func(f url.Values) { f.Set("client_id", other.id) }, "invalid_grant"},
		{"unknown client", func(f url.Values) { f.Set("client_id", "gh_unknown") }, "invalid_client"},
		{"made-up code", func(f url.Values) { f.Set("code", "not-a-code") }, "invalid_grant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := c.code(b)
			if tr := c.exchange(code, tc.mod); tr.Error != tc.wantError || tr.AccessToken != "" {
				t.Errorf("error %q (%s), want %s", tr.Error, tr.ErrorDescription, tc.wantError)
			}
			// A failed attempt used the code up: it cannot be retried.
			if tc.wantError != "invalid_client" && tc.name != "made-up code" {
				if tr := c.exchange(code, nil); tr.AccessToken != "" {
					t.Error("the code worked after a failed exchange")
				}
			}
		})
	}
	t.Run("replayed code", func(t *testing.T) {
		code := c.code(b)
		first := c.exchange(code, nil)
		if first.AccessToken == "" || first.RefreshToken == "" || first.ExpiresIn != 3600 || first.Scope != "mcp:read mcp:write" {
			t.Fatalf("first exchange: %+v", first)
		}
		if status, _ := g.mcpStatus(t, first.AccessToken); status != 200 {
			t.Fatalf("access token refused: %d", status)
		}
		if again := c.exchange(code, nil); again.Error != "invalid_grant" {
			t.Fatalf("replay: %+v", again)
		}
		if tr := c.refresh(first.RefreshToken); tr.Error != "invalid_grant" {
			t.Errorf("the replayed code's refresh token still works: %+v", tr)
		}
	})
}

// TestRefreshRotation: every refresh rotates the token; presenting a used
// one (a stolen copy) revokes the family, including the newest token.
func TestRefreshRotation(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	c := g.register(t, loopbackRedirect)
	b := newBrowser(t, g.ts.URL)
	first := c.exchange(c.code(b), nil)
	second := c.refresh(first.RefreshToken)
	if second.AccessToken == "" || second.RefreshToken == "" || second.RefreshToken == first.RefreshToken {
		t.Fatalf("refresh: %+v", second)
	}
	if status, _ := g.mcpStatus(t, second.AccessToken); status != 200 {
		t.Fatalf("refreshed access token: %d", status)
	}
	// Bad requests change nothing: the token still works after them.
	if tr := c.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {second.RefreshToken}, "scope": {"mcp:read mcp:admin"}}); tr.Error != "invalid_scope" {
		t.Errorf("widening: %+v", tr)
	}
	if tr := c.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {second.RefreshToken}, "resource": {"https://x.example/mcp"}}); tr.Error != "invalid_target" {
		t.Errorf("other resource: %+v", tr)
	}
	narrowed := c.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {second.RefreshToken}, "scope": {"mcp:read"}})
	if narrowed.Scope != "mcp:read" || narrowed.AccessToken == "" {
		t.Fatalf("narrowing: %+v", narrowed)
	}
	// The narrowed token reads but cannot write: a write is a step-up
	// challenge (see TestStepUpChallenge).
	cs := g.connect(t, narrowed.AccessToken, "")
	if res := call(t, cs, "list_todos", nil, nil); res.IsError {
		t.Errorf("a mcp:read token cannot read: %s", text(res))
	}
	if res, _ := g.mcpCall(t, narrowed.AccessToken, toolCall("add_todo")); res.StatusCode != http.StatusForbidden {
		t.Errorf("a mcp:read token writing: %d, want 403", res.StatusCode)
	}
	// An attacker replays the first refresh token: the family dies.
	if tr := c.refresh(first.RefreshToken); tr.Error != "invalid_grant" || !strings.Contains(tr.ErrorDescription, "already used") {
		t.Fatalf("replay: %+v", tr)
	}
	if tr := c.refresh(narrowed.RefreshToken); tr.Error != "invalid_grant" {
		t.Errorf("the newest token survived a replay: %+v", tr)
	}
	// A token presented by another client is refused and revokes its family.
	third := c.exchange(c.code(b), nil)
	other := g.register(t, loopbackRedirect)
	if tr := other.refresh(third.RefreshToken); tr.Error != "invalid_grant" {
		t.Errorf("another client's refresh: %+v", tr)
	}
	if tr := c.refresh(third.RefreshToken); tr.Error != "invalid_grant" {
		t.Errorf("the family survived another client presenting it: %+v", tr)
	}
	// Revocation (RFC 7009) of a refresh token ends its family.
	fourth := c.exchange(c.code(b), nil)
	res, err := http.PostForm(g.ts.URL+"/oauth/revoke", url.Values{"token": {fourth.RefreshToken}, "client_id": {c.id}})
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", err, res.StatusCode)
	}
	res.Body.Close()
	if tr := c.refresh(fourth.RefreshToken); tr.Error != "invalid_grant" {
		t.Errorf("revoked token refreshed: %+v", tr)
	}
}

// TestAccessTokenChecks: what /mcp refuses of tokens that look like ours.
func TestAccessTokenChecks(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	tenant := mustTenant(t, g, "acme.com")
	good, err := g.as.MintDeveloperToken("ci", tenant, "developer", "mcp:read mcp:write", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if status, _ := g.mcpStatus(t, good); status != 200 {
		t.Fatalf("a good token: %d", status)
	}
	refused := func(name, token, wantReason string) {
		t.Helper()
		status, challenge := g.mcpStatus(t, token)
		if status != 401 || !strings.Contains(challenge, `error="invalid_token"`) || !strings.Contains(challenge, wantReason) {
			t.Errorf("%s: %d %q, want 401 invalid_token saying %q", name, status, challenge, wantReason)
		}
	}
	// The same keys and issuer, another resource: a token for another of
	// our resources must not be accepted here.
	otherAS, err := authserver.New(authserver.Config{Issuer: g.ts.URL, Resource: g.ts.URL + "/other", Store: g.db, Keys: mustKeys(t, g)})
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, _ := otherAS.MintDeveloperToken("ci", tenant, "developer", "mcp:read", time.Hour)
	refused("other audience", elsewhere, "another resource")

	short, _ := g.as.MintDeveloperToken("ci", tenant, "developer", "mcp:read", time.Second)
	time.Sleep(1100 * time.Millisecond)
	refused("expired", short, "expired")

	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := strings.Replace(string(payload), `"gatehouse_role":"developer"`, `"gatehouse_role":"admin"`, 1)
	refused("claims changed", parts[0]+"."+base64.RawURLEncoding.EncodeToString([]byte(forged))+"."+parts[2], "signature")
	refused("alg none", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"x"}`))+"."+parts[1]+".", "")
	header, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h map[string]any
	_ = json.Unmarshal(header, &h)
	h["kid"] = "not-a-key-of-ours"
	hb, _ := json.Marshal(h)
	refused("unknown key", base64.RawURLEncoding.EncodeToString(hb)+"."+parts[1]+"."+parts[2], "")
}

func mustKeys(t *testing.T, g *gatehouse) *authserver.Keys {
	k, err := authserver.NewKeys(g.db, []byte("test signing secret, 32 bytes.."))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestConsent: consent is per person and client, cannot be forged from
// another page or browser, and is asked once.
func TestConsent(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	c := g.register(t, loopbackRedirect)
	b := newBrowser(t, g.ts.URL)
	p := b.visit(c.authURL(nil), loopbackRedirect)
	link := loginLink.FindStringSubmatch(p.body)
	consent := b.visit(htmlUnescape(link[1]), loopbackRedirect)
	for _, want := range []string{"hand-driven client", "alice@acme.com", "acme.com", "admin", "mcp:write", "http://127.0.0.1:40123"} {
		if !strings.Contains(consent.body, want) {
			t.Errorf("the consent page does not show %q", want)
		}
	}
	form := hidden(consent.body)
	// Another site makes the browser post a consent with a guessed token.
	forged := url.Values{"request": {form.Get("request")}, "csrf": {"guessed"}, "decision": {"allow"}}
	if r := b.post("/oauth/consent", forged); r.status != http.StatusForbidden || r.location != "" {
		t.Errorf("forged consent: %d %q", r.status, r.location)
	}
	// The right form, posted from another browser (no cookie).
	stranger := newBrowser(t, g.ts.URL)
	allow := url.Values{"request": {form.Get("request")}, "csrf": {form.Get("csrf")}, "decision": {"allow"}}
	if r := stranger.post("/oauth/consent", allow); r.status != http.StatusBadRequest || r.location != "" {
		t.Errorf("consent from another browser: %d %q", r.status, r.location)
	}
	// Deny goes back to the client as access_denied.
	deny := url.Values{"request": {form.Get("request")}, "csrf": {form.Get("csrf")}, "decision": {"deny"}}
	if r := b.post("/oauth/consent", deny); !strings.Contains(r.location, "error=access_denied") {
		t.Errorf("deny: %q", r.location)
	}
	// Allowed once, the next sign-in of this client goes straight back.
	c.code(b)
	p = b.visit(c.authURL(nil), loopbackRedirect)
	link = loginLink.FindStringSubmatch(p.body)
	if r := b.visit(htmlUnescape(link[1]), loopbackRedirect); !strings.Contains(r.location, "code=") {
		t.Errorf("asked for consent again: %d %q", r.status, r.location)
	}
}

// TestSignInRefusals: the tenancy rules decide at sign-in as they do per
// request, and a person removed later loses their refresh tokens.
func TestSignInRefusals(t *testing.T) {
	sso := newCorpSSO(t)
	g := newGatehouse(t, withSignIn(sso.up))
	c := g.register(t, loopbackRedirect)

	// The provider refuses the person (they pressed Cancel there).
	sso.login.Deny()
	p := newBrowser(t, g.ts.URL).signIn(c.authURL(nil), "http://127.0.0.1:40123/")
	if !strings.Contains(p.location, "error=access_denied") || !strings.Contains(p.location, "state=st-123") {
		t.Errorf("upstream denial: %q", p.location)
	}

	// Alice signs in first (and is acme.com's admin), then Bob, who gets
	// tokens; an admin removes him.
	sso.login.SignInAs("alice-1", map[string]any{"email": "alice@acme.com", "email_verified": true})
	c.code(newBrowser(t, g.ts.URL))
	sso.login.SignInAs("bob-2", map[string]any{"email": "bob@acme.com", "email_verified": true})
	bob := c.exchange(c.code(newBrowser(t, g.ts.URL)), nil)
	admin := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	var members listMembers
	call(t, admin, "list_members", nil, &members)
	var bobID string
	for _, m := range members.Members {
		if m.Email == "bob@acme.com" {
			bobID = m.ID
		}
	}
	if res := call(t, admin, "remove_member", map[string]any{"member_id": bobID}, nil); res.IsError {
		t.Fatalf("remove_member %q: %s", bobID, res.Content[0].(*sdk.TextContent).Text)
	}
	if status, _ := g.mcpStatus(t, bob.AccessToken); status != http.StatusForbidden {
		t.Errorf("removed member's access token: %d, want 403", status)
	}
	if tr := c.refresh(bob.RefreshToken); tr.Error != "invalid_grant" || !strings.Contains(tr.ErrorDescription, "removed you") {
		t.Errorf("removed member's refresh: %+v", tr)
	}
	// And signing in again is refused, with the reason, back at the client.
	p = newBrowser(t, g.ts.URL).signIn(c.authURL(nil), "http://127.0.0.1:40123/")
	u, _ := url.Parse(p.location)
	if u == nil || u.Query().Get("error") != "access_denied" || !strings.Contains(u.Query().Get("error_description"), "removed you") {
		t.Errorf("removed member signing in: %q", p.location)
	}
}

type listMembers struct {
	Members []struct {
		ID    string `json:"id"`
		Email string `json:"email"`
	} `json:"members"`
}

// TestClientMetadataDocuments: an https client_id is a document the client
// hosts; it must name itself and list the redirect URI, and it is never
// fetched from an internal address outside developer mode.
func TestClientMetadataDocuments(t *testing.T) {
	var doc string
	docs := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=0")
		_, _ = w.Write([]byte(doc))
	}))
	defer docs.Close()
	clientID := docs.URL + "/client.json"
	sso := newCorpSSO(t)
	dev := newGatehouse(t, withSignIn(sso.up), func(su *setup) {
		su.asConfig = func(c *authserver.Config) { c.HTTPClient = docs.Client() } // trusts the test CA
	})
	c := &oauthClient{t: t, g: dev, id: clientID, redirect: loopbackRedirect, verifier: strings.Repeat("w", 43)}
	c.challenge = s256(c.verifier)

	doc = fmt.Sprintf(`{"client_id":%q,"client_name":"Doc Client","redirect_uris":[%q],"token_endpoint_auth_method":"none"}`, clientID, loopbackRedirect)
	if tr := c.exchange(c.code(newBrowser(t, dev.ts.URL)), nil); tr.AccessToken == "" {
		t.Fatalf("metadata-document client: %+v", tr)
	}
	for _, bad := range []struct{ name, doc string }{
		{"names another client", fmt.Sprintf(`{"client_id":"https://evil.example/c.json","redirect_uris":[%q]}`, loopbackRedirect)},
		{"lists another redirect", fmt.Sprintf(`{"client_id":%q,"redirect_uris":["http://127.0.0.1:40123/elsewhere"]}`, clientID)},
		{"claims a secret", fmt.Sprintf(`{"client_id":%q,"redirect_uris":[%q],"token_endpoint_auth_method":"client_secret_basic"}`, clientID, loopbackRedirect)},
		{"is not JSON", `<html>`},
	} {
		doc = bad.doc
		time.Sleep(10 * time.Millisecond)
		forceRefetch(t, dev, clientID)
		p := newBrowser(t, dev.ts.URL).visit(c.authURL(nil), "http://127.0.0.1:40123/")
		if p.status != http.StatusBadRequest || p.location != "" {
			t.Errorf("document that %s: %d %q", bad.name, p.status, p.location)
		}
	}

	// Outside developer mode, with the real (SSRF-safe) client, a document
	// on a loopback address is never fetched.
	prod := newGatehouse(t, withSignIn(sso.up), func(su *setup) { su.asConfig = func(c *authserver.Config) { c.Dev = false } })
	pc := &oauthClient{t: t, g: prod, id: clientID, redirect: loopbackRedirect, challenge: c.challenge}
	p := newBrowser(t, prod.ts.URL).visit(pc.authURL(nil), "http://127.0.0.1:40123/")
	if p.status != http.StatusBadRequest || !strings.Contains(prod.logs.String(), "refusing to fetch from internal address") {
		t.Errorf("document on a loopback address in production: %d; log:\n%s", p.status, prod.logs.String())
	}
}

// forceRefetch expires a cached metadata document.
func forceRefetch(t *testing.T, g *gatehouse, clientID string) {
	if _, err := g.db.Pool().Exec(context.Background(), "UPDATE gatehouse.oauth_clients SET fetched_until = now() - interval '1 second' WHERE id = $1", clientID); err != nil {
		t.Fatal(err)
	}
}

// TestTokenBoundToItsTenant: a Gatehouse token names the tenant its holder
// consented in. If the rules now place the person elsewhere (here an
// operator maps acme.com to another tenant), the token is refused rather
// than used in a tenant the person never approved the client for.
func TestTokenBoundToItsTenant(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	c := g.register(t, loopbackRedirect)
	tr := c.exchange(c.code(newBrowser(t, g.ts.URL)), nil)
	if status, _ := g.mcpStatus(t, tr.AccessToken); status != 200 {
		t.Fatalf("token in its own tenant: %d", status)
	}
	// The same deployment (database, keys, public URL), restarted with an
	// alias that places acme.com people in acme-group.com.
	policy := tenancy.DefaultPolicy()
	policy.Aliases = map[string]string{"acme.com": "acme-group.com"}
	tenants := tenancy.NewService(g.db, tenancy.ServiceOptions{Policy: policy})
	defer tenants.Close()
	as, err := authserver.New(authserver.Config{Issuer: g.ts.URL, Store: g.db, Keys: mustKeys(t, g)})
	if err != nil {
		t.Fatal(err)
	}
	resolver := identity.NewResolver(identity.ResolverOptions{Issuers: map[string]identity.Verifier{g.ts.URL: as.Verifier()}})
	defer resolver.Close()
	restarted, err := mcp.New(mcp.Options{DB: g.db, Resolver: resolver, Tenancy: tenants, PublicURL: g.ts.URL, AuditKey: testAuditKey})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Authorization", "Bearer "+tr.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	rec := httptest.NewRecorder()
	restarted.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Header().Get("WWW-Authenticate"), "issued for tenant acme.com") {
		t.Errorf("token after the person moved tenant: %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
}
