package console

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// csp is the console's Content-Security-Policy: its own stylesheet and
// script only (no inline script, no inline style, no other origin), its
// own SVG charts, forms posting only to itself, never framed.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"whenp": func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"join": strings.Join,
	"add":  func(a, b int) int { return a + b },
	// ts shows an RFC 3339 time from a tool's result.
	"ts": func(s string) string {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
}

// pages are the templates, each page's file parsed over layout.html.
var pages = func() map[string]*template.Template {
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	names, _ := fs.Glob(templateFS, "templates/*.html")
	out := map[string]*template.Template{}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" {
			continue
		}
		out[strings.TrimSuffix(base, ".html")] = template.Must(template.Must(layout.Clone()).ParseFS(templateFS, n))
	}
	return out
}()

// view is what every page gets: who is looking, the navigation, and a
// CSRF token maker for its forms; Data is the page's own.
type view struct {
	Title    string
	Nav      string
	Who      string
	Tenant   string
	Role     string
	Admin    bool // may use the admin pages
	Keys     bool // may manage keys of their own
	Operator bool
	Notice   string // one line of good news ("Key revoked.")
	Error    string // what went wrong with the last action
	Data     any
	csrfKey  []byte
}

// CSRF is the token a form posting to action must carry: bound to the
// session (its key) and to the action, so neither another session's token
// nor another form's token passes.
func (v *view) CSRF(action string) string { return csrfToken(v.csrfKey, action) }

func csrfToken(key []byte, action string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("console form:" + action))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// newView is the view for the visitor of ctx (nil before sign-in).
func (c *Console) newView(ctx echo.Context, title, nav string) *view {
	vw := &view{Title: title, Nav: nav}
	if v := visitorOf(ctx); v != nil {
		vw.csrfKey = v.sess.CSRFKey
		vw.Who = v.id.Email
		if v.id.Name != "" {
			vw.Who = v.id.Name + " <" + v.id.Email + ">"
		}
		if vw.Who == "" {
			vw.Who = v.id.Subject
		}
		vw.Operator = v.operator
		if v.m != nil {
			vw.Tenant, vw.Role = v.m.Tenant.Key, string(v.m.Role)
			vw.Admin = c.opts.Tools.Allows("list_members", v.m.Role, v.p.Scopes)
			vw.Keys = c.opts.Tools.Allows("list_my_api_keys", v.m.Role, v.p.Scopes)
		}
	}
	return vw
}

// render writes a page (buffered, so a template failure is a clean 500).
func (c *Console) render(ctx echo.Context, status int, name string, vw *view) error {
	t := pages[name]
	if t == nil {
		return fmt.Errorf("console: no page %q", name)
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout.html", vw); err != nil {
		c.log.Error("console: rendering a page failed", "page", name, "error", err)
		return echo.NewHTTPError(http.StatusInternalServerError)
	}
	pageHeaders(ctx)
	return ctx.HTMLBlob(status, b.Bytes())
}

func pageHeaders(ctx echo.Context) {
	h := ctx.Response().Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "same-origin")
}

// errorPage answers an error under /console as a page (the surface's error
// handler calls it too, for 404s and panics).
func (c *Console) errorPage(ctx echo.Context, status int, msg string) {
	vw := c.newView(ctx, http.StatusText(status), "")
	vw.Data = struct {
		Status  int
		Message string
	}{status, msg}
	if err := c.render(ctx, status, "error", vw); err != nil {
		_ = ctx.String(status, msg)
	}
}

// roleOptions lists the roles up to (and including) r, highest first: what
// a member with role r may give a key.
func roleOptions(r tenancy.Role) []string {
	var out []string
	for _, x := range []tenancy.Role{tenancy.Admin, tenancy.Developer, tenancy.Viewer} {
		if r.Allows(x) {
			out = append(out, string(x))
		}
	}
	return out
}
