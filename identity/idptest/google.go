package idptest

import (
	"cmp"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// GoogleGrant is a Google OAuth access token: whose it is, to which client
// it was issued, and with which scopes.
type GoogleGrant struct {
	// Sub is the user's Google account id; "": tokeninfo names no user, as
	// for a token granted without the openid, email or profile scope.
	Sub string
	// Email is the account's email; "": none is sent.
	Email string
	// UnverifiedEmail sends email_verified false.
	UnverifiedEmail bool
	// Name is the user's full name ("Given Family").
	Name string
	// HD is the Google Workspace hosted domain; "": a consumer account (no hd).
	HD string
	// Aud is the client id the token was issued to; "": the one given to
	// NewGoogle.
	Aud string
	// Azp is the authorized party; "": Aud.
	Azp string
	// NoAzp leaves azp out of the tokeninfo answer.
	NoAzp bool
	// Scope is the space-separated granted scopes.
	Scope string
	// Expiry is when the token expires; zero: an hour after Issue.
	Expiry time.Time
	// UserInfoSub is the sub userinfo answers; "": Sub.
	UserInfoSub string
}

// Google imitates Google's token info endpoint (POST /tokeninfo) and
// OpenID Connect userinfo endpoint (GET /userinfo) on an [Issuer], which
// also serves discovery and the keys of Google ID tokens. It answers in
// Google's documented shapes, records a test error for any request that does
// not carry what Gatehouse must send (the token in a POST form for
// tokeninfo, never in the URL; a Bearer token for userinfo), and counts
// calls. It is safe for concurrent use.
type Google struct {
	// TokenInfo is POST /tokeninfo.
	TokenInfo *Endpoint
	// UserInfo is GET /userinfo.
	UserInfo *Endpoint

	iss      *Issuer
	clientID string
	rep      *reporter

	mu     sync.Mutex
	grants map[string]GoogleGrant
}

const googleContentType = "application/json; charset=UTF-8"

// NewGoogle registers Google's endpoints on iss (one Google per issuer);
// clientID is Gatehouse's OAuth client, the default audience of the tokens
// it issues.
func NewGoogle(tb testing.TB, iss *Issuer, clientID string) *Google {
	tb.Helper()
	f := &Google{
		TokenInfo: newEndpoint(googleContentType, func(int) string { return `{"error":"backend_error"}` }),
		UserInfo:  newEndpoint(googleContentType, func(int) string { return `{"error":"insufficient_scope"}` }),
		iss:       iss,
		clientID:  clientID,
		rep:       newReporter(tb),
		grants:    map[string]GoogleGrant{},
	}
	iss.Mux.HandleFunc("POST /tokeninfo", f.tokenInfo)
	iss.Mux.HandleFunc("GET /userinfo", f.userInfo)
	return f
}

// TokenInfoURL is the token info endpoint, for google.Config.TokenInfoURL.
func (f *Google) TokenInfoURL() string { return f.iss.ServerURL() + "/tokeninfo" }

// UserInfoURL is the userinfo endpoint, for google.Config.UserInfoURL.
func (f *Google) UserInfoURL() string { return f.iss.ServerURL() + "/userinfo" }

// Issue returns a new access token ("ya29.…") described by g.
func (f *Google) Issue(g GoogleGrant) string {
	token := "ya29.a0" + rand.Text() + rand.Text()
	if g.Expiry.IsZero() {
		g.Expiry = time.Now().Add(time.Hour)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants[token] = g
	return token
}

// Revoke forgets token: Google answers as for a token it never issued.
func (f *Google) Revoke(token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.grants, token)
}

// lookup returns the grant of a live token.
func (f *Google) lookup(token string) (GoogleGrant, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g, ok := f.grants[token]
	return g, ok && time.Now().Before(g.Expiry)
}

// tokenInfo is POST /tokeninfo with the form body access_token=<token>.
func (f *Google) tokenInfo(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" {
		f.rep.errorf("fake Google: tokeninfo: query string %q: the token must not be sent in the URL", r.URL.RawQuery)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		f.rep.errorf("fake Google: tokeninfo: Content-Type = %q, want a form", ct)
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("access_token") == "" {
		f.rep.errorf("fake Google: tokeninfo: no access_token in the form body (%v)", err)
	}
	if f.TokenInfo.enter(w, r) {
		return
	}
	g, ok := f.lookup(r.PostForm.Get("access_token"))
	if !ok {
		googleAnswer(w, http.StatusBadRequest, map[string]any{"error": "invalid_token", "error_description": "Invalid Value"})
		return
	}
	googleAnswer(w, http.StatusOK, f.tokenInfoAnswer(g))
}

// tokenInfoAnswer is Google's documented success shape: numbers and
// booleans as strings.
func (f *Google) tokenInfoAnswer(g GoogleGrant) map[string]any {
	a := map[string]any{
		"azp":         cmp.Or(g.Azp, g.Aud, f.clientID),
		"aud":         cmp.Or(g.Aud, f.clientID),
		"sub":         g.Sub,
		"scope":       g.Scope,
		"exp":         strconv.FormatInt(g.Expiry.Unix(), 10),
		"expires_in":  strconv.Itoa(int(time.Until(g.Expiry).Seconds())),
		"access_type": "online",
	}
	if g.Email != "" {
		a["email"] = g.Email
		a["email_verified"] = strconv.FormatBool(!g.UnverifiedEmail)
	}
	if g.NoAzp {
		delete(a, "azp")
	}
	if g.Sub == "" {
		delete(a, "sub")
	}
	return a
}

// userInfo is GET /userinfo with the token as Bearer.
func (f *Google) userInfo(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		f.rep.errorf("fake Google: userinfo: Authorization is not a Bearer token")
	}
	if f.UserInfo.enter(w, r) {
		return
	}
	g, ok := f.lookup(token)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/", error="invalid_token"`)
		googleAnswer(w, http.StatusUnauthorized, map[string]any{"error": "invalid_request", "error_description": "Invalid Credentials"})
		return
	}
	googleAnswer(w, http.StatusOK, userInfoAnswer(g))
}

// userInfoAnswer is the documented OpenID Connect userinfo shape.
func userInfoAnswer(g GoogleGrant) map[string]any {
	given, family, _ := strings.Cut(g.Name, " ")
	a := map[string]any{
		"sub":         cmp.Or(g.UserInfoSub, g.Sub),
		"name":        g.Name,
		"given_name":  given,
		"family_name": family,
		"picture":     "https://lh3.googleusercontent.com/a/default-user=s96-c",
		"locale":      "en",
	}
	if g.Email != "" {
		a["email"] = g.Email
		a["email_verified"] = !g.UnverifiedEmail
	}
	if g.HD != "" {
		a["hd"] = g.HD
	}
	return a
}

func googleAnswer(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", googleContentType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
