package console

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// auditVerify verifies the tenant's chain now and stores the outcome as
// its checkpoint, which the audit page shows.
func (c *Console) auditVerify(ctx echo.Context) error {
	if c.opts.VerifyAudit == nil {
		return echo.NewHTTPError(http.StatusNotFound, "Verification is not available here.")
	}
	v := visitorOf(ctx)
	rep, err := c.opts.VerifyAudit(ctx.Request().Context(), v.m.Tenant)
	if err != nil {
		return c.unavailable(ctx, "verifying the audit chain", err)
	}
	if err := c.opts.DB.SaveAuditCheckpoint(ctx.Request().Context(), v.m.Tenant, rep); err != nil {
		return c.unavailable(ctx, "storing the audit checkpoint", err)
	}
	return ctx.Redirect(http.StatusSeeOther, "/console/admin/audit?notice=verified")
}
