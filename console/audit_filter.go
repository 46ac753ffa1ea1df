package console

import (
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// auditFilter is the audit page's filter form (and its export links).
type auditFilter struct {
	Since, Until string // yyyy-mm-dd (a day, UTC) or RFC 3339
	Actor        string
	Tool         string
	Decision     string
	Cursor       string
}

func parseAuditFilter(ctx echo.Context) auditFilter {
	q := ctx.QueryParams()
	return auditFilter{Since: strings.TrimSpace(q.Get("since")), Until: strings.TrimSpace(q.Get("until")),
		Actor: strings.TrimSpace(q.Get("actor")), Tool: strings.TrimSpace(q.Get("tool")),
		Decision: q.Get("decision"), Cursor: q.Get("cursor")}
}

// when reads a time field: a day (its start, UTC; for "until", the next
// day's start, so the day is included) or RFC 3339.
func when(s string, until bool) (string, bool) {
	if s == "" {
		return "", true
	}
	if d, err := time.Parse("2006-01-02", s); err == nil {
		if until {
			d = d.AddDate(0, 0, 1)
		}
		return d.Format(time.RFC3339), true
	}
	if _, err := time.Parse(time.RFC3339, s); err == nil {
		return s, true
	}
	return "", false
}

// toolArgs are read_audit_log's arguments for the filter; problem says
// what the person typed wrong.
func (f auditFilter) toolArgs(limit int) (args map[string]any, problem string) {
	args = map[string]any{"limit": limit}
	since, ok1 := when(f.Since, false)
	until, ok2 := when(f.Until, true)
	if !ok1 || !ok2 {
		return nil, "Dates are days (2026-11-30) or times (2026-11-30T10:00:00Z)."
	}
	for k, v := range map[string]string{"since": since, "until": until, "actor": f.Actor, "tool": f.Tool, "decision": f.Decision, "cursor": f.Cursor} {
		if v != "" {
			args[k] = v
		}
	}
	return args, ""
}

// storeFilter is the same filter for streaming (export).
func (f auditFilter) storeFilter() store.AuditFilter {
	sf := store.AuditFilter{Actor: f.Actor, Tool: f.Tool, Decision: f.Decision}
	if s, ok := when(f.Since, false); ok && s != "" {
		sf.Since, _ = time.Parse(time.RFC3339, s)
	}
	if s, ok := when(f.Until, true); ok && s != "" {
		sf.Until, _ = time.Parse(time.RFC3339, s)
	}
	return sf
}

// Query is the filter as a query string (without the cursor), for links.
func (f auditFilter) Query() string {
	v := url.Values{}
	for k, s := range map[string]string{"since": f.Since, "until": f.Until, "actor": f.Actor, "tool": f.Tool, "decision": f.Decision} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v.Encode()
}
