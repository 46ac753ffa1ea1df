package mcp

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// myKeyTools let a developer manage the API keys they made themselves (for
// their own scripts and CI jobs) without being an admin: a key never above
// their own role or beyond their own scopes, listed and revoked by them
// only. Keys are a person's: an API key cannot make more keys this way.
func myKeyTools() []*Tool {
	return []*Tool{listMyAPIKeysTool(), createMyAPIKeyTool(), revokeMyAPIKeyTool()}
}

func (c *Call) needMember() error {
	if c.MemberID == "" {
		return userErrorf("only a person signed in as a member has keys of their own; an API key or certificate cannot")
	}
	return nil
}

func listMyAPIKeysTool() *Tool {
	spec := ToolSpec{Name: "list_my_api_keys", Title: "List my API keys", Description: "Lists the API keys you created (never their secrets).",
		Role: tenancy.Developer, Scope: identity.ScopeRead, ReadOnly: true, Idempotent: true}
	return newTool(spec, func(ctx context.Context, c *Call, _ listAPIKeysIn) (listAPIKeysOut, error) {
		out := listAPIKeysOut{Keys: []keyOut{}}
		if err := c.needMember(); err != nil {
			return out, err
		}
		err := c.asAdmin(ctx, func(a *store.Admin) error {
			ks, err := a.MemberAPIKeys(ctx, c.MemberID)
			for _, k := range ks {
				out.Keys = append(out.Keys, toKey(k))
			}
			return err
		})
		return out, err
	})
}

func createMyAPIKeyTool() *Tool {
	spec := ToolSpec{Name: "create_my_api_key", Title: "Create an API key of my own",
		Description: "Creates an API key for your own scripts or CI, never above your role or beyond your scopes. The secret is shown once.",
		Role:        tenancy.Developer, Scope: identity.ScopeWrite}
	spec.Input = func(s *jsonschema.Schema) {
		roleEnum(s, "role")
		s.Properties["name"].MinLength, s.Properties["name"].MaxLength = new(1), new(100)
		s.Properties["scopes"].Items.Enum = []any{identity.ScopeRead, identity.ScopeWrite, identity.ScopeAdmin}
		s.Properties["expires_in_days"].Minimum, s.Properties["expires_in_days"].Maximum = new(1.0), new(3650.0)
	}
	return newTool(spec, func(ctx context.Context, c *Call, in createAPIKeyIn) (createAPIKeyOut, error) {
		if err := c.needMember(); err != nil {
			return createAPIKeyOut{}, err
		}
		role := tenancy.Role(in.Role)
		if !c.Role.Allows(role) {
			return createAPIKeyOut{}, invalidArgs(fmt.Sprintf("role %s is above your own (%s)", role, c.Role))
		}
		scopes := in.Scopes
		if len(scopes) == 0 {
			return createAPIKeyOut{}, invalidArgs("name at least one scope")
		}
		for _, sc := range scopes {
			if !c.Principal.HasScope(sc) {
				return createAPIKeyOut{}, invalidArgs(fmt.Sprintf("scope %s is beyond your own credential's", sc))
			}
		}
		var expires time.Time
		if in.ExpiresInDays > 0 {
			expires = time.Now().AddDate(0, 0, in.ExpiresInDays)
		}
		secret, k := apikey.New(c.Tenant.ID, string(role), slices.Compact(slices.Sorted(slices.Values(scopes))), in.Name, c.Principal.Subject, expires)
		err := c.asAdmin(ctx, func(a *store.Admin) error { return a.CreateAPIKey(ctx, k, c.MemberID) })
		return createAPIKeyOut{Key: toKey(k), Secret: secret}, err
	})
}

func revokeMyAPIKeyTool() *Tool {
	spec := ToolSpec{Name: "revoke_my_api_key", Title: "Revoke an API key of mine",
		Description: "Revokes an API key you created, at once, on every server.",
		Role:        tenancy.Developer, Scope: identity.ScopeWrite, Destructive: true, Idempotent: true}
	return newTool(spec, func(ctx context.Context, c *Call, in revokeAPIKeyIn) (keyOut, error) {
		var out keyOut
		if err := c.needMember(); err != nil {
			return out, err
		}
		err := c.asAdmin(ctx, func(a *store.Admin) error {
			k, err := a.RevokeMemberAPIKey(ctx, in.ID, c.MemberID)
			if err == nil {
				out = toKey(k)
			}
			return err
		})
		return out, err
	})
}
