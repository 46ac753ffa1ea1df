package console

import (
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// auditExport streams the filtered records as JSON lines or CSV, row by
// row from the database to the response: no size limit, flat memory. The
// export is authorized and audited as a read_audit_log call with the same
// filter.
func (c *Console) auditExport(ctx echo.Context) error {
	f := parseAuditFilter(ctx)
	f.Cursor = ""
	format := ctx.QueryParam("format")
	if format != "csv" && format != "jsonl" {
		return echo.NewHTTPError(http.StatusBadRequest, "Export as format=csv or format=jsonl.")
	}
	args, problem := f.toolArgs(1)
	if problem != "" {
		return echo.NewHTTPError(http.StatusBadRequest, problem)
	}
	if msg, err := shown(c.invoke(ctx, "read_audit_log", args, nil)); err != nil {
		return err
	} else if msg != "" {
		return echo.NewHTTPError(http.StatusBadRequest, msg)
	}
	v := visitorOf(ctx)
	name := "audit-" + strings.NewReplacer(":", "_", "/", "_").Replace(v.m.Tenant.Key) + "-" + time.Now().UTC().Format("20060102T150405Z")
	h := ctx.Response().Header()
	h.Set("Content-Disposition", `attachment; filename="`+name+"."+format+`"`)
	if format == "csv" {
		h.Set("Content-Type", "text/csv; charset=utf-8")
	} else {
		h.Set("Content-Type", "application/x-ndjson")
	}
	ctx.Response().WriteHeader(http.StatusOK)
	w := ctx.Response()
	var write func(*store.AuditRecord) error
	var flush func()
	if format == "csv" {
		cw := csv.NewWriter(w)
		_ = cw.Write(csvHeader)
		write = func(r *store.AuditRecord) error { return cw.Write(csvRow(r)) }
		flush = cw.Flush
	} else {
		enc := json.NewEncoder(w)
		write = func(r *store.AuditRecord) error { return enc.Encode(r) }
		flush = func() {}
	}
	n := 0
	err := c.opts.DB.WithTenant(ctx.Request().Context(), v.m.Tenant, func(tx pgx.Tx) error {
		return store.StreamAudit(ctx.Request().Context(), tx, f.storeFilter(), func(r *store.AuditRecord) error {
			if err := write(r); err != nil {
				return err
			}
			if n++; n%1000 == 0 {
				flush()
				w.Flush()
			}
			return nil
		})
	})
	flush()
	if err != nil {
		// The status is sent; the truncated file ends without its last
		// line, and the log says why.
		c.log.Error("console: audit export failed midway", "tenant", v.m.Tenant.Key, "records", n, "error", err)
	}
	return nil
}

var csvHeader = []string{"id", "at", "decision", "tool", "subject", "email", "provider", "api_key_id", "client_ip",
	"user_agent", "reason", "args_digest", "count", "request_id", "chain_seq", "via"}

func csvRow(r *store.AuditRecord) []string {
	row := []string{strconv.FormatInt(r.ID, 10), r.At.UTC().Format(time.RFC3339Nano), r.Decision, r.Tool, r.Subject, r.Email,
		r.Provider, r.APIKeyID, r.ClientIP, r.UserAgent, r.Reason, r.ArgsDigest, strconv.Itoa(r.Count), r.RequestID,
		strconv.FormatInt(r.ChainSeq, 10), r.Via}
	for i, s := range row {
		row[i] = SpreadsheetSafe(s)
	}
	return row
}

// SpreadsheetSafe escapes a CSV cell a spreadsheet would run as a formula
// (OWASP, "CSV Injection"): a cell starting with =, +, -, @, a tab or a
// carriage return gets a leading apostrophe, which spreadsheets show as
// text.
func SpreadsheetSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
