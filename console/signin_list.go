package console

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// signInsList shows the MCP clients the visitor authorised (their live
// refresh-token families), each revocable.
func (c *Console) signInsList(ctx echo.Context) error {
	return c.signInsPage(ctx, http.StatusOK, "", "")
}

func (c *Console) signInsPage(ctx echo.Context, status int, notice, problem string) error {
	v := visitorOf(ctx)
	list, err := c.opts.DB.FindSignIns(ctx.Request().Context(), v.sess.Subject)
	if err != nil {
		return c.unavailable(ctx, "listing sign-ins", err)
	}
	vw := c.newView(ctx, "My sign-ins", "signins")
	vw.Notice, vw.Error = notice, problem
	vw.Data = list
	return c.render(ctx, status, "signins", vw)
}

// signInRevoke revokes one of the visitor's sign-ins: the client's refresh
// token stops working at once, so it must sign in again when its access
// token (at most an hour) expires.
func (c *Console) signInRevoke(ctx echo.Context) error {
	v := visitorOf(ctx)
	err := c.opts.DB.RevokeSignIn(ctx.Request().Context(), v.sess.Subject, ctx.Param("family"))
	if errors.Is(err, store.ErrNotFound) {
		return c.signInsPage(ctx, http.StatusNotFound, "", "No such sign-in of yours.")
	}
	if err != nil {
		return c.unavailable(ctx, "revoking a sign-in", err)
	}
	c.log.Info("console: sign-in revoked", "subject", v.sess.Subject, "family", ctx.Param("family"))
	return c.signInsPage(ctx, http.StatusOK, "Sign-in revoked.", "")
}
