package console

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/internal/httpx"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// cookieName is the session cookie's name. Over https it is a __Host-
// cookie: Secure, Path=/, no Domain, so no subdomain and no plain-http
// page can set or overwrite it. Browsers accept __Host- cookies only with
// Secure, which a plain-http development server (http://localhost) cannot
// use; there the cookie is "gatehouse-console" (still HttpOnly,
// SameSite=Lax, Path=/, host-only). docs/console.md says so.
func (c *Console) cookieName() string {
	if c.secure {
		return "__Host-gatehouse-console"
	}
	return "gatehouse-console"
}

func (c *Console) setCookie(ctx echo.Context, value string, maxAge int) {
	http.SetCookie(ctx.Response(), &http.Cookie{Name: c.cookieName(), Value: value, Path: "/", HttpOnly: true,
		Secure: c.secure, SameSite: http.SameSiteLaxMode, MaxAge: maxAge})
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sessionHash(id string) []byte {
	h := sha256.Sum256([]byte("console session:" + id))
	return h[:]
}

// visitor is the person a request comes from, established per request
// from their session: their identity, where the usual rules place them now
// (a role change or removal takes effect on the next page), and the scopes
// their role can use.
type visitor struct {
	sess     *store.ConsoleSession
	id       authserver.Identity
	p        *identity.Principal
	m        *tenancy.Membership // nil when placement failed (placeErr)
	placeErr error
	operator bool
	origin   httpx.Origin
}

const visitorKey = "console.visitor"

func visitorOf(ctx echo.Context) *visitor {
	v, _ := ctx.Get(visitorKey).(*visitor)
	return v
}

// signInFinish receives a person the authorization server signed in for
// the console: a new session, then the page they were going to.
func (c *Console) signInFinish(w http.ResponseWriter, r *http.Request, p *identity.Principal, place authserver.Placement, state string) {
	id := authserver.Identity{Provider: p.Provider, Subject: p.Subject, Email: p.Email, EmailVerified: p.EmailVerified, Name: p.Name}
	id.HD, _ = p.Claims["hd"].(string)
	raw, _ := json.Marshal(id)
	token := randomToken(32)
	s := &store.ConsoleSession{IDHash: sessionHash(token), Subject: p.Subject, Identity: raw, TenantKey: place.Tenant,
		CSRFKey: []byte(randomToken(32)), ExpiresAt: time.Now().Add(c.opts.AbsoluteTimeout), UserAgent: r.UserAgent()}
	if err := c.opts.DB.CreateConsoleSession(r.Context(), s); err != nil {
		c.log.Error("console: storing a session failed", "error", err)
		http.Error(w, "The console is unavailable right now; please try again.", http.StatusServiceUnavailable)
		return
	}
	// The previous session of this browser (a sign-in again, for a fresh
	// sign-in) ends.
	if old, err := r.Cookie(c.cookieName()); err == nil && old.Value != "" {
		_ = c.opts.DB.DeleteConsoleSession(r.Context(), sessionHash(old.Value))
	}
	http.SetCookie(w, &http.Cookie{Name: c.cookieName(), Value: token, Path: "/", HttpOnly: true,
		Secure: c.secure, SameSite: http.SameSiteLaxMode, MaxAge: int(c.opts.AbsoluteTimeout.Seconds())})
	c.log.Info("console: signed in", "subject", p.Subject, "tenant", place.Tenant, "role", place.Role)
	http.Redirect(w, r, safeNext(state), http.StatusSeeOther)
}

// safeNext is where to go after signing in: a path of the console, never
// another site (no scheme, no host, no //, no backslash tricks).
func safeNext(next string) string {
	const home = "/console/"
	if next == "" || len(next) > 1024 {
		return home
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return home
	}
	if clean := path.Clean(u.Path); clean != u.Path && clean+"/" != u.Path || !(clean == "/console" || strings.HasPrefix(clean, home)) {
		return home
	}
	for _, ch := range next {
		if ch == '\\' || ch < ' ' || ch == 0x7f {
			return home
		}
	}
	if len(next) > 1 && next[1] == '/' {
		return home
	}
	return u.RequestURI()
}

var errNoSession = errors.New("no session")

// loadVisitor establishes the visitor from the session cookie; the
// session's idle time is refreshed at most once a minute.
func (c *Console) loadVisitor(ctx echo.Context) (*visitor, error) {
	r := ctx.Request()
	ck, err := r.Cookie(c.cookieName())
	if err != nil || ck.Value == "" || len(ck.Value) > 100 {
		return nil, errNoSession
	}
	h := sessionHash(ck.Value)
	s, err := c.opts.DB.FindConsoleSession(r.Context(), h, c.opts.IdleTimeout)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNoSession
	}
	if err != nil {
		return nil, err
	}
	if time.Since(s.LastSeenAt) > time.Minute {
		if err := c.opts.DB.TouchConsoleSession(r.Context(), h); err != nil {
			c.log.Warn("console: touching a session failed", "error", err)
		}
	}
	v := &visitor{sess: s, operator: c.isOperator(s.Subject)}
	if err := json.Unmarshal(s.Identity, &v.id); err != nil {
		return nil, err
	}
	v.p = v.id.Principal(nil, s.ExpiresAt)
	m, err := c.opts.Tenancy.Resolve(r.Context(), v.p)
	switch {
	case err == nil && m.Tenant.Key != s.TenantKey:
		v.placeErr = errMoved
	case err != nil:
		v.placeErr = err
	default:
		v.m = m
		v.p.Scopes = c.opts.RoleScopes(m.Role)
	}
	ri := httpx.RequestInfo(ctx)
	ri.Subject = s.Subject
	if v.m != nil {
		ri.Tenant = v.m.Tenant.Key
	}
	v.origin = httpx.Origin{Via: "console", RequestID: ri.ID, ClientIP: ctx.RealIP(), UserAgent: r.UserAgent()}
	return v, nil
}

var errMoved = errors.New("placed in another tenant now")

// fresh reports whether the visitor signed in within FreshSignIn.
func (c *Console) fresh(v *visitor) bool {
	return time.Since(v.sess.SignedInAt) <= c.opts.FreshSignIn
}
