package mcp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"

	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
	"github.com/gatehouse-mcp/gatehouse/identity/oidc"
	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// newAuthServer builds the authorization server the way `gatehouse serve`
// does, for the test server at publicURL.
func newAuthServer(t testing.TB, db *store.DB, tenants *tenancy.Service, limiter *tenancy.Limiter, log *slog.Logger, publicURL string, su *setup) *authserver.Server {
	t.Helper()
	keys, err := authserver.NewKeys(db, []byte("test signing secret, 32 bytes.."))
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := authserver.Config{Issuer: publicURL, Store: db, Keys: keys, Upstreams: su.upstreams, Place: mcp.Placer(tenants, nil),
		Dev: true, Logger: log}
	if limiter != nil {
		cfg.AllowRegistration = func(ctx context.Context, ip string) (bool, time.Duration) {
			d, _ := limiter.AllowRegistration(ctx, ip)
			return d.Allowed, d.RetryAfter
		}
	}
	if su.asConfig != nil {
		su.asConfig(&cfg)
	}
	as, err := authserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return as
}

// corpSSO is an upstream OIDC provider people sign in at (auto-login).
type corpSSO struct {
	iss   *idptest.Issuer
	login *idptest.Login
	up    *authserver.Upstream
}

func newCorpSSO(t testing.TB) *corpSSO {
	iss := idptest.NewIssuer(t, nil)
	login := iss.EnableLogin(t, "gatehouse-at-corp", "corp-secret", "")
	v, err := oidc.Config{Name: "corp", Issuer: iss.URL, Audiences: []string{"gatehouse-at-corp"}, AllowInsecure: true}.Open()
	if err != nil {
		t.Fatal(err)
	}
	login.SignInAs("alice-1", map[string]any{"email": "alice@acme.com", "email_verified": true, "name": "Alice"})
	return &corpSSO{iss: iss, login: login,
		up: authserver.OIDCUpstream("corp", "Corp SSO", "gatehouse-at-corp", "corp-secret", v.Endpoints, oauth2.AuthStyleAutoDetect, v)}
}

func withSignIn(ups ...*authserver.Upstream) func(*setup) {
	return func(su *setup) { su.oauth, su.upstreams = true, ups }
}

// browser is a person's browser: it keeps cookies, follows redirects until
// one leaves for the client's redirect URI, and clicks what it is told.
type browser struct {
	t      testing.TB
	client *http.Client
	base   string // Gatehouse's URL, for relative links
}

func newBrowser(t testing.TB, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, client: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// page is what the browser shows: a page, or a redirect it stopped at.
type page struct {
	status   int
	body     string
	location string
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	res, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return page{status: res.StatusCode, body: string(body), location: res.Header.Get("Location")}
}

// visit follows redirects from u until a page, or a redirect to stopAt.
func (b *browser) visit(u, stopAt string) page {
	b.t.Helper()
	for range 10 {
		if strings.HasPrefix(u, "/") {
			u = b.base + u
		}
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		p := b.do(req)
		if p.location == "" || strings.HasPrefix(p.location, stopAt) {
			return p
		}
		u = p.location
	}
	b.t.Fatal("too many redirects")
	return page{}
}

func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var (
	loginLink   = regexp.MustCompile(`href="(/oauth/login/[^"]+)"`)
	hiddenInput = regexp.MustCompile(`<input type="hidden" name="(\w+)" value="([^"]*)">`)
)

func hidden(body string) url.Values {
	v := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(body, -1) {
		v.Set(m[1], htmlUnescape(m[2]))
	}
	return v
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&amp;", "&", "&#43;", "+", "&#34;", `"`, "&#39;", "'", "&lt;", "<", "&gt;", ">").Replace(s)
}

// signIn runs the person's part of an authorization: the sign-in page,
// the provider (auto-login), consent; it returns the redirect to the
// client (with code or error), or the page the flow stopped at.
func (b *browser) signIn(authURL, redirectURI string) page {
	b.t.Helper()
	p := b.visit(authURL, redirectURI)
	if p.location != "" || p.status != http.StatusOK {
		return p
	}
	m := loginLink.FindStringSubmatch(p.body)
	if m == nil {
		b.t.Fatalf("no provider link on the sign-in page:\n%s", p.body)
	}
	p = b.visit(htmlUnescape(m[1]), redirectURI)
	if p.location != "" || p.status != http.StatusOK || !strings.Contains(p.body, `action="/oauth/consent"`) {
		return p
	}
	form := hidden(p.body)
	form.Set("decision", "allow")
	return b.post("/oauth/consent", form)
}

// codeFrom reads the authorization response a redirect carries.
func codeFrom(t testing.TB, p page) (code, state, iss string) {
	t.Helper()
	u, err := url.Parse(p.location)
	if p.location == "" || err != nil {
		t.Fatalf("the flow did not return to the client: status %d\n%s", p.status, p.body)
	}
	q := u.Query()
	if q.Get("error") != "" {
		t.Fatalf("the flow returned an error: %s: %s", q.Get("error"), q.Get("error_description"))
	}
	return q.Get("code"), q.Get("state"), q.Get("iss")
}

// TestSignInWithGoSDKClient: the go-sdk client, from a bare 401, discovers
// the authorization server, registers, has the person sign in at the
// upstream provider and consent, exchanges the code, and calls a tool as
// that person, in the tenant of their verified email domain.
func TestSignInWithGoSDKClient(t *testing.T) {
	sso := newCorpSSO(t)
	g := newGatehouse(t, withSignIn(sso.up))
	b := newBrowser(t, g.ts.URL)
	const redirect = "http://127.0.0.1:33418/callback"
	handler, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			RedirectURIs: []string{redirect}, ClientName: "go-sdk test client", TokenEndpointAuthMethod: "none",
			GrantTypes: []string{"authorization_code", "refresh_token"},
		}},
		RedirectURL: redirect,
		AuthorizationCodeFetcher: func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
			code, state, iss := codeFrom(t, b.signIn(args.URL, redirect))
			return &auth.AuthorizationResult{Code: code, State: state, Iss: iss}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	client := sdk.NewClient(&sdk.Implementation{Name: "gatehouse-oauth-test", Version: "1"}, nil)
	cs, err := client.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: g.url, OAuthHandler: handler}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	var who struct {
		Subject string `json:"subject"`
		Tenant  string `json:"tenant"`
		Role    string `json:"role"`
	}
	res := call(t, cs, "whoami", nil, &who)
	if res.IsError || who.Subject != "corp:alice-1" || who.Tenant != "acme.com" || who.Role != "admin" {
		t.Fatalf("whoami after sign-in: %+v (error %v)", who, res.IsError)
	}
	// The sign-in is the person's: a todo they add is in their tenant's schema.
	if res := call(t, cs, "add_todo", map[string]any{"title": "signed in through OAuth"}, nil); res.IsError {
		t.Fatalf("add_todo: %+v", res.Content)
	}
	if !strings.Contains(g.audit.String(), `"subject":"corp:alice-1"`) {
		t.Error("the audit stream does not name the signed-in person")
	}
}

// oauthClient drives the protocol by hand, for the cases a well-behaved
// client never produces.
type oauthClient struct {
	t           testing.TB
	g           *gatehouse
	id          string
	redirect    string
	verifier    string
	challenge   string
	lastRefresh string
}

func (g *gatehouse) register(t testing.TB, redirect string) *oauthClient {
	t.Helper()
	body := fmt.Sprintf(`{"redirect_uris":[%q],"client_name":"hand-driven client","token_endpoint_auth_method":"none"}`, redirect)
	res, err := http.Post(g.ts.URL+"/oauth/register", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		ClientID string `json:"client_id"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusCreated || out.ClientID == "" {
		t.Fatalf("register: %d %v", res.StatusCode, err)
	}
	v := oauth2.GenerateVerifier()
	return &oauthClient{t: t, g: g, id: out.ClientID, redirect: redirect, verifier: v, challenge: oauth2.S256ChallengeFromVerifier(v)}
}

func (c *oauthClient) authURL(mod func(url.Values)) string {
	q := url.Values{"response_type": {"code"}, "client_id": {c.id}, "redirect_uri": {c.redirect}, "state": {"st-123"},
		"code_challenge": {c.challenge}, "code_challenge_method": {"S256"}, "resource": {c.g.url}, "scope": {"mcp:read mcp:write"}}
	if mod != nil {
		mod(q)
	}
	return c.g.ts.URL + "/oauth/authorize?" + q.Encode()
}

// tokenResponse is the token endpoint's answer.
type tokenResponse struct {
	status           int
	AccessToken      string `json:"access_token"`
	RefreshToken     string `json:"refresh_token"`
	ExpiresIn        int    `json:"expires_in"`
	Scope            string `json:"scope"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

func (c *oauthClient) token(form url.Values) tokenResponse {
	c.t.Helper()
	if form.Get("client_id") == "" {
		form.Set("client_id", c.id)
	}
	res, err := http.PostForm(c.g.ts.URL+"/oauth/token", form)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	var tr tokenResponse
	_ = json.NewDecoder(res.Body).Decode(&tr)
	tr.status = res.StatusCode
	if tr.RefreshToken != "" {
		c.lastRefresh = tr.RefreshToken
	}
	return tr
}

func (c *oauthClient) exchange(code string, mod func(url.Values)) tokenResponse {
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.redirect},
		"code_verifier": {c.verifier}, "resource": {c.g.url}}
	if mod != nil {
		mod(form)
	}
	return c.token(form)
}

func (c *oauthClient) refresh(rt string) tokenResponse {
	return c.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
}

// code runs a whole sign-in and returns the authorization code.
func (c *oauthClient) code(b *browser) string {
	c.t.Helper()
	code, state, iss := codeFrom(c.t, b.signIn(c.authURL(nil), c.redirect))
	if state != "st-123" || iss != c.g.ts.URL {
		c.t.Fatalf("authorization response: state %q iss %q", state, iss)
	}
	return code
}

// mcpStatus sends tools/list with token and returns the status and the
// WWW-Authenticate challenge.
func (g *gatehouse) mcpStatus(t testing.TB, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, g.url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, res.Header.Get("WWW-Authenticate")
}
