package auth0_test

import (
	"cmp"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
)

// user is an Auth0 user as /userinfo describes it.
type user struct {
	Sub         string
	Email       string // "": the token was granted without the email scope
	Name        string
	UserInfoSub string // sub in the /userinfo answer; "": Sub
}

// fakeAuth0 plays Auth0's /userinfo on an idptest issuer's mux: it answers
// in the documented shape for the tokens it has issued, checks the Bearer
// header, and counts calls.
type fakeAuth0 struct {
	t   *testing.T
	iss *idptest.Issuer

	mu     sync.Mutex
	tokens map[string]user
	force  int           // status to answer; 0: none
	delay  time.Duration // before answering
	calls  int
}

func newFake(t *testing.T, iss *idptest.Issuer) *fakeAuth0 {
	f := &fakeAuth0{t: t, iss: iss, tokens: map[string]user{}}
	iss.Mux.HandleFunc("GET /userinfo", f.userInfo)
	return f
}

// mint signs an access token for u with aud and extra claims, and lets
// /userinfo describe u to its bearer.
func (f *fakeAuth0) mint(u user, aud any, extra map[string]any) string {
	tok := f.iss.Sign(f.iss.Claims(u.Sub, aud, extra))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[tok] = u
	return tok
}

func (f *fakeAuth0) fail(status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.force = status
}

func (f *fakeAuth0) slow(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

func (f *fakeAuth0) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// userInfo is GET /userinfo with the access token as Bearer.
func (f *fakeAuth0) userInfo(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		f.t.Errorf("userinfo: Authorization is not a Bearer token")
	}
	f.mu.Lock()
	f.calls++
	u, known := f.tokens[token]
	forced, delay := f.force, f.delay
	f.mu.Unlock()
	time.Sleep(delay)
	switch {
	case forced != 0:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(forced)
		_, _ = w.Write([]byte(`{"error":"too_many_requests","error_description":"Too Many Requests"}`))
	case !known:
		w.Header().Set("WWW-Authenticate", `Bearer realm="Auth0", error="invalid_token", error_description="Invalid token"`)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	default:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(userInfoAnswer(u))
	}
}

// userInfoAnswer follows Auth0's documented /userinfo example: the profile
// claims the token's scopes allow (email only with the email scope).
func userInfoAnswer(u user) map[string]any {
	given, family, _ := strings.Cut(u.Name, " ")
	a := map[string]any{
		"sub":         cmp.Or(u.UserInfoSub, u.Sub),
		"name":        u.Name,
		"given_name":  given,
		"family_name": family,
		"nickname":    strings.ToLower(given),
		"picture":     "http://exampleco.com/janedoe/me.jpg",
		"updated_at":  "1556845729",
	}
	if u.Email != "" {
		a["email"] = u.Email
		a["email_verified"] = true
	}
	return a
}
