package mcp

import (
	"context"
	"net/http"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Placer places the people who sign in through the authorization server
// with the rules, and in the words, of a request to /mcp: a person who
// would be refused here is refused at sign-in, with the same explanation.
// The placement names the scopes the person's role can use under policy
// (see [RoleScopes]), which caps what a sign-in grants.
func Placer(tenants *tenancy.Service, policy ToolPolicy) authserver.Placer {
	scopes := map[tenancy.Role][]string{}
	for _, r := range tenancy.Roles {
		scopes[r] = RoleScopes(r, policy)
	}
	return func(ctx context.Context, p *identity.Principal) (authserver.Placement, error) {
		m, err := tenants.Resolve(ctx, p)
		if err != nil {
			if a := authFailure(err); a.status == http.StatusUnauthorized || a.status == http.StatusForbidden {
				return authserver.Placement{}, authserver.Refuse("%s", a.description)
			}
			return authserver.Placement{}, err
		}
		return authserver.Placement{Tenant: m.Tenant.Key, Role: string(m.Role), Scopes: scopes[m.Role]}, nil
	}
}

// RoleScopes lists, canonically ordered, the scopes a member with role can
// make use of: mcp:read (every request needs it) and the scope of every
// tool the role may call, and of every prompt it may get, under the
// compiled-in rules as policy overrides them. A scope beyond these would let the token do nothing more, so a
// sign-in does not ask for it (DESIGN §6: a tool needs both).
func RoleScopes(role tenancy.Role, policy ToolPolicy) []string {
	out := []string{identity.ScopeRead}
	rules := ToolNames()
	for name, rule := range PromptNames() {
		rules[promptPolicyPrefix+name] = rule
	}
	for name, rule := range rules {
		if o, ok := policy[name]; ok {
			rule = o
		}
		if role.Allows(rule.Role) {
			out = identity.UnionScopes(out, []string{rule.Scope})
		}
	}
	return out
}
