package mcp

import (
	"context"

	"github.com/gatehouse-mcp/gatehouse/identity"
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
	spec.Input = createAPIKeyInput
	return newTool(spec, func(ctx context.Context, c *Call, in createAPIKeyIn) (createAPIKeyOut, error) {
		if err := c.needMember(); err != nil {
			return createAPIKeyOut{}, err
		}
		return issueAPIKey(ctx, c, in)
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
