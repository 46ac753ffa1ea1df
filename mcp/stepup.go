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
// role allows but the token's scopes do not (or a prompts/get for such a
// prompt), is answered HTTP 403 with
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
		id, method, name, args := toolCallOf(req)
		if method == "prompts/get" {
			p := s.prompts[name]
			if p == nil || p.allows(caller) || !caller.Role.Allows(p.Role) {
				return next(c)
			}
			return s.challengeScope(c, caller, "prompt", p.Name, p.Scope, "prompts/get:"+p.Name, id, args)
		}
		t := s.tools[name]
		if method != "tools/call" || t == nil || t.allows(caller) || !caller.Role.Allows(t.Role) {
			return next(c)
		}
		return s.challengeScope(c, caller, "tool", t.Name, t.Scope, t.Name, id, args)
	}
}

// scopeShort reports whether some tool or prompt the caller's role allows
// needs a scope the caller's token lacks (the common case, a token with
// every scope its role can use, then reads no body).
func (s *Server) scopeShort(c *Caller) bool {
	for _, t := range s.tools {
		if c.Role.Allows(t.Role) && !c.Principal.HasScope(t.Scope) {
			return true
		}
	}
	for _, p := range s.prompts {
		if c.Role.Allows(p.Role) && !c.Principal.HasScope(p.Scope) {
			return true
		}
	}
	return false
}

// toolCallOf reads the request's JSON-RPC id, method, and the tool's (or
// prompt's) name and arguments when it is a single tools/call or
// prompts/get; the body stays readable whole.
func toolCallOf(r *http.Request) (id json.RawMessage, method, name string, args json.RawMessage) {
	if r.Body == nil {
		return nil, "", "", nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, stepUpPeekLimit))
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
	if err != nil || len(b) >= stepUpPeekLimit {
		return nil, "", "", nil
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		} `json:"params"`
	}
	if json.Unmarshal(b, &msg) != nil || (msg.Method != "tools/call" && msg.Method != "prompts/get") || len(msg.ID) == 0 {
		return nil, "", "", nil
	}
	return msg.ID, msg.Method, msg.Params.Name, msg.Params.Arguments
}

// challengeScope answers the step-up challenge for the tool or prompt
// (what) name, which needs scope, and records it as audited.
func (s *Server) challengeScope(c echo.Context, caller *Caller, what, name, scope, audited string, id, args json.RawMessage) error {
	held := caller.Principal.Scopes
	want := strings.Join(identity.UnionScopes(held, []string{scope}), " ")
	desc := fmt.Sprintf("the %s %s needs the scope %s, which this sign-in did not grant (it granted %s); your role (%s) allows it: sign in again and consent to %s",
		what, name, scope, strings.Join(held, " "), caller.Role, want)

	rec := s.audit.base(caller, audited, args)
	rec.Decision, rec.Reason = store.Denied, fmt.Sprintf("needs scope %s; token has %s; step-up challenge sent", scope, strings.Join(held, " "))
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), 5*time.Second)
	defer cancel()
	if err := s.db.WithTenant(ctx, caller.Tenant, func(tx pgx.Tx) error { return store.InsertAudit(ctx, tx, rec) }); err != nil {
		// No record, no answer but "try again": the refusal is not lost.
		s.log.Error("audit record of a step-up challenge not stored", what, name, "request_id", caller.RequestID, "tenant", caller.Tenant.Key, "error", err)
		c.Response().Header().Set("Retry-After", "5")
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable", "request_id": caller.RequestID})
	}
	s.audit.written(caller.Tenant, rec)
	if what == "tool" {
		s.metrics.toolCall(name, "insufficient_scope", 0)
	} else {
		s.metrics.prompts.WithLabelValues("prompts/get", name, "insufficient_scope").Inc()
	}

	h := c.Response().Header()
	h.Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="gatehouse", error="insufficient_scope", scope=%q, resource_metadata=%q, error_description=%q`,
		want, s.resourceMetadataURL(), desc))
	h.Set("Cache-Control", "no-store")
	return c.JSON(http.StatusForbidden, map[string]any{
		"jsonrpc": "2.0",
		"id":      id,
		"error": map[string]any{"code": codeInsufficientScope, "message": desc,
			"data": map[string]any{"required_scope": scope, "scope": want}},
	})
}

// resourceMetadataURL is the protected resource metadata's URL, path-inserted
// after the resource's path (RFC 9728 §3.1): the authoritative form.
func (s *Server) resourceMetadataURL() string {
	return s.opts.PublicURL + "/.well-known/oauth-protected-resource/mcp"
}
