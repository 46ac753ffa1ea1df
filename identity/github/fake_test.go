package github_test

import (
	"cmp"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// The OAuth app Gatehouse is configured with (the client id is the one in
// GitHub's documented examples).
const (
	clientID     = "Iv1.8a61f9b3a7aba766"
	clientSecret = "c0ffee5ecret0123456789abcdef0123456789ab"
)

// Endpoints of the fake, for counting calls and forcing answers.
const (
	epCheck  = "check a token"
	epUser   = "get the authenticated user"
	epEmails = "list emails"
)

// canned is a fixed HTTP answer.
type canned struct {
	status int
	header map[string]string
	body   string
}

func (c canned) write(w http.ResponseWriter) {
	for k, v := range c.header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(c.status)
	_, _ = w.Write([]byte(c.body))
}

// ghUser is a GitHub account.
type ghUser struct {
	ID          int64
	Login       string
	Name        string // "": null
	PublicEmail string // the profile's public email, "": null; never verified
}

// grant is a token the fake GitHub has issued.
type grant struct {
	App         string // client id it was issued to; "": ours
	ReportedApp string // app.client_id in the check answer; "": App
	ExpiresAt   string // JSON value of expires_at ("null", `"2031-…"`); "": field absent
	User        ghUser
	Emails      string // the /user/emails answer; "": 404, as without the user:email scope
}

// fakeGitHub imitates GitHub's REST API: it answers as GitHub documents,
// checks what Gatehouse sends, and counts calls per endpoint.
type fakeGitHub struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	grants map[string]grant
	force  map[string]canned
	calls  map[string]int
}

// newFake starts a fake GitHub whose API lives under prefix ("" for
// api.github.com, "/api/v3" for GitHub Enterprise Server).
func newFake(t *testing.T, prefix string) *fakeGitHub {
	f := &fakeGitHub{t: t, grants: map[string]grant{}, force: map[string]canned{}, calls: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+prefix+"/applications/{client_id}/token", f.checkToken)
	mux.HandleFunc("GET "+prefix+"/user", f.user)
	mux.HandleFunc("GET "+prefix+"/user/emails", f.emails)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeGitHub) issue(token string, g grant) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants[token] = g
}

func (f *fakeGitHub) revoke(token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.grants, token)
}

// fail makes endpoint ep answer c from now on.
func (f *fakeGitHub) fail(ep string, c canned) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.force[ep] = c
}

func (f *fakeGitHub) count(ep string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[ep]
}

func (f *fakeGitHub) total() int {
	return f.count(epCheck) + f.count(epUser) + f.count(epEmails)
}

func (f *fakeGitHub) lookup(token string) (grant, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g, ok := f.grants[token]
	return g, ok
}

// enter counts a call, checks the headers every call must carry, and
// answers a forced response if one is set (reporting true).
func (f *fakeGitHub) enter(w http.ResponseWriter, r *http.Request, ep string) bool {
	f.mu.Lock()
	f.calls[ep]++
	c, forced := f.force[ep]
	f.mu.Unlock()
	for h, want := range map[string]string{
		"Accept":               "application/vnd.github+json",
		"X-GitHub-Api-Version": "2022-11-28",
		"User-Agent":           "gatehouse",
	} {
		if got := r.Header.Get(h); got != want {
			f.t.Errorf("%s %s: header %s = %q, want %q", r.Method, r.URL.Path, h, got, want)
		}
	}
	if forced {
		c.write(w)
	}
	return forced
}

// checkToken is POST /applications/{client_id}/token.
func (f *fakeGitHub) checkToken(w http.ResponseWriter, r *http.Request) {
	if f.enter(w, r, epCheck) {
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		f.t.Errorf("check a token: no Basic auth (Authorization: %q)", r.Header.Get("Authorization"))
	}
	if !ok || id != r.PathValue("client_id") || id != clientID || secret != clientSecret {
		badCredentials.write(w)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.t.Errorf("check a token: Content-Type = %q, want application/json", ct)
	}
	var body struct {
		AccessToken string `json:"access_token"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.AccessToken == "" {
		f.t.Errorf("check a token: body is not {\"access_token\": ...} (%v)", err)
		validationFailed.write(w)
		return
	}
	g, ok := f.lookup(body.AccessToken)
	if !ok || cmp.Or(g.App, clientID) != id {
		notFound.write(w) // unknown, revoked, or another app's token
		return
	}
	f.render(w, "authorization", struct {
		Token, ClientID, ExpiresAt string
		User                       ghUser
	}{body.AccessToken, cmp.Or(g.ReportedApp, g.App, clientID), g.ExpiresAt, g.User})
}

// user is GET /user.
func (f *fakeGitHub) user(w http.ResponseWriter, r *http.Request) {
	if f.enter(w, r, epUser) {
		return
	}
	g, ok := f.bearer(r)
	if !ok {
		badCredentials.write(w)
		return
	}
	f.render(w, "private-user", g.User)
}

// emails is GET /user/emails.
func (f *fakeGitHub) emails(w http.ResponseWriter, r *http.Request) {
	if f.enter(w, r, epEmails) {
		return
	}
	g, ok := f.bearer(r)
	switch {
	case !ok:
		badCredentials.write(w)
	case g.Emails == "":
		notFound.write(w)
	default:
		canned{status: http.StatusOK, body: g.Emails}.write(w)
	}
}

// bearer returns the grant of the request's Bearer token.
func (f *fakeGitHub) bearer(r *http.Request) (grant, bool) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		f.t.Errorf("%s %s: Authorization is not a Bearer token", r.Method, r.URL.Path)
		return grant{}, false
	}
	return f.lookup(token)
}

func (f *fakeGitHub) render(w http.ResponseWriter, name string, data any) {
	body, err := render(name, data)
	if err != nil {
		f.t.Errorf("rendering %s: %v", name, err)
		serverError.write(w)
		return
	}
	canned{status: http.StatusOK, body: body}.write(w)
}
