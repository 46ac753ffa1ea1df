package console

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// operatorTenant is one row of the operator's tenant list.
type operatorTenant struct {
	*tenancy.Tenant
	store.TenantCounts
	Limit string // the tenant's rate limit in force
}

// operatorTenantList shows every tenant with its figures (members, keys,
// calls in the last 24 hours from the control schema's counter), status
// and limits, and the latest operator actions.
func (c *Console) operatorTenantList(ctx echo.Context) error {
	return c.operatorPage(ctx, http.StatusOK, "", "")
}

func (c *Console) operatorPage(ctx echo.Context, status int, notice, problem string) error {
	rctx := ctx.Request().Context()
	ts, err := c.opts.DB.FindTenants(rctx)
	if err != nil {
		return c.unavailable(ctx, "listing tenants", err)
	}
	counts, err := c.opts.DB.CountTenants(rctx)
	if err != nil {
		return c.unavailable(ctx, "counting tenants", err)
	}
	actions, err := c.opts.DB.FindOperatorActions(rctx, 20)
	if err != nil {
		return c.unavailable(ctx, "reading operator actions", err)
	}
	rows := make([]operatorTenant, 0, len(ts))
	for _, t := range ts {
		row := operatorTenant{Tenant: t, TenantCounts: counts[t.ID], Limit: "default"}
		if c.opts.Limiter != nil {
			row.Limit = c.opts.Limiter.TenantRate(t).String()
		}
		rows = append(rows, row)
	}
	vw := c.newView(ctx, "Operator", "operator")
	vw.Notice, vw.Error = notice, problem
	vw.Data = struct {
		Tenants []operatorTenant
		Actions []store.OperatorRecord
	}{rows, actions}
	return c.render(ctx, status, "operator", vw)
}
