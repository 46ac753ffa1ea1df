package console

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// signOut ends this browser's session.
func (c *Console) signOut(ctx echo.Context) error {
	v := visitorOf(ctx)
	if err := c.opts.DB.DeleteConsoleSession(ctx.Request().Context(), v.sess.IDHash); err != nil {
		return c.unavailable(ctx, "signing out", err)
	}
	c.setCookie(ctx, "", -1)
	return ctx.Redirect(http.StatusSeeOther, "/console/signin")
}

// signOutEverywhere ends every console session of the person, in every
// browser.
func (c *Console) signOutEverywhere(ctx echo.Context) error {
	v := visitorOf(ctx)
	n, err := c.opts.DB.DeleteConsoleSessions(ctx.Request().Context(), v.sess.Subject)
	if err != nil {
		return c.unavailable(ctx, "signing out everywhere", err)
	}
	c.log.Info("console: signed out everywhere", "subject", v.sess.Subject, "sessions", n)
	c.setCookie(ctx, "", -1)
	return ctx.Redirect(http.StatusSeeOther, "/console/signin")
}
