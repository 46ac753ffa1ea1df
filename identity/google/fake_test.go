package google_test

import (
	"cmp"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
)

// Gatehouse's OAuth client, and another application's.
const (
	clientID      = "407408718192.apps.googleusercontent.com"
	otherClientID = "1234987819200-other.apps.googleusercontent.com"
)

// Endpoints of the fake, for counting calls and forcing answers.
const (
	epTokenInfo = "tokeninfo"
	epUserInfo  = "userinfo"
)

// grant is an access token the fake Google has issued.
type grant struct {
	Sub         string
	Aud, Azp    string // "": clientID
	NoAzp       bool   // leave azp out of the tokeninfo answer
	Scope       string
	Expiry      time.Time // zero: in an hour
	Email       string
	Name        string
	HD          string // "": a consumer account (hd absent)
	UserInfoSub string // sub in the userinfo answer; "": Sub
}

// fakeGoogle plays Google's tokeninfo and userinfo endpoints on an idptest
// issuer's mux: it answers in Google's documented shapes, checks what
// Gatehouse sends, and counts calls.
type fakeGoogle struct {
	t *testing.T

	mu     sync.Mutex
	grants map[string]grant
	force  map[string]int // endpoint → status to answer
	calls  map[string]int
}

func newFake(t *testing.T, iss *idptest.Issuer) *fakeGoogle {
	f := &fakeGoogle{t: t, grants: map[string]grant{}, force: map[string]int{}, calls: map[string]int{}}
	iss.Mux.HandleFunc("POST /tokeninfo", f.tokenInfo)
	iss.Mux.HandleFunc("GET /userinfo", f.userInfo)
	return f
}

func (f *fakeGoogle) issue(token string, g grant) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants[token] = g
}

// fail makes endpoint ep answer status from now on.
func (f *fakeGoogle) fail(ep string, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.force[ep] = status
}

func (f *fakeGoogle) count(ep string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[ep]
}

// enter counts a call and reports a forced status, if any.
func (f *fakeGoogle) enter(ep, token string) (grant, bool, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[ep]++
	g, ok := f.grants[token]
	if ok && g.Expiry.IsZero() {
		g.Expiry = time.Now().Add(time.Hour)
	}
	return g, ok && time.Now().Before(g.Expiry), f.force[ep]
}

// tokenInfo is POST /tokeninfo with the form body access_token=<token>.
func (f *fakeGoogle) tokenInfo(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" {
		f.t.Errorf("tokeninfo: query string %q: the token must not be sent in the URL", r.URL.RawQuery)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		f.t.Errorf("tokeninfo: Content-Type = %q, want a form", ct)
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("access_token") == "" {
		f.t.Errorf("tokeninfo: no access_token in the form body (%v)", err)
	}
	g, ok, forced := f.enter(epTokenInfo, r.PostForm.Get("access_token"))
	switch {
	case forced != 0:
		answer(w, forced, map[string]any{"error": "backend_error"})
	case !ok:
		answer(w, http.StatusBadRequest, map[string]any{"error": "invalid_token", "error_description": "Invalid Value"})
	default:
		answer(w, http.StatusOK, tokenInfoAnswer(g))
	}
}

// tokenInfoAnswer is Google's documented success shape: numbers and
// booleans as strings.
func tokenInfoAnswer(g grant) map[string]any {
	a := map[string]any{
		"azp":            cmp.Or(g.Azp, g.Aud, clientID),
		"aud":            cmp.Or(g.Aud, clientID),
		"sub":            g.Sub,
		"scope":          g.Scope,
		"exp":            strconv.FormatInt(g.Expiry.Unix(), 10),
		"expires_in":     strconv.Itoa(int(time.Until(g.Expiry).Seconds())),
		"email":          g.Email,
		"email_verified": "true",
		"access_type":    "online",
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
func (f *fakeGoogle) userInfo(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		f.t.Errorf("userinfo: Authorization is not a Bearer token")
	}
	g, ok, forced := f.enter(epUserInfo, token)
	switch {
	case forced != 0:
		answer(w, forced, map[string]any{"error": "insufficient_scope"})
	case !ok:
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/", error="invalid_token"`)
		answer(w, http.StatusUnauthorized, map[string]any{"error": "invalid_request", "error_description": "Invalid Credentials"})
	default:
		answer(w, http.StatusOK, userInfoAnswer(g))
	}
}

func userInfoAnswer(g grant) map[string]any {
	given, family, _ := strings.Cut(g.Name, " ")
	a := map[string]any{
		"sub":            cmp.Or(g.UserInfoSub, g.Sub),
		"name":           g.Name,
		"given_name":     given,
		"family_name":    family,
		"picture":        "https://lh3.googleusercontent.com/a/default-user=s96-c",
		"email":          g.Email,
		"email_verified": true,
		"locale":         "en",
	}
	if g.HD != "" {
		a["hd"] = g.HD
	}
	return a
}

func answer(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
