package mcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.yaml.in/yaml/v3"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// ToolRule is who may call a tool: a minimum role and a scope.
type ToolRule struct {
	Role  tenancy.Role
	Scope string
}

// ToolPolicy overrides the compiled-in rules of some tools (by name) and
// prompts (by "prompts/" + name).
type ToolPolicy map[string]ToolRule

// LoadToolPolicy reads a YAML policy file:
//
//	tools:
//	  add_todo: {role: viewer, scope: mcp:write}
//	prompts:
//	  project_kickoff: {role: admin, scope: mcp:write}
//
// and reports every problem at once: unknown tools, prompts, roles, scopes
// or fields. A prompt's entry is keyed "prompts/" + its name.
func LoadToolPolicy(r io.Reader) (ToolPolicy, error) {
	var doc map[string]any
	if err := yaml.NewDecoder(r).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for k := range doc {
		if k != "tools" && k != "prompts" {
			bad("%s: unknown setting (want tools or prompts)", k)
		}
	}
	pol := ToolPolicy{}
	for _, sec := range []struct {
		key, what, prefix string
		known             map[string]ToolRule
	}{{"tools", "tool", "", ToolNames()}, {"prompts", "prompt", promptPolicyPrefix, PromptNames()}} {
		entries, ok := doc[sec.key].(map[string]any)
		if !ok && doc[sec.key] != nil {
			bad("%s: want a map of %s name to {role, scope}", sec.key, sec.what)
		}
		for name, v := range entries {
			at := sec.key + "." + name
			fields, ok := v.(map[string]any)
			if !ok {
				bad("%s: want {role: …, scope: …}", at)
				continue
			}
			if _, ok := sec.known[name]; !ok {
				bad("%s: no such %s", at, sec.what)
			}
			for f := range fields {
				if f != "role" && f != "scope" {
					bad("%s.%s: unknown field (want role and scope)", at, f)
				}
			}
			role, roleIsText := fields["role"].(string)
			scope, scopeIsText := fields["scope"].(string)
			switch _, err := tenancy.ParseRole(role); {
			case fields["role"] == nil:
				bad("%s.role: missing (every entry names both role and scope)", at)
			case !roleIsText:
				bad("%s.role: want a role name, not %v", at, fields["role"])
			case err != nil:
				bad("%s.role: %w", at, err)
			}
			switch {
			case fields["scope"] == nil:
				bad("%s.scope: missing (every entry names both role and scope: one of %s)", at, strings.Join(identity.AllScopes, ", "))
			case !scopeIsText:
				bad("%s.scope: want a scope name, not %v", at, fields["scope"])
			case !slices.Contains(identity.AllScopes, scope):
				bad("%s.scope: %q is not one of %s", at, scope, strings.Join(identity.AllScopes, ", "))
			}
			pol[sec.prefix+name] = ToolRule{Role: tenancy.Role(role), Scope: scope}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("policy file:\n%w", err)
	}
	return pol, nil
}

// ToolNames lists every tool Gatehouse serves, with its compiled-in rule.
func ToolNames() map[string]ToolRule {
	out := map[string]ToolRule{}
	for _, t := range tools() {
		out[t.Name] = ToolRule{Role: t.Role, Scope: t.Scope}
	}
	return out
}

// allows reports whether the caller's role and credential scopes both
// permit the tool.
func (t *Tool) allows(c *Caller) bool {
	return c.Role.Allows(t.Role) && c.Principal.HasScope(t.Scope)
}

// visible reports whether tools/list shows t to c: when c may call it, and
// also when only the token's scope falls short and the token comes from an
// OAuth sign-in, whose client can re-authorize for the scope (calling the
// tool answers HTTP 403 insufficient_scope, see Server.stepUp). Otherwise a
// signed-in admin's client, holding the default mcp:read mcp:write, could
// never learn that the admin tools exist. API keys and client certificates
// cannot widen their scopes: they see only what they can call.
func (t *Tool) visible(c *Caller) bool {
	return t.allows(c) || (c.Role.Allows(t.Role) && authserver.SignedIn(c.Principal))
}

// denial is the tool result of a refused call: what is needed and what the
// caller has, nothing else.
func denial(t *Tool, c *Caller) *sdk.CallToolResult {
	var missing []string
	if !c.Role.Allows(t.Role) {
		missing = append(missing, fmt.Sprintf("role %s or higher (your role is %s)", t.Role, c.Role))
	}
	if !c.Principal.HasScope(t.Scope) {
		missing = append(missing, fmt.Sprintf("scope %s (your credential has %s)", t.Scope, strings.Join(c.Principal.Scopes, " ")))
	}
	return errorResult(fmt.Sprintf("ACCESS DENIED: the tool %s needs %s. Ask an admin of %s for access.",
		t.Name, strings.Join(missing, " and "), c.Tenant.Key))
}

// filterTools is receiving middleware: tools/list shows each caller only the
// tools it may call (or step up to, see visible), and marks the answer
// private to the caller. tools/call
// checks again on its own (see Server.call).
func (s *Server) filterTools(next sdk.MethodHandler) sdk.MethodHandler {
	return func(ctx context.Context, method string, req sdk.Request) (sdk.Result, error) {
		res, err := next(ctx, method, req)
		list, ok := res.(*sdk.ListToolsResult)
		if err != nil || !ok {
			return res, err
		}
		c, cerr := s.callerOf(ctx, req.GetExtra())
		visible := make([]*sdk.Tool, 0, len(list.Tools))
		for _, def := range list.Tools {
			if t := s.tools[def.Name]; t != nil && cerr == nil && t.visible(c) {
				visible = append(visible, def)
			}
		}
		filtered := *list
		filtered.Tools = visible
		filtered.Cacheable = sdk.Cacheable{TTLMs: 0, CacheScope: "private"}
		return &filtered, nil
	}
}
