package console

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

type signInOut struct {
	ID           string `json:"id"`
	ClientID     string `json:"client_id"`
	ClientName   string `json:"client_name"`
	RedirectHost string `json:"redirect_host"`
	Scope        string `json:"scope"`
	Since        string `json:"since"`
	LastUsed     string `json:"last_used"`
}

// signInsList shows the MCP clients the visitor authorised
// (list_my_sign_ins), each revocable.
func (c *Console) signInsList(ctx echo.Context) error {
	return c.signInsPage(ctx, http.StatusOK, "", "")
}

func (c *Console) signInsPage(ctx echo.Context, status int, notice, problem string) error {
	var out struct {
		SignIns []signInOut `json:"sign_ins"`
	}
	if err := c.invoke(ctx, "list_my_sign_ins", nil, &out); err != nil {
		return err
	}
	vw := c.newView(ctx, "My sign-ins", "signins")
	vw.Notice, vw.Error = notice, problem
	vw.Data = out.SignIns
	return c.render(ctx, status, "signins", vw)
}

// signInRevoke revokes one of the visitor's sign-ins (revoke_my_sign_in):
// the client's refresh token stops at once, its access tokens within a
// second on every replica.
func (c *Console) signInRevoke(ctx echo.Context) error {
	msg, err := shown(c.invoke(ctx, "revoke_my_sign_in", map[string]string{"id": ctx.Param("family")}, nil))
	if err != nil {
		return err
	}
	if msg != "" {
		return c.signInsPage(ctx, http.StatusNotFound, "", msg)
	}
	return c.signInsPage(ctx, http.StatusOK, "Sign-in revoked.", "")
}
