package console

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// alertsOut is list_alerts' result as the page reads it.
type alertsOut struct {
	Alerts []struct {
		ID             int64          `json:"id"`
		AuditID        int64          `json:"audit_id"`
		At             string         `json:"at"`
		Kind           string         `json:"kind"`
		Subject        string         `json:"subject"`
		ClientIP       string         `json:"client_ip"`
		Summary        string         `json:"summary"`
		Evidence       map[string]any `json:"evidence"`
		Suspended      bool           `json:"suspended"`
		AcknowledgedAt string         `json:"acknowledged_at"`
		AcknowledgedBy string         `json:"acknowledged_by"`
	} `json:"alerts"`
}

// alertList shows the organisation's anomaly alerts, open ones first
// unless ?all=1 (list_alerts).
func (c *Console) alertList(ctx echo.Context) error {
	return c.alertPage(ctx, http.StatusOK, "", "")
}

func (c *Console) alertPage(ctx echo.Context, status int, notice, problem string) error {
	all := ctx.QueryParam("all") == "1"
	var out alertsOut
	if err := c.invoke(ctx, "list_alerts", map[string]any{"open": !all, "limit": 100}, &out); err != nil {
		return err
	}
	vw := c.newView(ctx, "Alerts", "alerts")
	vw.Notice, vw.Error = notice, problem
	vw.Data = struct {
		All    bool
		Alerts any
	}{all, out.Alerts}
	return c.render(ctx, status, "alerts", vw)
}
