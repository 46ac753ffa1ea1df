package idptest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// GitHubUser is a GitHub account.
type GitHubUser struct {
	ID          int64
	Login       string
	Name        string // "": null
	PublicEmail string // the profile's public email, "": null; never verified
	// Emails is the account's email addresses, the answer of
	// GET /user/emails (nil: an empty list).
	Emails []GitHubEmail
}

// GitHubEmail is one entry of "List email addresses for the authenticated
// user".
type GitHubEmail struct {
	Email      string
	Primary    bool
	Verified   bool
	Visibility string // "public" or "private"; "": null
}

// GitHubGrant is a token the fake GitHub has issued: whose it is and to
// which app.
type GitHubGrant struct {
	User GitHubUser
	// App is the client id of the app the token was issued to; "": ours.
	// "Check a token" answers 404 to our app for another app's token.
	App string
	// ReportedApp is the app.client_id the check answer names; "": App.
	ReportedApp string
	// ExpiresAt is the token's expires_at; zero leaves the field out.
	ExpiresAt time.Time
	// NullExpiry sends "expires_at": null (it wins over ExpiresAt).
	NullExpiry bool
	// NoEmailScope makes GET /user/emails answer 404, as GitHub does for a
	// token granted without the user:email scope.
	NoEmailScope bool
}

// GitHub imitates GitHub's REST API (version 2022-11-28) on an httptest
// server: "Check a token" (POST /applications/{client_id}/token), "Get the
// authenticated user" (GET /user) and "List email addresses for the
// authenticated user" (GET /user/emails). It answers in GitHub's documented
// shapes, records a test error for any request that does not carry what
// Gatehouse must send (Basic auth and a JSON body for the check, a Bearer
// token, GitHub's recommended headers), and counts calls per endpoint. It is
// safe for concurrent use.
type GitHub struct {
	// CheckToken is POST /applications/{client_id}/token.
	CheckToken *Endpoint
	// User is GET /user.
	User *Endpoint
	// Emails is GET /user/emails.
	Emails *Endpoint

	clientID, clientSecret string
	prefix                 string
	srv                    *httptest.Server
	mux                    *http.ServeMux
	rep                    *reporter

	mu     sync.Mutex
	grants map[string]GitHubGrant
}

// NewGitHub starts a fake api.github.com for the OAuth app (or GitHub App)
// with the given credentials, stopped when the test ends.
func NewGitHub(tb testing.TB, clientID, clientSecret string) *GitHub {
	tb.Helper()
	return newGitHub(tb, clientID, clientSecret, "")
}

// NewGitHubEnterprise starts a fake GitHub Enterprise Server, whose REST API
// lives under /api/v3, stopped when the test ends.
func NewGitHubEnterprise(tb testing.TB, clientID, clientSecret string) *GitHub {
	tb.Helper()
	return newGitHub(tb, clientID, clientSecret, "/api/v3")
}

func newGitHub(tb testing.TB, clientID, clientSecret, prefix string) *GitHub {
	f := &GitHub{
		CheckToken:   newEndpoint("application/json; charset=utf-8", gitHubError),
		User:         newEndpoint("application/json; charset=utf-8", gitHubError),
		Emails:       newEndpoint("application/json; charset=utf-8", gitHubError),
		clientID:     clientID,
		clientSecret: clientSecret,
		prefix:       prefix,
		rep:          newReporter(tb), // before the server: its cleanup runs after Close
		grants:       map[string]GitHubGrant{},
	}
	mux := http.NewServeMux()
	f.mux = mux
	mux.HandleFunc("POST "+prefix+"/applications/{client_id}/token", f.checkToken)
	mux.HandleFunc("GET "+prefix+"/user", f.user)
	mux.HandleFunc("GET "+prefix+"/user/emails", f.emails)
	f.srv = httptest.NewServer(mux)
	tb.Cleanup(f.srv.Close)
	return f
}

// URL is the REST API base URL, for github.Config.APIURL
// (GATEHOUSE_GITHUB_API_URL).
func (f *GitHub) URL() string { return f.srv.URL + f.prefix }

// Client is an HTTP client for the server (plain http).
func (f *GitHub) Client() *http.Client { return f.srv.Client() }

// Close stops the server: later calls fail to connect.
func (f *GitHub) Close() { f.srv.Close() }

// Issue makes token a live token described by g.
func (f *GitHub) Issue(token string, g GitHubGrant) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants[token] = g
}

// Revoke forgets token: GitHub answers as for a token it never issued.
func (f *GitHub) Revoke(token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.grants, token)
}

func (f *GitHub) lookup(token string) (GitHubGrant, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g, ok := f.grants[token]
	return g, ok
}

// enter counts a call, checks the headers every call must carry, and
// answers a forced response if one is set (reporting true).
func (f *GitHub) enter(w http.ResponseWriter, r *http.Request, ep *Endpoint) bool {
	for _, h := range [...]struct{ name, want string }{
		{"Accept", "application/vnd.github+json"},
		{"X-GitHub-Api-Version", "2022-11-28"},
		{"User-Agent", "gatehouse"},
	} {
		if got := r.Header.Get(h.name); got != h.want {
			f.rep.errorf("fake GitHub: %s %s: header %s = %q, want %q", r.Method, r.URL.Path, h.name, got, h.want)
		}
	}
	return ep.enter(w, r)
}

// checkToken is POST /applications/{client_id}/token.
func (f *GitHub) checkToken(w http.ResponseWriter, r *http.Request) {
	if f.enter(w, r, f.CheckToken) {
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		f.rep.errorf("fake GitHub: check a token: no Basic auth (Authorization: %q)", r.Header.Get("Authorization"))
	}
	if !ok || id != r.PathValue("client_id") || id != f.clientID || secret != f.clientSecret {
		GitHubBadCredentials.write(w)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.rep.errorf("fake GitHub: check a token: Content-Type = %q, want application/json", ct)
	}
	var body struct {
		AccessToken string `json:"access_token"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.AccessToken == "" {
		f.rep.errorf("fake GitHub: check a token: body is not {\"access_token\": ...} (%v)", err)
		GitHubValidationFailed.write(w)
		return
	}
	g, ok := f.lookup(body.AccessToken)
	if !ok || cmp.Or(g.App, f.clientID) != id {
		GitHubNotFound.write(w) // unknown, revoked, or another app's token
		return
	}
	expiresAt := ""
	switch {
	case g.NullExpiry:
		expiresAt = "null"
	case !g.ExpiresAt.IsZero():
		expiresAt = `"` + g.ExpiresAt.UTC().Format(time.RFC3339) + `"`
	}
	f.render(w, "authorization", struct {
		Token, ClientID, ExpiresAt string
		User                       GitHubUser
	}{body.AccessToken, cmp.Or(g.ReportedApp, g.App, f.clientID), expiresAt, g.User})
}

// user is GET /user.
func (f *GitHub) user(w http.ResponseWriter, r *http.Request) {
	if f.enter(w, r, f.User) {
		return
	}
	g, ok := f.bearer(r)
	if !ok {
		GitHubBadCredentials.write(w)
		return
	}
	f.render(w, "private-user", g.User)
}

// emails is GET /user/emails.
func (f *GitHub) emails(w http.ResponseWriter, r *http.Request) {
	if f.enter(w, r, f.Emails) {
		return
	}
	g, ok := f.bearer(r)
	switch {
	case !ok:
		GitHubBadCredentials.write(w)
	case g.NoEmailScope:
		GitHubNotFound.write(w)
	default:
		body, err := emailsAnswer(g.User.Emails)
		if err != nil {
			f.rep.errorf("fake GitHub: encoding the emails: %v", err)
			GitHubServerError.write(w)
			return
		}
		Response{Status: http.StatusOK, Body: body}.write(w)
	}
}

// bearer returns the grant of the request's Bearer token.
func (f *GitHub) bearer(r *http.Request) (GitHubGrant, bool) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		f.rep.errorf("fake GitHub: %s %s: Authorization is not a Bearer token", r.Method, r.URL.Path)
		return GitHubGrant{}, false
	}
	return f.lookup(token)
}

func (f *GitHub) render(w http.ResponseWriter, name string, data any) {
	body, err := render(name, data)
	if err != nil {
		f.rep.errorf("fake GitHub: rendering %s: %v", name, err)
		GitHubServerError.write(w)
		return
	}
	Response{Status: http.StatusOK, Body: body}.write(w)
}

// gitHubError is GitHub's error body for status.
func gitHubError(status int) string {
	return fmt.Sprintf(`{
  "message": %q,
  "documentation_url": "https://docs.github.com/rest",
  "status": "%d"
}`, http.StatusText(status), status)
}
