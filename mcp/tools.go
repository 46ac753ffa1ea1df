package mcp

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// tools returns every tool Gatehouse serves: the registry. Each entry says
// the minimum role and the scope it needs; each group lives in its own file.
func tools() []*Tool {
	var all []*Tool
	for _, group := range [][]*Tool{{whoamiTool()}, todoTools(), projectTools(), documentTools(), databaseTools(), adminTools(), {setSemanticSearchTool()}, myKeyTools(), mySignInTools(), {getUsageTool(), readAuditLogTool(), listAlertsTool(), acknowledgeAlertTool()}} {
		all = append(all, group...)
	}
	return all
}

type whoamiIn struct{}

type whoamiOut struct {
	Subject    string     `json:"subject" jsonschema:"stable identifier of the caller, qualified by its identity provider"`
	Provider   string     `json:"provider" jsonschema:"how the caller authenticated: apikey, google, github, ..."`
	Email      string     `json:"email,omitempty"`
	Name       string     `json:"name,omitempty"`
	Tenant     string     `json:"tenant" jsonschema:"the organisation (email domain) or personal tenant the caller acts in"`
	TenantKind string     `json:"tenant_kind" jsonschema:"organization or personal"`
	Role       string     `json:"role" jsonschema:"the caller's role in the tenant: admin, developer or viewer"`
	Scopes     []string   `json:"scopes" jsonschema:"what the credential was delegated"`
	APIKeyID   string     `json:"api_key_id,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty" jsonschema:"when the credential expires"`
}

func (o whoamiOut) Text() string {
	who := o.Subject
	if o.Email != "" {
		who = o.Email + " (" + o.Subject + ")"
	}
	return fmt.Sprintf("You are %s, %s in tenant %s, with scopes %s.", who, o.Role, o.Tenant, strings.Join(o.Scopes, " "))
}

func whoamiTool() *Tool {
	return newTool(ToolSpec{
		Name:        "whoami",
		Title:       "Who am I",
		Description: "Tells who you are authenticated as: your identity, your tenant (organisation), your role there and the scopes of your credential.",
		Role:        tenancy.Viewer,
		Scope:       identity.ScopeRead,
		ReadOnly:    true,
		Idempotent:  true,
		// Everything it says is the caller's, resolved before the call.
		NoTenantData: true,
	}, func(ctx context.Context, c *Call, _ whoamiIn) (whoamiOut, error) {
		p := c.Principal
		out := whoamiOut{
			Subject: p.Subject, Provider: p.Provider, Email: p.Email, Name: p.Name,
			Tenant: c.Tenant.Key, TenantKind: string(c.Tenant.Kind), Role: string(c.Role),
			Scopes: p.Scopes, APIKeyID: p.APIKeyID,
		}
		if out.Scopes == nil {
			out.Scopes = []string{}
		}
		if !p.Expiry.IsZero() {
			out.ExpiresAt = &p.Expiry
		}
		return out, nil
	})
}
