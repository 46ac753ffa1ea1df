package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// The attacks of issue 14, each a family: every way in is tried.

func (s *site) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := s.db.Pool().Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (s *site) scalar(t testing.TB, sql string, args ...any) string {
	t.Helper()
	var v string
	if err := s.db.Pool().QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// TestCSRF: a POST without a token, with another session's token, with
// this session's token for another form, or from another origin changes
// nothing.
func TestCSRF(t *testing.T) {
	s := newSite(t, siteOpts{})
	admin := s.signedIn("ada-1", "ada@acme.example")
	s.signedIn("bob-1", "bob@acme.example") // a developer to act on
	bobID := s.scalar(t, "SELECT id::text FROM gatehouse.members WHERE email = 'bob@acme.example'")
	other := s.signedIn("ada-1", "ada@acme.example") // the same person, another browser
	action := "/console/admin/members/" + bobID + "/role"
	own := admin.get("/console/admin/members").form(t, action)
	theirs := other.get("/console/admin/members").form(t, action)
	otherForm := admin.get("/console/admin/members").form(t, "/console/admin/members/"+bobID+"/remove")
	if own.Get("csrf") == theirs.Get("csrf") {
		t.Fatal("two sessions got the same CSRF token")
	}
	for name, form := range map[string]url.Values{
		"no token":           {},
		"empty token":        {"csrf": {""}},
		"another session's":  theirs,
		"another form's":     otherForm,
		"a made-up token":    {"csrf": {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}},
		"token in the query": nil,
	} {
		f := url.Values{"role": {"viewer"}}
		for k, v := range form {
			f[k] = v
		}
		path := action
		if form == nil {
			path += "?csrf=" + url.QueryEscape(own.Get("csrf"))
		}
		if p := admin.post(path, f); p.status != http.StatusForbidden || !strings.Contains(p.body, "did not come from your console page") {
			t.Errorf("%s: status %d, want 403\n%s", name, p.status, p.body)
		}
	}
	// The right token from another site's page (Origin) is refused too.
	f := url.Values{"role": {"viewer"}, "csrf": own["csrf"]}
	req, _ := http.NewRequest(http.MethodPost, s.ts.URL+action, strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if p := admin.do(req); p.status != http.StatusForbidden {
		t.Errorf("cross-origin POST: %d, want 403", p.status)
	}
	if role := s.scalar(t, "SELECT role FROM gatehouse.members WHERE id = $1", bobID); role != "developer" {
		t.Fatalf("a forged form changed bob's role to %s", role)
	}
	// And the right token works.
	f = url.Values{"role": {"viewer"}, "csrf": own["csrf"]}
	if p := admin.post(action, f); p.status != http.StatusOK {
		t.Fatalf("the genuine form: %d\n%s", p.status, p.body)
	}
	if role := s.scalar(t, "SELECT role FROM gatehouse.members WHERE id = $1", bobID); role != "viewer" {
		t.Fatalf("the genuine form left bob %s", role)
	}
}

// TestCrossTenantIDs: an admin of acme.example edits ids of beta.example's
// members, keys and audit records into URLs and forms: nothing of beta's
// is shown or changed.
func TestCrossTenantIDs(t *testing.T) {
	s := newSite(t, siteOpts{})
	beta := s.signedIn("bea-1", "bea@beta.example")
	s.signedIn("ben-1", "ben@beta.example")
	betaKeys := beta.get("/console/keys")
	kf := betaKeys.form(t, "/console/keys")
	kf.Set("name", "beta ci")
	kf.Set("role", "admin")
	kf["scope"] = []string{"mcp:read"}
	secret := secretOnPage.FindStringSubmatch(beta.post("/console/keys", kf).body)
	if secret == nil {
		t.Fatal("beta's key was not created")
	}
	acme := s.signedIn("ada-1", "ada@acme.example")
	betaTenant := s.scalar(t, "SELECT id::text FROM gatehouse.tenants WHERE key = 'beta.example'")
	benID := s.scalar(t, "SELECT id::text FROM gatehouse.members WHERE email = 'ben@beta.example'")
	beaID := s.scalar(t, "SELECT id::text FROM gatehouse.members WHERE email = 'bea@beta.example'")
	keyID := s.scalar(t, "SELECT id FROM gatehouse.api_keys WHERE tenant_id = $1", betaTenant)
	s.srv.FlushAudit(context.Background())
	tn, _ := s.db.FindTenantByKey(context.Background(), "beta.example")
	var recID string
	_ = s.db.Pool().QueryRow(context.Background(), "SELECT max(id)::text FROM "+`"`+tn.Schema+`"`+".audit_log").Scan(&recID)

	// Acme's own forms, with beta's ids in the URL: the token is valid
	// for that path (it is acme's session), so only tenancy stops it.
	tok := func(path string) url.Values {
		return url.Values{"csrf": {csrfFor(t, acme, path)}}
	}
	for _, c := range []struct{ path, field, value string }{
		{"/console/admin/members/" + benID + "/role", "role", "admin"},
		{"/console/admin/members/" + beaID + "/remove", "", ""},
		{"/console/admin/keys/" + keyID + "/revoke", "", ""},
		{"/console/keys/" + keyID + "/revoke", "", ""},
	} {
		f := tok(c.path)
		if c.field != "" {
			f.Set(c.field, c.value)
		}
		p := acme.post(c.path, f)
		if p.status != http.StatusNotFound && p.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 404/400\n%s", c.path, p.status, p.body)
		}
		if strings.Contains(p.body, "ben@beta.example") || strings.Contains(p.body, "beta ci") {
			t.Errorf("%s shows beta's data", c.path)
		}
	}
	// Record ids count per tenant: acme's own record of that number may
	// exist, but never beta's.
	for _, id := range []string{recID, "999999"} {
		if p := acme.get("/console/admin/audit/" + id); strings.Contains(p.body, "beta.example") || strings.Contains(p.body, "corp:bea-1") {
			t.Errorf("beta's audit record %s shown to acme:\n%s", id, p.body)
		}
	}
	if p := acme.get("/console/admin/audit/999999"); p.status != http.StatusNotFound {
		t.Errorf("an audit record acme does not have: %d, want 404", p.status)
	}
	if role := s.scalar(t, "SELECT role FROM gatehouse.members WHERE id = $1", benID); role != "developer" {
		t.Errorf("ben's role is %s", role)
	}
	if removed := s.scalar(t, "SELECT (removed_at IS NOT NULL)::text FROM gatehouse.members WHERE id = $1", beaID); removed != "false" {
		t.Error("bea was removed from acme's console")
	}
	if code := s.mcpStatus(t, secret[1]); code != http.StatusOK {
		t.Errorf("beta's key after acme's attempts: %d", code)
	}
	// Acme's pages list nothing of beta's.
	for _, path := range []string{"/console/admin/members", "/console/admin/keys", "/console/admin/audit", "/console/keys"} {
		if p := acme.get(path); strings.Contains(p.body, "beta.example") || strings.Contains(p.body, "beta ci") {
			t.Errorf("%s shows beta's data", path)
		}
	}
}

// TestDeveloperOnAdminPages: a developer (the org's second member) gets
// neither the admin pages nor their actions, and does not see them in the
// navigation.
func TestDeveloperOnAdminPages(t *testing.T) {
	s := newSite(t, siteOpts{})
	s.signedIn("ada-1", "ada@acme.example")
	dev := s.signedIn("dan-1", "dan@acme.example")
	adaID := s.scalar(t, "SELECT id::text FROM gatehouse.members WHERE email = 'ada@acme.example'")
	home := dev.get("/console/connect")
	if strings.Contains(home.body, "/console/admin/") {
		t.Error("a developer's navigation links the admin pages")
	}
	for _, path := range []string{"/console/admin/members", "/console/admin/keys", "/console/admin/audit", "/console/admin/usage",
		"/console/admin/audit/export?format=csv", "/console/admin/audit/1"} {
		if p := dev.get(path); p.status != http.StatusForbidden {
			t.Errorf("developer GET %s: %d, want 403", path, p.status)
		}
	}
	for _, path := range []string{"/console/admin/members/" + adaID + "/role", "/console/admin/members/" + adaID + "/remove", "/console/admin/audit/verify"} {
		f := url.Values{"csrf": {csrfFor(t, dev, path)}, "role": {"viewer"}}
		if p := dev.post(path, f); p.status != http.StatusForbidden {
			t.Errorf("developer POST %s: %d, want 403", path, p.status)
		}
	}
	if role := s.scalar(t, "SELECT role FROM gatehouse.members WHERE id = $1", adaID); role != "admin" {
		t.Errorf("ada is %s", role)
	}
	// A viewer has no keys of their own either.
	s.exec(t, "UPDATE gatehouse.members SET role = 'viewer' WHERE email = 'dan@acme.example'")
	tn, _ := s.db.FindTenantByKey(context.Background(), "acme.example")
	forgetTenant(s, tn.ID)
	if p := dev.get("/console/keys"); p.status != http.StatusForbidden {
		t.Errorf("viewer on My keys: %d, want 403", p.status)
	}
}

// TestExpiredSessions: a session idle too long, past its absolute
// lifetime, signed out, or signed out everywhere no longer opens pages.
func TestExpiredSessions(t *testing.T) {
	s := newSite(t, siteOpts{})
	for name, sql := range map[string]string{
		"idle":     "UPDATE gatehouse.console_sessions SET last_seen_at = now() - interval '31 minutes'",
		"absolute": "UPDATE gatehouse.console_sessions SET expires_at = now() - interval '1 second'",
	} {
		b := s.signedIn("ada-1", "ada@acme.example")
		s.exec(t, sql)
		p := b.get("/console/keys")
		if !strings.Contains(p.body, "Sign in to the Gatehouse console") {
			t.Errorf("%s session: got a page other than sign-in (%d)", name, p.status)
		}
		s.exec(t, "DELETE FROM gatehouse.console_sessions")
	}
	a, b := s.signedIn("ada-1", "ada@acme.example"), s.signedIn("ada-1", "ada@acme.example")
	c := s.signedIn("cy-1", "cy@acme.example")
	out := a.post("/console/signout/everywhere", a.get("/console/signins").form(t, "/console/signout/everywhere"))
	if !strings.Contains(out.body, "Sign in to the Gatehouse console") {
		t.Fatalf("sign out everywhere: %d", out.status)
	}
	for name, br := range map[string]*person{"this browser": a, "the other browser": b} {
		if p := br.get("/console/connect"); !strings.Contains(p.body, "Sign in to the Gatehouse console") {
			t.Errorf("%s is still signed in after signing out everywhere", name)
		}
	}
	if p := c.get("/console/connect"); p.status != http.StatusOK || !strings.Contains(p.body, "Connect an MCP client") {
		t.Error("signing out everywhere signed another person out")
	}
	// An action with an ended session is refused, not redirected.
	req, _ := http.NewRequest(http.MethodPost, s.ts.URL+"/console/keys", strings.NewReader("name=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if p := a.do(req); p.status != http.StatusUnauthorized {
		t.Errorf("POST with an ended session: %d, want 401", p.status)
	}
}

// TestRemovedMemberSignedIn: a member removed while signed in is refused
// on their next page; restored, they are back.
func TestRemovedMemberSignedIn(t *testing.T) {
	s := newSite(t, siteOpts{})
	admin := s.signedIn("ada-1", "ada@acme.example")
	dev := s.signedIn("dan-1", "dan@acme.example")
	danID := s.scalar(t, "SELECT id::text FROM gatehouse.members WHERE email = 'dan@acme.example'")
	action := "/console/admin/members/" + danID + "/remove"
	if p := admin.post(action, admin.get("/console/admin/members").form(t, action)); p.status != http.StatusOK {
		t.Fatalf("remove: %d\n%s", p.status, p.body)
	}
	if p := dev.get("/console/connect"); p.status != http.StatusForbidden || !strings.Contains(p.body, "removed you") {
		t.Errorf("removed member's next page: %d\n%s", p.status, p.body)
	}
	// The last admin cannot be removed.
	adaID := s.scalar(t, "SELECT id::text FROM gatehouse.members WHERE email = 'ada@acme.example'")
	last := "/console/admin/members/" + adaID + "/remove"
	if p := admin.post(last, admin.get("/console/admin/members").form(t, last)); p.status != http.StatusBadRequest || !strings.Contains(p.body, "at least one admin") {
		t.Errorf("removing the last admin: %d\n%s", p.status, p.body)
	}
	// Restore.
	role := "/console/admin/members/" + danID + "/role"
	f := admin.get("/console/admin/members").form(t, role)
	f.Set("role", "developer")
	if p := admin.post(role, f); p.status != http.StatusOK {
		t.Fatalf("restore: %d", p.status)
	}
	if p := dev.get("/console/connect"); p.status != http.StatusOK {
		t.Errorf("restored member: %d", p.status)
	}
}

// TestOperatorPagesForNonOperators: only the subjects named as operators
// reach /console/operator; the same number at another provider, an org
// admin, and a signed-out browser do not.
func TestOperatorPagesForNonOperators(t *testing.T) {
	s := newSite(t, siteOpts{operators: []string{"corp:op-1", "github:42"}})
	admin := s.signedIn("ada-1", "ada@acme.example")
	lookalike := s.signedIn("42", "mallory@evil.example") // corp:42, not github:42
	for name, b := range map[string]*person{"an org admin": admin, "corp:42": lookalike} {
		if p := b.get("/console/operator"); p.status != http.StatusForbidden {
			t.Errorf("%s on /console/operator: %d, want 403", name, p.status)
		}
		tnKey := "acme.example"
		path := "/console/operator/tenants/" + tnKey + "/suspend"
		if p := b.post(path, url.Values{"csrf": {csrfFor(t, b, path)}}); p.status != http.StatusForbidden {
			t.Errorf("%s suspending: %d, want 403", name, p.status)
		}
	}
	if st := s.scalar(t, "SELECT status FROM gatehouse.tenants WHERE key = 'acme.example'"); st != "active" {
		t.Fatalf("acme is %s", st)
	}
	if p := s.browser().get("/console/operator"); !strings.Contains(p.body, "Sign in to the Gatehouse console") {
		t.Errorf("signed out on /console/operator: %d", p.status)
	}
	op := s.signedIn("op-1", "op@operator.example")
	if p := op.get("/console/operator"); p.status != http.StatusOK || !strings.Contains(p.body, "acme.example") {
		t.Errorf("the operator: %d\n%s", p.status, p.body)
	}
}

// TestOpenRedirect: ?next= never leads off the console.
func TestOpenRedirect(t *testing.T) {
	s := newSite(t, siteOpts{})
	for _, next := range []string{"https://evil.example/", "//evil.example/", "/\\evil.example", "\\\\evil.example",
		"/console/..//evil.example", "javascript:alert(1)", "http:/evil.example", "/%2F%2Fevil.example", "https:evil.example",
		"/console@evil.example", " //evil.example", "/console/\t/evil.example", "//console/connect"} {
		b := s.browser()
		s.login.SignInAs("ada-1", who("ada@acme.example"))
		u := s.ts.URL + "/console/signin/corp?next=" + url.QueryEscape(next)
		var last string
		for range 10 {
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			p := b.do(req)
			if p.location == "" {
				break
			}
			loc, err := url.Parse(p.location)
			if err != nil {
				t.Fatalf("next=%q: bad location %q", next, p.location)
			}
			if strings.HasPrefix(p.location, "/") {
				loc, _ = url.Parse(s.ts.URL + p.location)
			}
			last = loc.String()
			u = last
		}
		if !strings.HasPrefix(last, s.ts.URL+"/console/") {
			t.Errorf("next=%q ended at %q", next, last)
		}
	}
}

// TestHTMLInjection: names, key names and user agents that are HTML are
// shown as text.
func TestHTMLInjection(t *testing.T) {
	s := newSite(t, siteOpts{})
	evil := `<script>alert(1)</script><img src=x onerror=alert(2)>`
	b := s.browser()
	s.login.SignInAs("ada-1", map[string]any{"email": "ada@acme.example", "email_verified": true, "name": evil})
	b.get("/console/signin/corp?next=/console/connect")
	s.signedIn("eve-1", "eve@acme.example")
	s.exec(t, "UPDATE gatehouse.members SET name = $1 WHERE email = 'eve@acme.example'", evil)
	tn, _ := s.db.FindTenantByKey(context.Background(), "acme.example")
	forgetTenant(s, tn.ID)
	kf := b.get("/console/keys").form(t, "/console/keys")
	kf.Set("name", evil[:40])
	kf.Set("role", "viewer")
	kf["scope"] = []string{"mcp:read"}
	b.post("/console/keys", kf)
	for _, path := range []string{"/console/connect", "/console/admin/members", "/console/admin/keys", "/console/keys", "/console/admin/audit"} {
		p := b.get(path)
		if strings.Contains(p.body, "<script>alert") || strings.Contains(p.body, "<img src=x") {
			t.Errorf("%s renders HTML from data:\n%s", path, p.body)
		}
		if path == "/console/admin/members" && !strings.Contains(p.body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("%s does not show the name as text", path)
		}
		csp := p.header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s CSP: %q", path, csp)
		}
	}
}

// TestFreshSignIn: creating a key, removing a member and deleting a tenant
// need a sign-in within 10 minutes; an older one is sent to sign in again
// and nothing happens until then.
func TestFreshSignIn(t *testing.T) {
	s := newSite(t, siteOpts{operators: []string{"corp:ada-1"}})
	b := s.signedIn("ada-1", "ada@acme.example")
	s.signedIn("dan-1", "dan@acme.example")
	danID := s.scalar(t, "SELECT id::text FROM gatehouse.members WHERE email = 'dan@acme.example'")
	keys := b.get("/console/keys")
	members := b.get("/console/admin/members")
	del := b.get("/console/operator/tenants/acme.example/delete")
	s.exec(t, "UPDATE gatehouse.console_sessions SET signed_in_at = now() - interval '11 minutes'")
	kf := keys.form(t, "/console/keys")
	kf.Set("name", "late")
	kf.Set("role", "viewer")
	kf["scope"] = []string{"mcp:read"}
	df := del.form(t, "/console/operator/tenants/acme.example/delete")
	df.Set("confirm", "acme.example")
	for path, f := range map[string]url.Values{
		"/console/keys": kf,
		"/console/admin/members/" + danID + "/remove":   members.form(t, "/console/admin/members/"+danID+"/remove"),
		"/console/operator/tenants/acme.example/delete": df,
	} {
		req, _ := http.NewRequest(http.MethodPost, s.ts.URL+path, strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		p := b.do(req)
		if p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/console/signin?fresh=1") {
			t.Errorf("%s with an old sign-in: %d %q, want a redirect to sign in", path, p.status, p.location)
		}
	}
	if n := s.scalar(t, "SELECT count(*)::text FROM gatehouse.api_keys"); n != "0" {
		t.Error("a key was created with an old sign-in")
	}
	if removed := s.scalar(t, "SELECT (removed_at IS NOT NULL)::text FROM gatehouse.members WHERE id = $1", danID); removed != "false" {
		t.Error("a member was removed with an old sign-in")
	}
	if n := s.scalar(t, "SELECT count(*)::text FROM gatehouse.tenants WHERE key = 'acme.example'"); n != "1" {
		t.Error("the tenant was deleted with an old sign-in")
	}
	// Signing in again makes it fresh.
	b.signIn("ada-1", who("ada@acme.example"), "/console/keys")
	kf = b.get("/console/keys").form(t, "/console/keys")
	kf.Set("name", "fresh")
	kf.Set("role", "viewer")
	kf["scope"] = []string{"mcp:read"}
	if p := b.post("/console/keys", kf); secretOnPage.FindStringSubmatch(p.body) == nil {
		t.Errorf("a fresh sign-in could not create a key: %d", p.status)
	}
}

// TestCookie: the session cookie is HttpOnly, SameSite=Lax, host-only,
// Path=/, and named without the __Host- prefix only because the test
// server is plain http (the prefix requires Secure).
func TestCookie(t *testing.T) {
	s := newSite(t, siteOpts{})
	b := s.browser()
	s.login.SignInAs("ada-1", who("ada@acme.example"))
	u := s.ts.URL + "/console/signin/corp?next=/console/connect"
	var set string
	for range 10 {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		p := b.do(req)
		for _, c := range p.header.Values("Set-Cookie") {
			if strings.HasPrefix(c, "gatehouse-console=") {
				set = c
			}
		}
		if p.location == "" {
			break
		}
		u = p.location
		if strings.HasPrefix(u, "/") {
			u = s.ts.URL + u
		}
	}
	for _, want := range []string{"HttpOnly", "SameSite=Lax", "Path=/"} {
		if !strings.Contains(set, want) {
			t.Errorf("session cookie %q lacks %s", set, want)
		}
	}
	if strings.Contains(strings.ToLower(set), "domain=") {
		t.Errorf("session cookie %q names a domain", set)
	}
	if n := s.scalar(t, "SELECT count(*)::text FROM gatehouse.console_sessions"); n != "1" {
		t.Errorf("%s sessions stored", n)
	}
}

// TestConsoleRateLimited: the console's tool calls count against the
// person's rate limit like their MCP requests: past it, a page answers 429
// with Retry-After and the refusal is audited; the limit is shared with
// their key at /mcp.
func TestConsoleRateLimited(t *testing.T) {
	s := newSite(t, siteOpts{limits: &tenancy.Limits{Principal: tenancy.Rate{PerMinute: 1, Burst: 3}}})
	b := s.signedIn("ada-1", "ada@acme.example")
	var last page
	for range 6 {
		if last = b.get("/console/admin/members"); last.status == http.StatusTooManyRequests {
			break
		}
	}
	if last.status != http.StatusTooManyRequests || last.header.Get("Retry-After") == "" || !strings.Contains(last.body, "rate limit exceeded") {
		t.Fatalf("past the limit: %d %q\n%s", last.status, last.header.Get("Retry-After"), last.body)
	}
	s.srv.FlushAudit(context.Background())
	tn, _ := s.db.FindTenantByKey(context.Background(), "acme.example")
	if n := s.scalar(t, `SELECT count(*)::text FROM "`+tn.Schema+`".audit_log WHERE decision = 'RATE_LIMITED' AND tool = 'list_members'`); n == "0" {
		t.Error("the console's rate-limited call was not audited")
	}
}
