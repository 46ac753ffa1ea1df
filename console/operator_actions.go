package console

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// operatorTarget is the tenant an operator action names in its URL.
func (c *Console) operatorTarget(ctx echo.Context) (*tenancy.Tenant, error) {
	key, err := tenancy.NormalizeKey(ctx.Param("key"))
	if err != nil {
		return nil, echo.NewHTTPError(http.StatusNotFound, "No such tenant.")
	}
	t, err := c.opts.DB.FindTenantByKey(ctx.Request().Context(), key)
	if errors.Is(err, tenancy.ErrTenantNotFound) {
		return nil, echo.NewHTTPError(http.StatusNotFound, "No such tenant: "+key+".")
	}
	if err != nil {
		return nil, c.unavailable(ctx, "finding a tenant", err)
	}
	return t, nil
}

func (c *Console) operatorAction(ctx echo.Context, action, detail string) store.OperatorAction {
	return store.OperatorAction{Operator: visitorOf(ctx).sess.Subject, Action: action, Detail: detail, ClientIP: ctx.RealIP(), Via: "console"}
}

// operatorSuspend suspends a tenant: every request of its members and keys
// is refused with a clear 403 until it is resumed; nothing is deleted.
func (c *Console) operatorSuspend(ctx echo.Context) error {
	return c.operatorSetStatus(ctx, tenancy.Suspended)
}

// operatorResume lifts a suspension.
func (c *Console) operatorResume(ctx echo.Context) error {
	return c.operatorSetStatus(ctx, tenancy.Active)
}

func (c *Console) operatorSetStatus(ctx echo.Context, s tenancy.Status) error {
	t, err := c.operatorTarget(ctx)
	if err != nil {
		return err
	}
	action := map[tenancy.Status]string{tenancy.Suspended: "suspend", tenancy.Active: "resume"}[s]
	if err := c.opts.DB.SetTenantStatus(ctx.Request().Context(), t, s, c.operatorAction(ctx, action, "")); err != nil {
		return c.unavailable(ctx, action+" a tenant", err)
	}
	c.opts.Tenancy.Forget(t.ID)
	return c.operatorPage(ctx, http.StatusOK, t.Key+" is now "+string(s)+".", "")
}

// operatorLimitsSave sets a tenant's rate limit (requests per minute and
// burst; empty: back to the default).
func (c *Console) operatorLimitsSave(ctx echo.Context) error {
	t, err := c.operatorTarget(ctx)
	if err != nil {
		return err
	}
	var rate *tenancy.Rate
	detail := "default"
	if pm := strings.TrimSpace(ctx.FormValue("per_minute")); pm != "" {
		burst, berr := strconv.Atoi(strings.TrimSpace(ctx.FormValue("burst")))
		r, perr := tenancy.ParseRate(pm+"/m", burst)
		if berr != nil || perr != nil || r.PerMinute <= 0 || burst <= 0 {
			return c.operatorPage(ctx, http.StatusBadRequest, "", "A limit is a number of requests per minute above 0 and a burst of 1 or more.")
		}
		rate, detail = &r, r.String()
	}
	if err := c.opts.DB.SetTenantRateLimit(ctx.Request().Context(), t.ID, rate); err != nil {
		return c.unavailable(ctx, "setting a tenant's limits", err)
	}
	if err := c.opts.DB.RecordOperatorAction(ctx.Request().Context(), t, c.operatorAction(ctx, "limits", detail)); err != nil {
		return c.unavailable(ctx, "recording an operator action", err)
	}
	c.opts.Tenancy.Forget(t.ID)
	return c.operatorPage(ctx, http.StatusOK, t.Key+"'s rate limit is now "+detail+".", "")
}

// operatorExport downloads a tenant's archive (zip of JSON lines): its
// workspace rows, members, keys without secrets, audit log.
func (c *Console) operatorExport(ctx echo.Context) error {
	t, err := c.operatorTarget(ctx)
	if err != nil {
		return err
	}
	name := "gatehouse-" + strings.NewReplacer(":", "_", "/", "_").Replace(t.Key) + "-" + time.Now().UTC().Format("20060102T150405Z") + ".zip"
	h := ctx.Response().Header()
	h.Set("Content-Type", "application/zip")
	h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	ctx.Response().WriteHeader(http.StatusOK)
	if err := c.opts.DB.ExportTenant(ctx.Request().Context(), t, ctx.Response(), c.operatorAction(ctx, "export", "")); err != nil {
		c.log.Error("console: export failed midway (the archive is truncated)", "tenant", t.Key, "error", err)
	}
	return nil
}

// operatorDeleteShow asks for the typed confirmation of a deletion.
func (c *Console) operatorDeleteShow(ctx echo.Context) error {
	t, err := c.operatorTarget(ctx)
	if err != nil {
		return err
	}
	counts, err := c.opts.DB.CountTenants(ctx.Request().Context())
	if err != nil {
		return c.unavailable(ctx, "counting tenants", err)
	}
	vw := c.newView(ctx, "Delete "+t.Key, "operator")
	vw.Data = operatorTenant{Tenant: t, TenantCounts: counts[t.ID]}
	return c.render(ctx, http.StatusOK, "operatordelete", vw)
}

// operatorDelete deletes a tenant for good, once its key is typed: schema,
// roles and rows go; the operator record of it stays.
func (c *Console) operatorDelete(ctx echo.Context) error {
	t, err := c.operatorTarget(ctx)
	if err != nil {
		return err
	}
	if strings.TrimSpace(ctx.FormValue("confirm")) != t.Key {
		vw := c.newView(ctx, "Delete "+t.Key, "operator")
		vw.Error = "Type the tenant's key exactly (" + t.Key + ") to delete it."
		vw.Data = operatorTenant{Tenant: t}
		return c.render(ctx, http.StatusBadRequest, "operatordelete", vw)
	}
	if err := c.opts.DB.DeleteTenant(ctx.Request().Context(), t, c.operatorAction(ctx, "delete", "")); err != nil {
		return c.unavailable(ctx, "deleting a tenant", err)
	}
	c.opts.Tenancy.Forget(t.ID)
	c.log.Warn("console: tenant deleted", "tenant", t.Key, "operator", visitorOf(ctx).sess.Subject)
	return c.operatorPage(ctx, http.StatusOK, t.Key+" was deleted: its schema, roles, members and keys are gone.", "")
}
