package console

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
)

// signInShow lists the providers people sign in with (the same as for MCP
// clients). ?next= is where to return (a console path only); ?fresh=1
// explains that a sensitive action needs a recent sign-in.
func (c *Console) signInShow(ctx echo.Context) error {
	vw := c.newView(ctx, "Sign in", "")
	next := safeNext(ctx.QueryParam("next"))
	vw.Data = struct {
		Providers []authserver.Provider
		Next      string
		Fresh     bool
	}{c.opts.SignIn.Providers(), next, ctx.QueryParam("fresh") != ""}
	return c.render(ctx, http.StatusOK, "signin", vw)
}

// signInStart sends the browser to the provider through the authorization
// server's own upstream step; the console gets the person back in
// signInFinish.
func (c *Console) signInStart(ctx echo.Context) error {
	c.opts.SignIn.BeginFirstParty(ctx.Response(), ctx.Request(), ctx.Param("provider"), safeNext(ctx.QueryParam("next")))
	return nil
}
