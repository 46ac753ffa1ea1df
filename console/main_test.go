package console_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/gatehouse-mcp/gatehouse/console"
	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
	"github.com/gatehouse-mcp/gatehouse/identity/oidc"
	"github.com/gatehouse-mcp/gatehouse/internal/httpx"
	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func TestMain(m *testing.M) { storetest.Main(m) }

var testAuditKey = store.NewAuditKey([]byte("console test audit key, 32 bytes"))

// site is Gatehouse with its console, wired as `gatehouse serve` wires it,
// with one upstream OIDC provider ("corp") that signs in whoever the test
// names.
type site struct {
	t       testing.TB
	db      *store.DB
	srv     *mcp.Server
	ts      *httptest.Server
	login   *idptest.Login
	con     *console.Console
	tenants *tenancy.Service
}

type siteOpts struct {
	operators []string
	limits    *tenancy.Limits
	mod       func(*console.Options)
	alerts    *mcp.AlertOptions
	mcpMod    func(*mcp.Options)
}

func newSite(t testing.TB, o siteOpts) *site {
	t.Helper()
	db := storetest.MustOpenDB(t)
	log := storetest.Logger(t)
	iss := idptest.NewIssuer(t, nil)
	login := iss.EnableLogin(t, "gatehouse-at-corp", "corp-secret", "")
	v, err := oidc.Config{Name: "corp", Issuer: iss.URL, Audiences: []string{"gatehouse-at-corp"}, AllowInsecure: true}.Open()
	if err != nil {
		t.Fatal(err)
	}
	up := authserver.OIDCUpstream("corp", "Corp SSO", "gatehouse-at-corp", "corp-secret", v.Endpoints, oauth2.AuthStyleAutoDetect, v)
	tenants := tenancy.NewService(db, tenancy.ServiceOptions{Policy: tenancy.DefaultPolicy()})
	t.Cleanup(tenants.Close)
	ts := httptest.NewUnstartedServer(nil)
	ts.Start()
	t.Cleanup(ts.Close)
	keys, err := authserver.NewKeys(db, []byte("test signing secret, 32 bytes.."))
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	as, err := authserver.New(authserver.Config{Issuer: ts.URL, Store: db, Keys: keys, Upstreams: []*authserver.Upstream{up},
		Place: mcp.Placer(tenants, nil), Dev: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	resolver := identity.NewResolver(identity.ResolverOptions{
		Prefixes: []identity.PrefixRoute{{Prefix: apikey.Prefix, Verifier: apikey.NewVerifier(db, log)}},
		Issuers:  map[string]identity.Verifier{ts.URL: as.Verifier()},
	})
	t.Cleanup(resolver.Close)
	surface := httpx.New(httpx.Options{PublicURL: ts.URL, Logger: log})
	var limiter *tenancy.Limiter
	if o.limits != nil {
		limiter = tenancy.NewLimiter(db, *o.limits)
		t.Cleanup(limiter.Close)
	}
	mopts := mcp.Options{DB: db, Resolver: resolver, Tenancy: tenants, PublicURL: ts.URL, AuthServer: as, Limiter: limiter,
		Surface: surface, Logger: log, Version: "test", AuditKey: testAuditKey, Alerts: o.alerts}
	if o.mcpMod != nil {
		o.mcpMod(&mopts)
	}
	srv, err := mcp.New(mopts)
	if err != nil {
		t.Fatal(err)
	}
	opts := console.Options{PublicURL: ts.URL, DB: db, Tenancy: tenants, SignIn: as, Tools: srv,
		RoleScopes: func(r tenancy.Role) []string { return mcp.RoleScopes(r, nil) },
		Operators:  o.operators, Limiter: limiter,
		VerifyAudit: func(ctx context.Context, tn *tenancy.Tenant) (*store.AuditReport, error) {
			return db.VerifyAudit(ctx, tn, testAuditKey)
		},
		Logger: log}
	if o.mod != nil {
		o.mod(&opts)
	}
	con, err := console.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	con.Mount(surface)
	ts.Config.Handler = srv.Handler()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.FollowInvalidations(ctx)
	return &site{t: t, db: db, srv: srv, ts: ts, login: login, con: con, tenants: tenants}
}

// person is one person's browser: cookies kept, redirects followed by
// hand so the test sees where they lead.
type person struct {
	t      testing.TB
	s      *site
	client *http.Client
}

func (s *site) browser() *person {
	jar, _ := cookiejar.New(nil)
	return &person{t: s.t, s: s, client: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// page is what a browser got.
type page struct {
	status   int
	body     string
	location string
	header   http.Header
}

func (b *person) do(req *http.Request) page {
	b.t.Helper()
	res, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return page{status: res.StatusCode, body: string(body), location: res.Header.Get("Location"), header: res.Header}
}

// get follows redirects from u (relative to the site) until a page or a
// redirect leaving for another site.
func (b *person) get(u string) page {
	b.t.Helper()
	for range 12 {
		if strings.HasPrefix(u, "/") {
			u = b.s.ts.URL + u
		}
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		p := b.do(req)
		if p.location == "" {
			return p
		}
		u = p.location
	}
	b.t.Fatal("too many redirects")
	return page{}
}

// post sends a form; a redirect answer is followed.
func (b *person) post(path string, form url.Values) page {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.s.ts.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	p := b.do(req)
	if p.location != "" && p.status == http.StatusSeeOther {
		return b.get(p.location)
	}
	return p
}

var csrfField = regexp.MustCompile(`<form[^>]*action="([^"]+)"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"`)

// form returns the CSRF token the page gives the form posting to action.
func (p page) form(t testing.TB, action string) url.Values {
	t.Helper()
	for _, m := range csrfField.FindAllStringSubmatch(p.body, -1) {
		if unescape(m[1]) == action {
			return url.Values{"csrf": {unescape(m[2])}}
		}
	}
	t.Fatalf("no form posting to %s on the page (status %d):\n%s", action, p.status, p.body)
	return nil
}

func unescape(s string) string {
	return strings.NewReplacer("&amp;", "&", "&#43;", "+", "&#34;", `"`, "&#39;", "'", "&lt;", "<", "&gt;", ">").Replace(s)
}

// signIn signs sub in at the console (through the upstream, auto-login)
// with claims, and returns the page they land on.
func (b *person) signIn(sub string, claims map[string]any, next string) page {
	b.t.Helper()
	b.s.login.SignInAs(sub, claims)
	return b.get("/console/signin/corp?next=" + url.QueryEscape(next))
}

func who(email string) map[string]any {
	return map[string]any{"email": email, "email_verified": true, "name": strings.Split(email, "@")[0]}
}

// signedIn is a browser of sub (email), signed in.
func (s *site) signedIn(sub, email string) *person {
	s.t.Helper()
	b := s.browser()
	if p := b.signIn(sub, who(email), "/console/connect"); p.status != http.StatusOK || !strings.Contains(p.body, "Connect an MCP client") {
		s.t.Fatalf("%s did not sign in: %d\n%s", email, p.status, p.body)
	}
	return b
}

// forgetTenant drops what the site cached about a tenant changed behind
// its back (as a NOTIFY from another replica would).
func forgetTenant(s *site, id string) { s.tenants.Forget(id) }

// csrfFor is the token the session of browser b gets for a form posting to
// action: what the console derives from the session's key (so a test can
// aim a valid token of this session at any path, leaving only the other
// checks to stop it).
func csrfFor(t testing.TB, b *person, action string) string {
	t.Helper()
	u, _ := url.Parse(b.s.ts.URL)
	var token string
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == "gatehouse-console" {
			token = c.Value
		}
	}
	if token == "" {
		t.Fatal("the browser has no session cookie")
	}
	h := sha256.Sum256([]byte("console session:" + token))
	var key []byte
	if err := b.s.db.Pool().QueryRow(context.Background(), "SELECT csrf_key FROM gatehouse.console_sessions WHERE id_hash = $1", h[:]).Scan(&key); err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("console form:" + action))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
