package console_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

var (
	loginLinkRe = regexp.MustCompile(`href="(/oauth/login/[^"]+)"`)
	hiddenRe    = regexp.MustCompile(`<input type="hidden" name="(\w+)" value="([^"]*)">`)
)

// mcpSignIn has b authorise an MCP client (registered here, named name)
// through the authorization server — sign-in page, upstream, consent — and
// returns the client's access token.
func mcpSignIn(t *testing.T, s *site, b *person, name string) string {
	t.Helper()
	const redirect = "http://127.0.0.1:9/callback"
	res, err := http.Post(s.ts.URL+"/oauth/register", "application/json",
		strings.NewReader(`{"redirect_uris":["`+redirect+`"],"client_name":"`+name+`","token_endpoint_auth_method":"none"}`))
	if err != nil {
		t.Fatal(err)
	}
	var reg struct {
		ClientID string `json:"client_id"`
	}
	_ = json.NewDecoder(res.Body).Decode(&reg)
	res.Body.Close()
	verifier := oauth2.GenerateVerifier()
	q := url.Values{"response_type": {"code"}, "client_id": {reg.ClientID}, "redirect_uri": {redirect}, "state": {"st"},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"},
		"scope": {"mcp:read mcp:write"}, "resource": {s.ts.URL + "/mcp"}}
	u := s.ts.URL + "/oauth/authorize?" + q.Encode()
	var p page
	for range 10 { // to the consent page
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		p = b.do(req)
		if m := loginLinkRe.FindStringSubmatch(p.body); m != nil && p.location == "" {
			u = s.ts.URL + unescape(m[1])
			continue
		}
		if p.location == "" {
			break
		}
		u = p.location
		if strings.HasPrefix(u, "/") {
			u = s.ts.URL + u
		}
	}
	form := url.Values{"decision": {"allow"}}
	for _, m := range hiddenRe.FindAllStringSubmatch(p.body, -1) {
		form.Set(m[1], unescape(m[2]))
	}
	req, _ := http.NewRequest(http.MethodPost, s.ts.URL+"/oauth/consent", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	back := b.do(req)
	loc, err := url.Parse(back.location)
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("no code: %d %s\n%s", back.status, back.location, back.body)
	}
	tok, err := http.PostForm(s.ts.URL+"/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {redirect}, "client_id": {reg.ClientID}, "code_verifier": {verifier}, "resource": {s.ts.URL + "/mcp"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(tok.Body).Decode(&tr)
	if tr.AccessToken == "" {
		t.Fatalf("token exchange: %d", tok.StatusCode)
	}
	return tr.AccessToken
}

// TestRevokeSignIn: a person authorises an MCP client, sees it under My
// sign-ins, revokes it there, and the client's access token is refused at
// /mcp at once (not when it expires); another client of theirs, and
// another person's, keep working, and nobody can revoke another person's
// sign-in by its id.
func TestRevokeSignIn(t *testing.T) {
	s := newSite(t, siteOpts{})
	ada := s.signedIn("ada-1", "ada@acme.example")
	first := mcpSignIn(t, s, ada, "Claude Test")
	second := mcpSignIn(t, s, ada, "Cursor Test")
	bob := s.signedIn("bob-1", "bob@acme.example")
	bobs := mcpSignIn(t, s, bob, "Bob's Client")
	for _, tok := range []string{first, second, bobs} {
		if code := s.mcpStatus(t, tok); code != http.StatusOK {
			t.Fatalf("a fresh sign-in's token at /mcp: %d", code)
		}
	}
	list := ada.get("/console/signins")
	for _, want := range []string{"Claude Test", "Cursor Test", "127.0.0.1:9", "mcp:read mcp:write"} {
		if !strings.Contains(list.body, want) {
			t.Errorf("My sign-ins lacks %q", want)
		}
	}
	if strings.Contains(list.body, "Bob&#39;s Client") || strings.Contains(list.body, "Bob's Client") {
		t.Error("ada's sign-ins list bob's client")
	}
	fam := regexp.MustCompile(`action="/console/signins/([^/"]+)/revoke"[^>]*>\s*<input type="hidden" name="csrf" value="[^"]+"><button type="submit" aria-label="Revoke the sign-in of Claude Test"`).FindStringSubmatch(list.body)
	if fam == nil {
		t.Fatalf("no revoke form for Claude Test:\n%s", list.body)
	}
	// Bob cannot revoke ada's sign-in with its id.
	path := "/console/signins/" + fam[1] + "/revoke"
	if p := bob.post(path, url.Values{"csrf": {csrfFor(t, bob, path)}}); p.status != http.StatusNotFound {
		t.Errorf("bob revoking ada's sign-in: %d, want 404", p.status)
	}
	if code := s.mcpStatus(t, first); code != http.StatusOK {
		t.Fatalf("after bob's attempt: %d", code)
	}
	if p := ada.post(path, list.form(t, path)); p.status != http.StatusOK || !strings.Contains(p.body, "Sign-in revoked") {
		t.Fatalf("revoking: %d\n%s", p.status, p.body)
	}
	// Every replica (this one too) hears of it through the database's
	// notification and drops its cached validation.
	code := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if code = s.mcpStatus(t, first); code == http.StatusUnauthorized {
			break
		}
	}
	if code != http.StatusUnauthorized {
		t.Errorf("the revoked sign-in's access token: %d, want 401", code)
	}
	if code := s.mcpStatus(t, second); code != http.StatusOK {
		t.Errorf("ada's other client: %d", code)
	}
	if code := s.mcpStatus(t, bobs); code != http.StatusOK {
		t.Errorf("bob's client: %d", code)
	}
	if strings.Contains(ada.get("/console/signins").body, "Claude Test") {
		t.Error("the revoked sign-in is still listed")
	}
}
