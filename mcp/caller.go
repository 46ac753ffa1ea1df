package mcp

import (
	"context"

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
	RequestID string
	ClientIP  string
	UserAgent string
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
// attached to its token info, or the stdio session's caller.
func (s *Server) callerOf(extra *sdk.RequestExtra) *Caller {
	if extra != nil && extra.TokenInfo != nil {
		c, _ := extra.TokenInfo.Extra[callerKey].(*Caller)
		return c
	}
	return s.stdioCaller
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
