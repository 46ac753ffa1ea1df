package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/store"
)

// codeInsufficientScope is the JSON-RPC error code in the body of a step-up
// challenge (in the implementation-defined server range); the HTTP status
// and WWW-Authenticate header are what clients act on.
const codeInsufficientScope = -32003

// stepUpPeekLimit bounds how much of a request body stepUp reads to find a
// tools/call; a larger body goes on unread (and, should it name a tool
// beyond the token's scope, gets the readable denial).
const stepUpPeekLimit = 1 << 20

// stepUp is the step-up authorization of the MCP authorization spec
// (2025-11-25, "Scope challenge handling"; RFC 6750 §3.1): a tools/call with
// a token Gatehouse issued through OAuth sign-in, for a tool the person's
// role allows but the token's scopes do not, is answered HTTP 403 with
//
//	WWW-Authenticate: Bearer error="insufficient_scope", scope="<held + needed>", resource_metadata="…"
//
// so the client signs in again for the wider scope (the person is asked to
// consent to it). The challenge names the scopes already held as well as
// the one needed, so a client that replaces rather than accumulates its
// scopes loses nothing. The refusal is audited as DENIED.
//
// Everything else goes on to the tool, whose own check (Server.call) stays
// the rule: a role shortfall, and a scope shortfall of a credential that
// cannot re-authorize (API keys, client certificates, federated tokens,
// developer tokens), is a tool result naming what is missing (DESIGN §6).
// This middleware only chooses which of the two answers a refusal gets, so
// a body it reads differently from the SDK (a batch, a duplicate key) can
// cost a client the challenge, never grant a call.
func (s *Server) stepUp(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		caller := callerFromContext(req.Context())
		if caller == nil || req.Method != http.MethodPost || !authserver.SignedIn(caller.Principal) || !s.scopeShort(caller) {
			return next(c)
		}
		id, name, args := toolCallOf(req)
		t := s.tools[name]
		if t == nil || t.allows(caller) || !caller.Role.Allows(t.Role) {
			return next(c)
		}
		return s.challengeScope(c, caller, t, id, args)
	}
}

// scopeShort reports whether some tool the caller's role allows needs a
// scope the caller's token lacks (the common case, a token with every scope
// its role can use, then reads no body).
func (s *Server) scopeShort(c *Caller) bool {
	for _, t := range s.tools {
		if c.Role.Allows(t.Role) && !c.Principal.HasScope(t.Scope) {
			return true
		}
	}
	return false
}

// toolCallOf reads the request's JSON-RPC id, and the tool name and
// arguments when it is a single tools/call; the body stays readable whole.
func toolCallOf(r *http.Request) (id json.RawMessage, name string, args json.RawMessage) {
	if r.Body == nil {
		return nil, "", nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, stepUpPeekLimit))
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
	if err != nil || len(b) >= stepUpPeekLimit {
		return nil, "", nil
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		} `json:"params"`
	}
	if json.Unmarshal(b, &msg) != nil || msg.Method != "tools/call" || len(msg.ID) == 0 {
		return nil, "", nil
	}
	return msg.ID, msg.Params.Name, msg.Params.Arguments
}

// challengeScope answers the step-up challenge for tool t and records it.
func (s *Server) challengeScope(c echo.Context, caller *Caller, t *Tool, id, args json.RawMessage) error {
	held := caller.Principal.Scopes
	want := strings.Join(identity.UnionScopes(held, []string{t.Scope}), " ")
	desc := fmt.Sprintf("the tool %s needs the scope %s, which this sign-in did not grant (it granted %s); your role (%s) allows it: sign in again and consent to %s",
		t.Name, t.Scope, strings.Join(held, " "), caller.Role, want)

	rec := s.audit.base(caller, t.Name, args)
	rec.Decision, rec.Reason = store.Denied, fmt.Sprintf("needs scope %s; token has %s; step-up challenge sent", t.Scope, strings.Join(held, " "))
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), 5*time.Second)
	defer cancel()
	if err := s.db.WithTenant(ctx, caller.Tenant, func(tx pgx.Tx) error { return store.InsertAudit(ctx, tx, rec) }); err != nil {
		// No record, no answer but "try again": the refusal is not lost.
		s.log.Error("audit record of a step-up challenge not stored", "tool", t.Name, "request_id", caller.RequestID, "tenant", caller.Tenant.Key, "error", err)
		c.Response().Header().Set("Retry-After", "5")
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable", "request_id": caller.RequestID})
	}
	s.audit.written(caller.Tenant, rec)
	s.metrics.toolCall(t.Name, "insufficient_scope", 0)

	h := c.Response().Header()
	h.Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="gatehouse", error="insufficient_scope", scope=%q, resource_metadata=%q, error_description=%q`,
		want, s.resourceMetadataURL(), desc))
	h.Set("Cache-Control", "no-store")
	return c.JSON(http.StatusForbidden, map[string]any{
		"jsonrpc": "2.0",
		"id":      id,
		"error": map[string]any{"code": codeInsufficientScope, "message": desc,
			"data": map[string]any{"required_scope": t.Scope, "scope": want}},
	})
}

// resourceMetadataURL is the protected resource metadata's URL, path-inserted
// after the resource's path (RFC 9728 §3.1): the authoritative form.
func (s *Server) resourceMetadataURL() string {
	return s.opts.PublicURL + "/.well-known/oauth-protected-resource/mcp"
}
