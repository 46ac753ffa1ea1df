package mcp

import (
	"context"
	"fmt"
	"strings"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

type getUsageIn struct{}

type standingOut struct {
	Limit     string `json:"limit" jsonschema:"the rate limit, e.g. 600/m burst 100 (off: none)"`
	Remaining int    `json:"remaining" jsonschema:"requests admitted right now"`
}

type callCounts struct {
	Allowed     int64 `json:"allowed"`
	Denied      int64 `json:"denied"`
	RateLimited int64 `json:"rate_limited"`
	Errors      int64 `json:"errors"`
}

type getUsageOut struct {
	Tenant          standingOut `json:"tenant"`
	You             standingOut `json:"you"`
	TenantCalls24h  callCounts  `json:"tenant_calls_24h"`
	YourCalls24h    callCounts  `json:"your_calls_24h"`
	TenantKey       string      `json:"tenant_key"`
	RateLimitsShown bool        `json:"rate_limits_enforced"`
}

func (o getUsageOut) Text() string {
	var b strings.Builder
	if o.RateLimitsShown {
		fmt.Fprintf(&b, "Rate limits: %s may make %d more requests now (%s); you may make %d more (%s).\n",
			o.TenantKey, o.Tenant.Remaining, o.Tenant.Limit, o.You.Remaining, o.You.Limit)
	}
	c := func(n callCounts) string {
		return fmt.Sprintf("%d allowed, %d denied, %d rate-limited, %d failed", n.Allowed, n.Denied, n.RateLimited, n.Errors)
	}
	fmt.Fprintf(&b, "Tool calls in the last 24 hours: %s: %s; you: %s.\n", o.TenantKey, c(o.TenantCalls24h), c(o.YourCalls24h))
	return b.String()
}

func getUsageTool() *Tool {
	return newTool(ToolSpec{
		Name: "get_usage", Title: "Usage and limits",
		Description: "Shows how much of the rate limits you and your organisation have left, and the tool calls of the last 24 hours.",
		Role:        tenancy.Viewer, Scope: identity.ScopeRead, ReadOnly: true, ReadsAudit: true,
	}, func(ctx context.Context, c *Call, _ getUsageIn) (getUsageOut, error) {
		out := getUsageOut{TenantKey: c.Tenant.Key}
		if l := c.srv.opts.Limiter; l != nil {
			t, p, err := l.Standing(ctx, c.Tenant, c.Principal.Subject)
			if err != nil {
				return out, err
			}
			out.RateLimitsShown = true
			out.Tenant = standingOut{Limit: t.Limit.String(), Remaining: t.Remaining}
			out.You = standingOut{Limit: p.Limit.String(), Remaining: p.Remaining}
		}
		rows, err := c.Tx.Query(ctx, `SELECT decision, sum(count), coalesce(sum(count) FILTER (WHERE subject = $1), 0)
			FROM audit_log WHERE at > now() - interval '24 hours' GROUP BY decision`, c.Principal.Subject)
		if err != nil {
			return out, err
		}
		defer rows.Close()
		for rows.Next() {
			var decision string
			var all, mine int64
			if err := rows.Scan(&decision, &all, &mine); err != nil {
				return out, err
			}
			for counts, n := range map[*callCounts]int64{&out.TenantCalls24h: all, &out.YourCalls24h: mine} {
				switch decision {
				case store.Allowed:
					counts.Allowed = n
				case store.Denied:
					counts.Denied = n
				case store.RateLimited:
					counts.RateLimited = n
				case store.Failed:
					counts.Errors = n
				}
			}
		}
		return out, rows.Err()
	})
}
