package mcp

import (
	"context"
	"errors"

	"github.com/modelcontextprotocol/go-sdk/auth"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Caller is who is calling, established once per HTTP request (or once per
// stdio session) and read by every tool call in it.
type Caller struct {
	Principal *identity.Principal
	Tenant    *tenancy.Tenant
	Role      tenancy.Role
	MemberID  string // the caller's member id; empty for API keys
	RequestID string
	ClientIP  string
	UserAgent string
	// Via names the surface the call came through when it is not MCP
	// ("console"); the audit record says it.
	Via string

	outage *outageBox // over HTTP: where a handler reports an outage
}

const callerKey = "caller"

type ctxKey int

const callerCtxKey ctxKey = 0

func withCaller(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, callerCtxKey, c)
}

func callerFromContext(ctx context.Context) *Caller {
	c, _ := ctx.Value(callerCtxKey).(*Caller)
	return c
}

// callerOf returns the caller of a request: the one the HTTP middleware
// attached to its token info, or (over stdio) the API key's, checked again.
func (s *Server) callerOf(ctx context.Context, extra *sdk.RequestExtra) (*Caller, error) {
	if extra != nil && extra.TokenInfo != nil {
		if c, _ := extra.TokenInfo.Extra[callerKey].(*Caller); c != nil {
			return c, nil
		}
	}
	if s.stdioToken != "" {
		return s.stdioCaller(ctx)
	}
	return nil, errors.New("unauthenticated")
}

// tokenInfo is what the SDK carries from the HTTP request to the handlers.
func (c *Caller) tokenInfo() *auth.TokenInfo {
	return &auth.TokenInfo{
		Scopes:     c.Principal.Scopes,
		Expiration: c.Principal.Expiry,
		UserID:     c.Principal.Subject,
		Extra:      map[string]any{callerKey: c},
	}
}
