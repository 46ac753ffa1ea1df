package idptest

import (
	"cmp"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Auth0User is an Auth0 user as /userinfo describes them.
type Auth0User struct {
	Sub string
	// Email is the user's email; "": none is sent, as for a token granted
	// without the email scope.
	Email string
	// UnverifiedEmail sends email_verified false.
	UnverifiedEmail bool
	// Name is the user's full name ("Given Family").
	Name string
	// UserInfoSub is the sub /userinfo answers; "": Sub.
	UserInfoSub string
}

// Auth0 imitates an Auth0 tenant: its [Issuer] signs access tokens and
// serves discovery and keys, and Auth0 adds /userinfo, which answers in
// Auth0's documented shape for the tokens minted by [Auth0.Mint], records a
// test error for a request without a Bearer token, and counts calls. It is
// safe for concurrent use.
type Auth0 struct {
	// UserInfo is GET /userinfo.
	UserInfo *Endpoint

	iss *Issuer
	rep *reporter

	mu     sync.Mutex
	tokens map[string]Auth0User
}

// NewAuth0 registers /userinfo on iss (one Auth0 per issuer), which must
// have been created with Options{Suffix: "/"}: Auth0's issuers end with a
// slash.
func NewAuth0(tb testing.TB, iss *Issuer) *Auth0 {
	tb.Helper()
	if !strings.HasSuffix(iss.URL, "/") {
		tb.Fatalf("idptest.NewAuth0: issuer %q does not end with /; create it with Options{Suffix: \"/\"}", iss.URL)
	}
	f := &Auth0{
		UserInfo: newEndpoint("application/json; charset=utf-8", func(int) string {
			return `{"error":"too_many_requests","error_description":"Too Many Requests"}`
		}),
		iss:    iss,
		rep:    newReporter(tb),
		tokens: map[string]Auth0User{},
	}
	iss.Mux.HandleFunc("GET /userinfo", f.userInfo)
	return f
}

// UserInfoURL is the /userinfo endpoint (auth0.Config's default for the
// issuer).
func (f *Auth0) UserInfoURL() string { return f.iss.ServerURL() + "/userinfo" }

// Mint signs an access token for u (sub u.Sub) with aud (a string or a
// list) and extra claims, as [Issuer.Claims] takes them, and lets /userinfo
// describe u to its bearer.
func (f *Auth0) Mint(u Auth0User, aud any, extra map[string]any) string {
	tok := f.iss.Sign(f.iss.Claims(u.Sub, aud, extra))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[tok] = u
	return tok
}

// userInfo is GET /userinfo with the access token as Bearer.
func (f *Auth0) userInfo(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		f.rep.errorf("fake Auth0: userinfo: Authorization is not a Bearer token")
	}
	f.mu.Lock()
	u, known := f.tokens[token]
	f.mu.Unlock()
	if f.UserInfo.enter(w, r) {
		return
	}
	if !known {
		w.Header().Set("WWW-Authenticate", `Bearer realm="Auth0", error="invalid_token", error_description="Invalid token"`)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(auth0UserInfo(u))
}

// auth0UserInfo follows Auth0's documented /userinfo example: the profile
// claims the token's scopes allow (email only with the email scope).
func auth0UserInfo(u Auth0User) map[string]any {
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
		a["email_verified"] = !u.UnverifiedEmail
	}
	return a
}
