package mcp

import (
	"context"
	"errors"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
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
	// slot releases the request's admission slot (over HTTP, for calls
	// that do database work; nil otherwise): the call gives it back
	// while it waits for its audit record's group commit (commitAudit).
	slot func()
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
		c, err := s.stdioCaller(ctx)
		if err != nil {
			return nil, stdioAuthError(err)
		}
		return c, nil
	}
	return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "unauthenticated"}
}

// stdioAuthError is the JSON-RPC error for a stdio session whose key no
// longer resolves (revoked, expired, tenant suspended or removed; over
// HTTP these are 401/403 answers, see authFailure) or whose identity
// check cannot run now (the database or provider is unreachable: -32030,
// as HTTP's 503). Its message is authFailure's description, never the
// key.
func stdioAuthError(err error) error {
	if errors.Is(err, identity.ErrUnavailable) || errors.Is(err, store.ErrUnavailable) {
		return outage{dependency: "database"}.rpcError()
	}
	a := authFailure(err)
	msg := a.description
	if a.status == http.StatusInternalServerError {
		msg = "GATEHOUSE_API_KEY could not be checked"
	}
	return &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "GATEHOUSE_API_KEY: " + msg}
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
