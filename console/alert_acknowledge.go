package console

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
)

// alertAcknowledge marks an alert as seen (acknowledge_alert).
func (c *Console) alertAcknowledge(ctx echo.Context) error {
	id, err := strconv.ParseInt(ctx.Param("id"), 10, 64)
	if err != nil || id < 1 {
		return c.alertPage(ctx, http.StatusNotFound, "", "No such alert.")
	}
	msg, err := shown(c.invoke(ctx, "acknowledge_alert", map[string]any{"id": id}, nil))
	if err != nil {
		return err
	}
	if msg != "" {
		return c.alertPage(ctx, http.StatusNotFound, "", msg)
	}
	return c.alertPage(ctx, http.StatusOK, "Alert acknowledged.", "")
}
