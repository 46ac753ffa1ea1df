package mcp

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

type readAuditIn struct {
	Since    string `json:"since,omitempty" jsonschema:"only records at or after this time (RFC 3339, e.g. 2026-11-22T10:00:00Z)"`
	Until    string `json:"until,omitempty" jsonschema:"only records before this time (RFC 3339)"`
	Actor    string `json:"actor,omitempty" jsonschema:"only this caller: a subject (github:5678, apikey:...) or an email"`
	Tool     string `json:"tool,omitempty" jsonschema:"only calls of this tool"`
	Decision string `json:"decision,omitempty" jsonschema:"only this decision"`
	Limit    int    `json:"limit,omitempty" jsonschema:"how many to return, 1 to 200 (default 50)"`
	Cursor   string `json:"cursor,omitempty" jsonschema:"next_cursor from the previous page"`
}

type readAuditOut struct {
	Records    []*store.AuditRecord `json:"records"`
	NextCursor string               `json:"next_cursor,omitempty"`
}

func (o readAuditOut) Text() string {
	if len(o.Records) == 0 {
		return "No audit records match."
	}
	var b strings.Builder
	for _, r := range o.Records {
		fmt.Fprintf(&b, "%s %s %s by %s", r.At.UTC().Format(time.RFC3339), r.Decision, orMethod(r.Tool), r.Subject)
		if r.Count > 1 {
			fmt.Fprintf(&b, " (x%d)", r.Count)
		}
		if r.Reason != "" {
			fmt.Fprintf(&b, ": %s", r.Reason)
		}
		b.WriteString("\n")
	}
	if o.NextCursor != "" {
		fmt.Fprintf(&b, "More records follow: call again with cursor %q.\n", o.NextCursor)
	}
	return b.String()
}

// auditPosition is where a page of read_audit_log ends.
type auditPosition struct {
	BeforeID int64 `json:"before"`
}

func orMethod(tool string) string {
	if tool == "" {
		return "(request)"
	}
	return tool
}

func readAuditLogTool() *Tool {
	return newTool(ToolSpec{
		Name:        "read_audit_log",
		Title:       "Read the audit log",
		Description: "Reads your organisation's audit log, newest first: every tool call allowed, denied, rate-limited or failed, by whom and from where, and every anomaly alert (ALERT). Filter by time, actor, tool and decision.",
		Role:        tenancy.Admin,
		Scope:       identity.ScopeAdmin,
		ReadOnly:    true,
		Idempotent:  true,
		ReadsAudit:  true,
		Input: func(s *jsonschema.Schema) {
			s.Properties["decision"].Enum = []any{store.Allowed, store.Denied, store.RateLimited, store.Failed, store.Alerted}
			s.Properties["limit"].Minimum = new(1.0)
			s.Properties["limit"].Maximum = new(200.0)
		},
	}, func(ctx context.Context, c *Call, in readAuditIn) (readAuditOut, error) {
		f := store.AuditFilter{Actor: in.Actor, Tool: in.Tool, Decision: in.Decision, Limit: in.Limit}
		if f.Limit == 0 {
			f.Limit = 50
		}
		var err error
		if f.Since, err = parseTime("since", in.Since); err != nil {
			return readAuditOut{}, err
		}
		if f.Until, err = parseTime("until", in.Until); err != nil {
			return readAuditOut{}, err
		}
		if in.Cursor != "" {
			// Sealed like every list's cursor (cursor.go): bound to this
			// tenant and this list, so a made-up or edited one is refused.
			var pos auditPosition
			if err := c.Open("audit", in.Cursor, &pos); err != nil || pos.BeforeID <= 0 {
				return readAuditOut{}, errCursorRefused
			}
			f.BeforeID = pos.BeforeID
		}
		recs, more, err := store.FindAudit(ctx, c.Tx, f)
		if err != nil {
			return readAuditOut{}, err
		}
		out := readAuditOut{Records: recs}
		if out.Records == nil {
			out.Records = []*store.AuditRecord{}
		}
		if more {
			out.NextCursor = c.Seal("audit", auditPosition{BeforeID: recs[len(recs)-1].ID})
		}
		return out, nil
	})
}

func parseTime(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, invalidArgs(name + " must be an RFC 3339 time such as 2026-11-22T10:00:00Z")
	}
	return t, nil
}
