package console

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// memberRoleSave changes a member's role, or restores a removed member
// (set_member_role; the last admin stays admin).
func (c *Console) memberRoleSave(ctx echo.Context) error {
	args := map[string]string{"member_id": ctx.Param("id"), "role": ctx.FormValue("role")}
	msg, err := shown(c.invoke(ctx, "set_member_role", args, nil))
	if err != nil {
		return err
	}
	if msg != "" {
		return c.memberPage(ctx, http.StatusBadRequest, "", msg)
	}
	return c.memberPage(ctx, http.StatusOK, "Role saved.", "")
}
