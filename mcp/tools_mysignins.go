package mcp

import (
	"context"
	"errors"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// mySignInTools let a person see and revoke the MCP clients they signed in
// to with their account (their refresh-token families). Any member may:
// revoking only takes their own access away.
func mySignInTools() []*Tool {
	return []*Tool{listMySignInsTool(), revokeMySignInTool()}
}

type signInOut struct {
	ID           string    `json:"id" jsonschema:"the sign-in's id (revoke_my_sign_in)"`
	ClientID     string    `json:"client_id"`
	ClientName   string    `json:"client_name,omitempty"`
	RedirectHost string    `json:"redirect_host,omitempty" jsonschema:"where the client receives its sign-in"`
	Scope        string    `json:"scope"`
	Since        time.Time `json:"since"`
	LastUsed     time.Time `json:"last_used"`
}

type listMySignInsIn struct{}

type listMySignInsOut struct {
	SignIns []signInOut `json:"sign_ins"`
}

func listMySignInsTool() *Tool {
	spec := ToolSpec{Name: "list_my_sign_ins", Title: "List my sign-ins",
		Description: "Lists the MCP clients you signed in to with your account: client, where it returns, scopes, last refresh.",
		Role:        tenancy.Viewer, Scope: identity.ScopeRead, ReadOnly: true, Idempotent: true}
	return newTool(spec, func(ctx context.Context, c *Call, _ listMySignInsIn) (listMySignInsOut, error) {
		out := listMySignInsOut{SignIns: []signInOut{}}
		if err := c.needMember(); err != nil {
			return out, err
		}
		err := c.asAdmin(ctx, func(a *store.Admin) error {
			ss, err := a.SignIns(ctx, c.Principal.Subject)
			for _, s := range ss {
				out.SignIns = append(out.SignIns, signInOut{ID: s.Family, ClientID: s.ClientID, ClientName: s.ClientName,
					RedirectHost: s.RedirectHost, Scope: s.Scope, Since: s.Since, LastUsed: s.LastUsed})
			}
			return err
		})
		return out, err
	})
}

type revokeMySignInIn struct {
	ID string `json:"id" jsonschema:"the sign-in's id (list_my_sign_ins)"`
}

type revokeMySignInOut struct {
	Revoked string `json:"revoked"`
}

func revokeMySignInTool() *Tool {
	spec := ToolSpec{Name: "revoke_my_sign_in", Title: "Revoke one of my sign-ins",
		Description: "Signs one of your MCP clients out: its refresh token stops at once and its access tokens within a second on every server.",
		Role:        tenancy.Viewer, Scope: identity.ScopeRead, Destructive: true}
	return newTool(spec, func(ctx context.Context, c *Call, in revokeMySignInIn) (revokeMySignInOut, error) {
		if err := c.needMember(); err != nil {
			return revokeMySignInOut{}, err
		}
		err := c.asAdmin(ctx, func(a *store.Admin) error { return a.RevokeSignIn(ctx, c.Principal.Subject, in.ID) })
		if errors.Is(err, store.ErrNotFound) {
			return revokeMySignInOut{}, notFound("sign-in of yours", in.ID)
		}
		return revokeMySignInOut{Revoked: in.ID}, err
	})
}
