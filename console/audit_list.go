package console

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// auditList shows the audit log, filtered and paginated (read_audit_log,
// with its cursors), and the chain's status from the last stored
// verification.
func (c *Console) auditList(ctx echo.Context) error {
	f := parseAuditFilter(ctx)
	vw := c.newView(ctx, "Audit log", "audit")
	var out struct {
		Records    []*store.AuditRecord `json:"records"`
		NextCursor string               `json:"next_cursor"`
	}
	status := http.StatusOK
	if args, problem := f.toolArgs(50); problem != "" {
		vw.Error, status = problem, http.StatusBadRequest
	} else if msg, err := shown(c.invoke(ctx, "read_audit_log", args, &out)); err != nil {
		return err
	} else if msg != "" {
		vw.Error, status = msg, http.StatusBadRequest
	}
	v := visitorOf(ctx)
	cp, err := c.opts.DB.FindAuditCheckpoint(ctx.Request().Context(), v.m.Tenant)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return c.unavailable(ctx, "reading the audit checkpoint", err)
	}
	vw.Notice = ctx.QueryParam("notice")
	if vw.Notice != "" && vw.Notice != "verified" {
		vw.Notice = ""
	} else if vw.Notice == "verified" {
		vw.Notice = "The chain was verified just now."
	}
	vw.Data = struct {
		Filter     auditFilter
		Records    []*store.AuditRecord
		NextCursor string
		Checkpoint *store.AuditCheckpoint
		Decisions  []string
		CanVerify  bool
	}{f, out.Records, out.NextCursor, cp, []string{store.Allowed, store.Denied, store.RateLimited, store.Failed, store.Alerted}, c.opts.VerifyAudit != nil}
	return c.render(ctx, status, "audit", vw)
}
