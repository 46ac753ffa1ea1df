package console

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// keyRevoke revokes one of the visitor's own keys (revoke_my_api_key).
func (c *Console) keyRevoke(ctx echo.Context) error {
	msg, err := shown(c.invoke(ctx, "revoke_my_api_key", map[string]string{"id": ctx.Param("id")}, nil))
	if err != nil {
		return err
	}
	if msg != "" {
		return c.keyPage(ctx, http.StatusNotFound, nil, "", msg)
	}
	return c.keyPage(ctx, http.StatusOK, nil, "Key revoked, on every server at once.", "")
}
