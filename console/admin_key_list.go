package console

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// adminKeyList lists every key of the organisation (list_api_keys).
func (c *Console) adminKeyList(ctx echo.Context) error {
	return c.adminKeyPage(ctx, http.StatusOK, "", "")
}

func (c *Console) adminKeyPage(ctx echo.Context, status int, notice, problem string) error {
	var out keysOut
	if err := c.invoke(ctx, "list_api_keys", nil, &out); err != nil {
		return err
	}
	vw := c.newView(ctx, "Organisation keys", "adminkeys")
	vw.Notice, vw.Error = notice, problem
	vw.Data = out.Keys
	return c.render(ctx, status, "adminkeys", vw)
}

// adminKeyRevoke revokes any key of the organisation (revoke_api_key).
func (c *Console) adminKeyRevoke(ctx echo.Context) error {
	msg, err := shown(c.invoke(ctx, "revoke_api_key", map[string]string{"id": ctx.Param("id")}, nil))
	if err != nil {
		return err
	}
	if msg != "" {
		return c.adminKeyPage(ctx, http.StatusNotFound, "", msg)
	}
	return c.adminKeyPage(ctx, http.StatusOK, "Key revoked, on every server at once.", "")
}
