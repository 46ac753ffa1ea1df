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
func Placer(tenants *tenancy.Service) authserver.Placer {
	return func(ctx context.Context, p *identity.Principal) (authserver.Placement, error) {
		m, err := tenants.Resolve(ctx, p)
		if err != nil {
			if a := authFailure(err); a.status == http.StatusUnauthorized || a.status == http.StatusForbidden {
				return authserver.Placement{}, authserver.Refuse("%s", a.description)
			}
			return authserver.Placement{}, err
		}
		return authserver.Placement{Tenant: m.Tenant.Key, Role: string(m.Role)}, nil
	}
}
