package console

import (
	"crypto/hmac"
	"errors"
	"io/fs"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/internal/httpx"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Mount hangs the console's routes off the shared surface: every page and
// action, in one list.
func (c *Console) Mount(e *httpx.Surface) {
	e.ErrorPages("/console", c.errorPage)
	static, _ := fs.Sub(staticFS, "static")
	e.GET("/console/static/*", echo.WrapHandler(http.StripPrefix("/console/static/", http.FileServer(http.FS(static)))), c.staticHeaders)

	g := e.Group("/console", c.pageHeaders)
	g.GET("", c.home)
	g.GET("/", c.home)
	g.GET("/signin", c.signInShow)
	g.GET("/signin/:provider", c.signInStart)
	g.POST("/signout", c.signOut, c.signedIn, c.csrf)
	g.POST("/signout/everywhere", c.signOutEverywhere, c.signedIn, c.csrf)

	m := g.Group("", c.signedIn, c.member, c.csrf)
	m.GET("/connect", c.connectShow)
	m.GET("/signins", c.signInsList, c.allows("list_my_sign_ins"))
	m.POST("/signins/:family/revoke", c.signInRevoke, c.allows("revoke_my_sign_in"))
	m.GET("/keys", c.keyList, c.allows("list_my_api_keys"))
	m.POST("/keys", c.keySave, c.allows("create_my_api_key"), c.freshOnly)
	m.POST("/keys/:id/revoke", c.keyRevoke, c.allows("revoke_my_api_key"))

	a := m.Group("/admin")
	a.GET("/members", c.memberList, c.allows("list_members"))
	a.POST("/members/:id/role", c.memberRoleSave, c.allows("set_member_role"))
	a.POST("/members/:id/remove", c.memberRemove, c.allows("remove_member"), c.freshOnly)
	a.GET("/keys", c.adminKeyList, c.allows("list_api_keys"))
	a.POST("/keys/:id/revoke", c.adminKeyRevoke, c.allows("revoke_api_key"))
	a.POST("/keys/:id/networks", c.adminKeyNetworksSave, c.allows("set_api_key_networks"), c.freshOnly)
	a.GET("/audit", c.auditList, c.allows("read_audit_log"))
	a.GET("/audit/export", c.auditExport, c.allows("read_audit_log"))
	a.GET("/audit/:id", c.auditShow, c.allows("read_audit_log"))
	a.POST("/audit/verify", c.auditVerify, c.allows("read_audit_log"))
	a.GET("/alerts", c.alertList, c.allows("list_alerts"))
	a.POST("/alerts/:id/acknowledge", c.alertAcknowledge, c.allows("acknowledge_alert"))
	a.GET("/search", c.searchShow, c.allows("set_semantic_search"))
	a.POST("/search", c.searchSave, c.allows("set_semantic_search"))
	a.GET("/usage", c.usageShow, c.allows("read_audit_log"), c.allows("get_usage")) // drawn from the audit log

	o := g.Group("/operator", c.signedIn, c.operatorOnly, c.csrf)
	o.GET("", c.operatorTenantList)
	o.POST("/tenants/:key/suspend", c.operatorSuspend)
	o.POST("/tenants/:key/resume", c.operatorResume)
	o.POST("/tenants/:key/limits", c.operatorLimitsSave)
	o.GET("/tenants/:key/export", c.operatorExport)
	o.GET("/tenants/:key/delete", c.operatorDeleteShow)
	o.POST("/tenants/:key/delete", c.operatorDelete, c.freshOnly)
}

func (c *Console) staticHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ctx echo.Context) error {
		ctx.Response().Header().Set("Cache-Control", "public, max-age=3600")
		return next(ctx)
	}
}

// pageHeaders gives every console answer the console's CSP and no-store.
func (c *Console) pageHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ctx echo.Context) error {
		pageHeaders(ctx)
		return next(ctx)
	}
}

// home sends a visitor to their first page, or to sign in.
func (c *Console) home(ctx echo.Context) error {
	v, err := c.loadVisitor(ctx)
	switch {
	case err == nil && v.m == nil && v.operator:
		return ctx.Redirect(http.StatusSeeOther, "/console/operator")
	case err == nil:
		return ctx.Redirect(http.StatusSeeOther, "/console/connect")
	case errors.Is(err, errNoSession):
		return ctx.Redirect(http.StatusSeeOther, "/console/signin")
	}
	return c.unavailable(ctx, "loading a session", err)
}

// signedIn requires a session: a page asks to sign in (and comes back),
// an action is refused.
func (c *Console) signedIn(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ctx echo.Context) error {
		v, err := c.loadVisitor(ctx)
		if errors.Is(err, errNoSession) {
			if ctx.Request().Method == http.MethodGet {
				return ctx.Redirect(http.StatusSeeOther, "/console/signin?next="+url.QueryEscape(ctx.Request().URL.RequestURI()))
			}
			return echo.NewHTTPError(http.StatusUnauthorized, "Your session has ended. Sign in again.")
		}
		if err != nil {
			return c.unavailable(ctx, "loading a session", err)
		}
		ctx.Set(visitorKey, v)
		return next(ctx)
	}
}

// member requires that the visitor is, right now, a member of the tenant
// they signed in to: a member removed (or a tenant suspended) while
// signed in is refused on their next page.
func (c *Console) member(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ctx echo.Context) error {
		v := visitorOf(ctx)
		switch {
		case v.m != nil:
			return next(ctx)
		case errors.Is(v.placeErr, tenancy.ErrRemoved):
			return echo.NewHTTPError(http.StatusForbidden, "An admin of your organisation removed you from it; ask them to restore you.")
		case errors.Is(v.placeErr, tenancy.ErrSuspended):
			return echo.NewHTTPError(http.StatusForbidden, "Your organisation's access to Gatehouse is suspended by the operator.")
		case errors.Is(v.placeErr, errMoved), errors.Is(v.placeErr, tenancy.ErrSignupRefused), errors.Is(v.placeErr, tenancy.ErrNoTenant),
			errors.Is(v.placeErr, tenancy.ErrTenantNotFound):
			return echo.NewHTTPError(http.StatusForbidden, "You no longer belong to the organisation you signed in to. Sign out and sign in again.")
		}
		return c.unavailable(ctx, "placing a member", v.placeErr)
	}
}

// allows lets only visitors whose role and scopes allow tool through: the
// same rule as the tool itself (which checks again when called).
func (c *Console) allows(tool string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(ctx echo.Context) error {
			v := visitorOf(ctx)
			if !c.opts.Tools.Allows(tool, v.m.Role, v.p.Scopes) {
				return echo.NewHTTPError(http.StatusForbidden, "This page is for members whose role allows "+tool+"; yours is "+string(v.m.Role)+".")
			}
			return next(ctx)
		}
	}
}

// operatorOnly lets only the operators named in GATEHOUSE_OPERATORS in.
func (c *Console) operatorOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ctx echo.Context) error {
		if !visitorOf(ctx).operator {
			return echo.NewHTTPError(http.StatusForbidden, "The operator pages are for the people named in GATEHOUSE_OPERATORS.")
		}
		return next(ctx)
	}
}

// csrf checks every POST: the form's token must be this session's token
// for this action, and a browser-sent Origin must be the console's own.
func (c *Console) csrf(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ctx echo.Context) error {
		r := ctx.Request()
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return next(ctx)
		}
		if o := r.Header.Get("Origin"); o != "" && o != c.origin {
			return echo.NewHTTPError(http.StatusForbidden, "This form was sent from another site.")
		}
		v := visitorOf(ctx)
		want := csrfToken(v.sess.CSRFKey, r.URL.Path)
		// From the body only: a token in the URL would leak through logs and
		// Referer, and a link could carry it.
		if !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(want)) {
			return echo.NewHTTPError(http.StatusForbidden, "This form did not come from your console page (or your session changed). Reload the page and try again.")
		}
		return next(ctx)
	}
}

// freshOnly requires a sign-in within FreshSignIn for sensitive actions:
// otherwise the person signs in again and comes back to the page.
func (c *Console) freshOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ctx echo.Context) error {
		if c.fresh(visitorOf(ctx)) {
			return next(ctx)
		}
		back := ctx.Request().PostFormValue("back")
		if back == "" {
			back = ctx.Request().URL.Path
		}
		return ctx.Redirect(http.StatusSeeOther, "/console/signin?fresh=1&next="+url.QueryEscape(safeNext(back)))
	}
}

// unavailable answers a failure on Gatehouse's side: logged with what was
// being done, a page asking to try again.
func (c *Console) unavailable(ctx echo.Context, doing string, err error) error {
	c.log.Error("console: "+doing+" failed", "request_id", httpx.RequestInfo(ctx).ID, "error", err)
	return echo.NewHTTPError(http.StatusServiceUnavailable, "The console is unavailable right now; please try again.")
}
