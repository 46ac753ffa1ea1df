package console

import (
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"
)

// memberRemove removes a member (remove_member: refused from their next
// request, their keys revoked at once; the last admin cannot be removed).
func (c *Console) memberRemove(ctx echo.Context) error {
	var out struct {
		RevokedKeys []string `json:"revoked_api_keys"`
	}
	msg, err := shown(c.invoke(ctx, "remove_member", map[string]string{"member_id": ctx.Param("id")}, &out))
	if err != nil {
		return err
	}
	if msg != "" {
		return c.memberPage(ctx, http.StatusBadRequest, "", msg)
	}
	return c.memberPage(ctx, http.StatusOK, fmt.Sprintf("Member removed; %d of their keys revoked.", len(out.RevokedKeys)), "")
}
