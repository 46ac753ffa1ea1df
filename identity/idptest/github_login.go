package idptest

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// GitHubLogin is GitHub's OAuth web flow on a [GitHub] fake: "Request a
// user's GitHub identity" (GET /login/oauth/authorize, which signs in
// whoever [GitHubLogin.SignInAs] names without asking) and "Use the
// authorization code" (POST /login/oauth/access_token), answered as GitHub
// documents: form-encoded unless the client accepts JSON, and errors such
// as bad_verification_code with status 200. A token it issues is a live
// token of the REST API fake. Both live on the web host, not under the
// REST API's prefix (GitHub Enterprise: https://HOST/login/oauth/…).
type GitHubLogin struct {
	// Authorize and AccessToken count and can fail the two endpoints.
	Authorize, AccessToken *Endpoint

	gh          *GitHub
	redirectURI string

	mu    sync.Mutex
	user  GitHubGrant
	codes map[string]gitHubCode
}

type gitHubCode struct {
	grant                          GitHubGrant
	redirect, challenge, challMeth string
	expires                        time.Time
}

// EnableLogin adds the OAuth web flow for the fake's app, whose callback
// URL is redirectURI (empty: any).
func (f *GitHub) EnableLogin(redirectURI string) *GitHubLogin {
	l := &GitHubLogin{
		Authorize:   newEndpoint("text/html; charset=utf-8", func(int) string { return "<html>error</html>" }),
		AccessToken: newEndpoint("application/json; charset=utf-8", gitHubError),
		gh:          f, redirectURI: redirectURI, codes: map[string]gitHubCode{},
	}
	f.mux.HandleFunc("GET /login/oauth/authorize", l.authorize)
	f.mux.HandleFunc("POST /login/oauth/access_token", l.accessToken)
	return l
}

// WebURL is the web host the flow lives on (GATEHOUSE_GITHUB_WEB_URL).
func (f *GitHub) WebURL() string { return f.srv.URL }

// SignInAs sets who the next sign-ins are.
func (l *GitHubLogin) SignInAs(g GitHubGrant) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.user = g
}

func (l *GitHubLogin) authorize(w http.ResponseWriter, r *http.Request) {
	if l.Authorize.enter(w, r) {
		return
	}
	q := r.URL.Query()
	redirect := q.Get("redirect_uri")
	if q.Get("client_id") != l.gh.clientID {
		l.gh.rep.errorf("fake GitHub: authorize for client %q, not %q", q.Get("client_id"), l.gh.clientID)
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	if l.redirectURI != "" && redirect != l.redirectURI {
		// GitHub shows a page ("redirect_uri is not associated with this
		// application") rather than redirecting.
		l.gh.rep.errorf("fake GitHub: redirect_uri %q is not the app's callback %q", redirect, l.redirectURI)
		http.Error(w, "The redirect_uri is not associated with this application.", http.StatusBadRequest)
		return
	}
	if q.Get("state") == "" || q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256" {
		l.gh.rep.errorf("fake GitHub: authorize without state or an S256 code_challenge: %s", q.Encode())
	}
	code := randomHex(20)
	l.mu.Lock()
	l.codes[code] = gitHubCode{grant: l.user, redirect: redirect, challenge: q.Get("code_challenge"), challMeth: q.Get("code_challenge_method"),
		expires: time.Now().Add(10 * time.Minute)}
	l.mu.Unlock()
	u, _ := url.Parse(redirect)
	v := u.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// accessToken is POST /login/oauth/access_token.
func (l *GitHubLogin) accessToken(w http.ResponseWriter, r *http.Request) {
	if l.AccessToken.enter(w, r) {
		return
	}
	_ = r.ParseForm()
	f := r.PostForm
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = f.Get("client_id"), f.Get("client_secret")
	}
	json := strings.Contains(r.Header.Get("Accept"), "json")
	answer := func(v url.Values) {
		if json {
			m := map[string]string{}
			for k := range v {
				m[k] = v.Get(k)
			}
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			writeJSONBody(w, m)
			return
		}
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		_, _ = w.Write([]byte(v.Encode()))
	}
	fail := func(code, description, anchor string) {
		answer(url.Values{"error": {code}, "error_description": {description},
			"error_uri": {"https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#" + anchor}})
	}
	if id != l.gh.clientID || secret != l.gh.clientSecret {
		fail("incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.", "incorrect-client-credentials")
		return
	}
	l.mu.Lock()
	c, ok := l.codes[f.Get("code")]
	delete(l.codes, f.Get("code"))
	l.mu.Unlock()
	if !ok || time.Now().After(c.expires) {
		fail("bad_verification_code", "The code passed is incorrect or expired.", "bad-verification-code")
		return
	}
	if f.Get("redirect_uri") != "" && f.Get("redirect_uri") != c.redirect {
		fail("redirect_uri_mismatch", "The redirect_uri MUST match the registered callback URL for this application.", "redirect-uri-mismatch")
		return
	}
	sum := sha256.Sum256([]byte(f.Get("code_verifier")))
	if c.challenge != "" && base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
		fail("bad_verification_code", "The code passed is incorrect or expired.", "bad-verification-code")
		return
	}
	token := "gho_" + randomAlnum(36)
	l.gh.Issue(token, c.grant)
	answer(url.Values{"access_token": {token}, "scope": {"read:user,user:email"}, "token_type": {"bearer"}})
}
