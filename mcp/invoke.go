package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/internal/httpx"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Errors of [Server.Invoke].
var (
	// ErrUnknownTool: no tool of that name is served here.
	ErrUnknownTool = errors.New("no such tool")
	// ErrToolDenied: the caller's role or scopes do not allow the tool.
	ErrToolDenied = errors.New("access denied")
)

// ToolError is a tool call that failed in a way the caller may read (the
// text a model would see): invalid arguments, not found, last admin, a
// denial (wrapping ErrToolDenied), busy, time-out.
type ToolError struct {
	Message string
	denied  bool
	retry   time.Duration // rate-limited: when to try again
}

// RetryAfter is how long a rate-limited caller should wait; 0 when the
// call was not rate-limited.
func (e *ToolError) RetryAfter() time.Duration { return e.retry }

func (e *ToolError) Error() string { return e.Message }

// Denied reports whether the call was refused by the role × scope rule.
func (e *ToolError) Denied() bool { return e.denied }

// Is lets errors.Is(err, ErrToolDenied) find denials.
func (e *ToolError) Is(target error) bool { return e.denied && target == ErrToolDenied }

// Invoke runs the tool named tool for p, placed by m, exactly as
// tools/call would —
// the same role × scope rule (with the tool policy), the same argument
// validation, the tool's transaction in c's tenant, and the same audit
// record in that transaction, marked with o.Via — and returns the tool's
// structured result (JSON). It is how Gatehouse's other surfaces (the
// console) act, so they never grant what the tool would refuse.
//
// Calls count against the same rate limits as the person's requests to
// /mcp (a refusal is recorded the same way, as an aggregated RATE_LIMITED
// record).
//
// Errors: ErrUnknownTool; a *ToolError whose message is for the person
// (errors.Is(err, ErrToolDenied) for a denial, RetryAfter() > 0 when rate
// limited); any other error is internal (logged here with the request id).
func (s *Server) Invoke(ctx context.Context, p *identity.Principal, m *tenancy.Membership, o httpx.Origin, tool string, args any) (json.RawMessage, error) {
	c := &Caller{Principal: p, Tenant: m.Tenant, Role: m.Role, MemberID: m.MemberID,
		RequestID: o.RequestID, ClientIP: o.ClientIP, UserAgent: o.UserAgent, Via: o.Via}
	t := s.tools[tool]
	if t == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTool, tool)
	}
	// The same rate limits as a request to /mcp: the tenant's and the
	// person's, shared with their MCP clients.
	if s.opts.Limiter != nil {
		d, err := s.opts.Limiter.AllowRequest(ctx, c.Tenant, c.Principal.Subject)
		if err != nil {
			s.log.Warn("rate limit check failed; call allowed", "request_id", c.RequestID, "error", err)
		}
		if !d.Allowed {
			s.metrics.rateLimited.WithLabelValues(d.Scope).Inc()
			s.audit.rateLimited(c, tool, d.Scope+" limit "+d.Limit.String())
			secs := retrySeconds(d)
			return nil, &ToolError{Message: fmt.Sprintf("rate limit exceeded (%s %s, %s): retry in %d s", d.Scope, c.Tenant.Key, d.Limit, secs),
				retry: time.Duration(secs) * time.Second}
		}
	}
	raw, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	denied := !t.allows(c)                    // the role × scope rule, as call decides it
	res, outcome, _ := s.call(ctx, t, c, raw) // a failure is in outcome and logged by call
	s.metrics.toolCall(t.Name, outcome, time.Since(start))
	switch outcome {
	case "internal_error", "unavailable", "cancelled":
		// Logged by call; the surface answers "try again".
		return nil, fmt.Errorf("tool %s: %s (request id %s)", tool, outcome, c.RequestID)
	}
	if res.IsError {
		var text []string
		for _, ct := range res.Content {
			if tc, ok := ct.(*sdk.TextContent); ok {
				text = append(text, tc.Text)
			}
		}
		return nil, &ToolError{Message: strings.Join(text, " "), denied: denied}
	}
	return json.Marshal(res.StructuredContent)
}

// Allows reports whether a member with role and a credential with scopes
// may call tool under this server's rules (the compiled-in registry with
// the tool policy): what the console shows or hides. Calls are checked
// again by Invoke.
func (s *Server) Allows(tool string, role tenancy.Role, scopes []string) bool {
	t := s.tools[tool]
	if t == nil || !role.Allows(t.Role) {
		return false
	}
	for _, sc := range scopes {
		if sc == t.Scope {
			return true
		}
	}
	return false
}
