package idptest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Login is an issuer's sign-in: an authorization endpoint that signs in
// whoever [Login.SignInAs] names without asking (auto-login), and a token
// endpoint that exchanges the code for an ID token (and an access token).
// It follows OpenID Connect's authorization code flow with PKCE, and
// records a test error when the client does not: an unknown client_id, a
// redirect_uri other than the one registered, no S256 code_challenge, a
// wrong client secret or code_verifier.
type Login struct {
	// Authorize is GET /authorize; Token is POST /token.
	Authorize, Token *Endpoint
	// AccessToken, if set, makes the access token for a sign-in (Auth0
	// mints a JWT for the requested audience); default an opaque string.
	AccessToken func(sub string, claims map[string]any, audience string) string

	iss                                 *Issuer
	rep                                 *reporter
	clientID, clientSecret, redirectURI string

	mu     sync.Mutex
	sub    string
	claims map[string]any
	codes  map[string]loginCode
	denied string
}

type loginCode struct {
	sub                           string
	claims                        map[string]any
	challenge, redirect, audience string
	nonce                         string
	expires                       time.Time
}

// EnableLogin adds sign-in to iss for one registered client, whose only
// redirect URI is redirectURI (empty: any), and advertises the endpoints in
// discovery.
func (i *Issuer) EnableLogin(tb testing.TB, clientID, clientSecret, redirectURI string) *Login {
	tb.Helper()
	l := &Login{
		Authorize: newEndpoint("application/json", func(int) string { return `{"error":"server_error"}` }),
		Token:     newEndpoint("application/json", func(int) string { return `{"error":"server_error"}` }),
		iss:       i, rep: newReporter(tb), clientID: clientID, clientSecret: clientSecret, redirectURI: redirectURI,
		codes: map[string]loginCode{},
	}
	i.mu.Lock()
	i.login = l
	i.mu.Unlock()
	i.Mux.HandleFunc("GET /authorize", l.authorize)
	i.Mux.HandleFunc("POST /token", l.token)
	return l
}

// SignInAs sets who the next sign-ins are: sub and the ID token's other
// claims (email, email_verified, hd, name…).
func (l *Login) SignInAs(sub string, claims map[string]any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sub, l.claims, l.denied = sub, claims, ""
}

// Deny makes the next sign-ins end with error=access_denied, as when the
// person clicks "Cancel" at the provider.
func (l *Login) Deny() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.denied = "access_denied"
}

func (l *Login) authorize(w http.ResponseWriter, r *http.Request) {
	if l.Authorize.enter(w, r) {
		return
	}
	q := r.URL.Query()
	redirect := q.Get("redirect_uri")
	switch {
	case q.Get("client_id") != l.clientID:
		l.rep.errorf("idptest login: authorize for client %q, not %q", q.Get("client_id"), l.clientID)
		http.Error(w, "unknown client", http.StatusBadRequest)
		return
	case l.redirectURI != "" && redirect != l.redirectURI:
		l.rep.errorf("idptest login: redirect_uri %q is not the registered %q", redirect, l.redirectURI)
		http.Error(w, "redirect_uri mismatch", http.StatusBadRequest)
		return
	case q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "":
		l.rep.errorf("idptest login: authorize without response_type=code, PKCE S256 or state: %s", q.Encode())
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	u, _ := url.Parse(redirect)
	v := u.Query()
	v.Set("state", q.Get("state"))
	l.mu.Lock()
	if l.denied != "" {
		v.Set("error", l.denied)
	} else {
		code := randomToken()
		l.codes[code] = loginCode{sub: l.sub, claims: l.claims, challenge: q.Get("code_challenge"), redirect: redirect,
			audience: q.Get("audience"), nonce: q.Get("nonce"), expires: time.Now().Add(time.Minute)}
		v.Set("code", code)
	}
	l.mu.Unlock()
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (l *Login) token(w http.ResponseWriter, r *http.Request) {
	if l.Token.enter(w, r) {
		return
	}
	_ = r.ParseForm()
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != l.clientID || secret != l.clientSecret {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	l.mu.Lock()
	c, ok := l.codes[r.PostForm.Get("code")]
	delete(l.codes, r.PostForm.Get("code"))
	l.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if !ok || time.Now().After(c.expires) || r.PostForm.Get("grant_type") != "authorization_code" ||
		r.PostForm.Get("redirect_uri") != c.redirect || base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
		if ok {
			l.rep.errorf("idptest login: token request with a wrong grant_type, redirect_uri or code_verifier")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
		return
	}
	extra := map[string]any{}
	for k, v := range c.claims {
		extra[k] = v
	}
	if c.nonce != "" {
		extra["nonce"] = c.nonce
	}
	access := randomToken()
	if l.AccessToken != nil {
		access = l.AccessToken(c.sub, c.claims, c.audience)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, map[string]any{
		"access_token": access, "token_type": "Bearer", "expires_in": 3600, "scope": "openid email profile",
		"id_token": l.iss.Sign(l.iss.Claims(c.sub, l.clientID, extra)),
	})
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func randomHex(n int) string {
	const hex = "0123456789abcdef"
	return randomFrom(hex, n)
}

func randomAlnum(n int) string {
	return randomFrom("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", n)
}

func randomFrom(alphabet string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func writeJSONBody(w http.ResponseWriter, v any) {
	_ = json.NewEncoder(w).Encode(v)
}
