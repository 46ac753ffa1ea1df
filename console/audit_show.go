package console

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// auditShow shows one record of the visitor's tenant, read in the
// tenant's own transaction (as the tenant role): an id of another
// tenant's record finds nothing.
func (c *Console) auditShow(ctx echo.Context) error {
	id, err := strconv.ParseInt(ctx.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return echo.NewHTTPError(http.StatusNotFound, "No such audit record.")
	}
	v := visitorOf(ctx)
	var rec *store.AuditRecord
	// A record still in the audit intake (its id is in the audit stream)
	// is moved into the log first.
	err = c.opts.DB.SettleAudit(ctx.Request().Context(), v.m.Tenant)
	if err == nil {
		err = c.opts.DB.WithTenant(ctx.Request().Context(), v.m.Tenant, func(tx pgx.Tx) error {
			rec, err = store.FindAuditRecord(ctx.Request().Context(), tx, id)
			return err
		})
	}
	if errors.Is(err, store.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, "No such audit record in "+v.m.Tenant.Key+".")
	}
	if err != nil {
		return c.unavailable(ctx, "reading an audit record", err)
	}
	vw := c.newView(ctx, "Audit record", "audit")
	vw.Data = rec
	return c.render(ctx, http.StatusOK, "auditrecord", vw)
}
