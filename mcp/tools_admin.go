package mcp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// adminTools manage the tenant's members and API keys. They change the
// control schema inside the call's transaction (store.AsAdmin), so each
// change commits with its audit record.
func adminTools() []*Tool {
	return []*Tool{listMembersTool(), setMemberRoleTool(), removeMemberTool(), createAPIKeyTool(), listAPIKeysTool(), revokeAPIKeyTool(), setAPIKeyNetworksTool()}
}

func adminSpec(name, title, desc string) ToolSpec {
	return ToolSpec{Name: name, Title: title, Description: desc, Role: tenancy.Admin, Scope: identity.ScopeAdmin}
}

// asAdmin runs fn with the tenant's control-plane records. Once the call
// commits, this process forgets what it cached about the tenant's members
// and keys at once (other processes hear through NOTIFY).
func (c *Call) asAdmin(ctx context.Context, fn func(*store.Admin) error) error {
	err := c.srv.db.AsAdmin(ctx, c.Tx, c.Tenant, fn)
	if err == nil {
		c.afterCommit = append(c.afterCommit, func() {
			c.srv.opts.Tenancy.Forget(c.Tenant.ID)
			c.srv.opts.Resolver.Forget(func(p *identity.Principal) bool { return p.TenantID == c.Tenant.ID })
		})
	}
	var ue *userError
	switch {
	case errors.As(err, &ue):
		return err // already says what is wrong
	case errors.Is(err, store.ErrLastAdmin):
		// A refusal, audited as DENIED with this reason.
		return refusef("%s must keep at least one admin: make someone else admin first", c.Tenant.Key)
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: %w", &userError{msg: "no such member or key in " + c.Tenant.Key}, store.ErrNotFound)
	}
	return err
}

type memberOut struct {
	ID         string     `json:"id"`
	Email      string     `json:"email,omitempty"`
	Name       string     `json:"name,omitempty"`
	Role       string     `json:"role"`
	Identities []string   `json:"identities"`
	Since      time.Time  `json:"since"`
	RemovedAt  *time.Time `json:"removed_at,omitempty"`
	// LastSeen: their latest console page, OAuth client refresh or key use.
	LastSeen *time.Time `json:"last_seen,omitempty"`
}

func toMember(m *tenancy.Member) memberOut {
	out := memberOut{ID: m.ID, Email: m.Email, Name: m.Name, Role: string(m.Role), Identities: m.Subjects, Since: m.CreatedAt}
	if out.Identities == nil {
		out.Identities = []string{}
	}
	if !m.RemovedAt.IsZero() {
		out.RemovedAt = &m.RemovedAt
	}
	return out
}

type listMembersIn struct{}

type listMembersOut struct {
	Members []memberOut `json:"members"`
}

func (o listMembersOut) Text() string {
	if len(o.Members) == 0 {
		return "Your organisation has no members yet: people become members when they first sign in (the first is admin)."
	}
	var b strings.Builder
	for _, m := range o.Members {
		fmt.Fprintf(&b, "- %s: %s (id %s", m.who(), m.state(), m.ID)
		if m.Email != "" && len(m.Identities) > 0 {
			fmt.Fprintf(&b, "; signs in as %s", strings.Join(m.Identities, ", "))
		}
		b.WriteString(")\n")
	}
	return b.String()
}

// who names a member: by email, else by the identities they sign in with.
func (m memberOut) who() string {
	if m.Email != "" {
		return m.Email
	}
	if len(m.Identities) > 0 {
		return strings.Join(m.Identities, ", ")
	}
	return "member " + m.ID
}

func (m memberOut) state() string {
	if m.RemovedAt != nil {
		return "removed"
	}
	return m.Role
}

// findMember resolves what a caller (often a model) calls a member: the
// member's id, email (any case) or a sign-in identity (github:5678) from
// list_members.
func findMember(ctx context.Context, c *Call, a *store.Admin, ref string) (string, error) {
	ref = strings.TrimSpace(ref)
	ms, err := a.Members(ctx)
	if err != nil {
		return "", err
	}
	var hits []*tenancy.Member
	for _, m := range ms {
		if m.ID == ref {
			return m.ID, nil
		}
		if (m.Email != "" && strings.EqualFold(m.Email, ref)) || slices.Contains(m.Subjects, ref) {
			hits = append(hits, m)
		}
	}
	switch len(hits) {
	case 1:
		return hits[0].ID, nil
	case 0:
		return "", fmt.Errorf("%w: %w", &userError{msg: fmt.Sprintf("no member %q in %s: give the id, email or identity list_members shows", ref, c.Tenant.Key)}, store.ErrNotFound)
	}
	var ids []string
	for _, m := range hits {
		ids = append(ids, m.ID)
	}
	return "", userErrorf("%q matches several members (ids %s): give the id", ref, strings.Join(ids, ", "))
}

func listMembersTool() *Tool {
	spec := adminSpec("list_members", "List members", "Lists the people in your organisation, their roles and the identities they sign in with.")
	spec.ReadOnly, spec.Idempotent = true, true
	return newTool(spec, func(ctx context.Context, c *Call, _ listMembersIn) (listMembersOut, error) {
		out := listMembersOut{Members: []memberOut{}}
		err := c.asAdmin(ctx, func(a *store.Admin) error {
			ms, err := a.Members(ctx)
			if err != nil {
				return err
			}
			seen, err := a.LastSeen(ctx)
			for _, m := range ms {
				mo := toMember(m)
				if t, ok := seen[m.ID]; ok {
					mo.LastSeen = &t
				}
				out.Members = append(out.Members, mo)
			}
			return err
		})
		return out, err
	})
}

type setMemberRoleIn struct {
	MemberID string `json:"member_id" jsonschema:"the member's id, email or sign-in identity (list_members)"`
	Role     string `json:"role" jsonschema:"admin, developer or viewer"`
}

func roleEnum(s *jsonschema.Schema, prop string) {
	s.Properties[prop].Enum = []any{string(tenancy.Admin), string(tenancy.Developer), string(tenancy.Viewer)}
}

func setMemberRoleTool() *Tool {
	spec := adminSpec("set_member_role", "Set a member's role", "Changes a member's role; restores a removed member. An organisation always keeps one admin.")
	spec.Idempotent = true
	spec.Input = func(s *jsonschema.Schema) { roleEnum(s, "role") }
	return newTool(spec, func(ctx context.Context, c *Call, in setMemberRoleIn) (memberRoleOut, error) {
		var out memberRoleOut
		err := c.asAdmin(ctx, func(a *store.Admin) error {
			id, err := findMember(ctx, c, a, in.MemberID)
			if err != nil {
				return err
			}
			m, err := a.SetMemberRole(ctx, id, tenancy.Role(in.Role))
			if err == nil {
				out = memberRoleOut(toMember(m))
			}
			return err
		})
		return out, err
	})
}

// memberRoleOut is a member after set_member_role.
type memberRoleOut memberOut

func (o memberRoleOut) Text() string {
	return fmt.Sprintf("%s (id %s) is now %s.", memberOut(o).who(), o.ID, o.Role)
}

type removeMemberIn struct {
	MemberID string `json:"member_id" jsonschema:"the member's id, email or sign-in identity (list_members)"`
}

type removeMemberOut struct {
	Member      memberOut `json:"member"`
	RevokedKeys []string  `json:"revoked_api_keys"`
}

func (o removeMemberOut) Text() string {
	keys := "they had created no API keys"
	if n := len(o.RevokedKeys); n > 0 {
		keys = fmt.Sprintf("revoked the %s they created: %s", plural(int64(n), "API key", "API keys"), strings.Join(o.RevokedKeys, ", "))
	}
	return fmt.Sprintf("Removed %s (id %s) from your organisation; %s. set_member_role restores them.", o.Member.who(), o.Member.ID, keys)
}

func removeMemberTool() *Tool {
	spec := adminSpec("remove_member", "Remove a member",
		"Removes a member from your organisation: they are refused from now on (until set_member_role restores them) and the API keys they created are revoked at once. Their data stays.")
	spec.Destructive, spec.Idempotent = true, true
	return newTool(spec, func(ctx context.Context, c *Call, in removeMemberIn) (removeMemberOut, error) {
		var out removeMemberOut
		err := c.asAdmin(ctx, func(a *store.Admin) error {
			id, err := findMember(ctx, c, a, in.MemberID)
			if err != nil {
				return err
			}
			m, revoked, err := a.RemoveMember(ctx, id)
			if err == nil {
				out = removeMemberOut{Member: toMember(m), RevokedKeys: revoked}
				if out.RevokedKeys == nil {
					out.RevokedKeys = []string{}
				}
			}
			return err
		})
		return out, err
	})
}

type keyOut struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	Scopes    []string   `json:"scopes"`
	CreatedBy string     `json:"created_by"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	LastUsed  *time.Time `json:"last_used_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// AllowedNetworks: where the key may be used from; empty: anywhere.
	AllowedNetworks []string `json:"allowed_networks" jsonschema:"the source networks the key may be used from (CIDR); empty: anywhere"`
}

func toKey(k *apikey.Key) keyOut {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	return keyOut{ID: k.ID, Name: k.Name, Role: k.Role, Scopes: k.Scopes, CreatedBy: k.CreatedBy, CreatedAt: k.CreatedAt,
		ExpiresAt: opt(k.ExpiresAt), LastUsed: opt(k.LastUsedAt), RevokedAt: opt(k.RevokedAt), AllowedNetworks: k.AllowedNetworks.Strings()}
}

type createAPIKeyIn struct {
	Name          string   `json:"name" jsonschema:"what the key is for"`
	Role          string   `json:"role" jsonschema:"admin, developer or viewer; not above your own"`
	Scopes        []string `json:"scopes,omitempty" jsonschema:"mcp:read, mcp:write, mcp:admin; not beyond your own (default: all of yours the role can use)"`
	ExpiresInDays int      `json:"expires_in_days,omitempty" jsonschema:"days until the key expires, 1 to 3650 (default: never)"`
	// AllowedNetworks restrict where the key may be used from.
	AllowedNetworks []string `json:"allowed_networks,omitempty" jsonschema:"source networks the key may be used from: CIDRs such as 10.0.0.0/8 or 2001:db8::/32, or single addresses (at most 64; default: anywhere)"`
}

type createAPIKeyOut struct {
	Key    keyOut `json:"key"`
	Secret string `json:"secret" jsonschema:"the key itself: shown this once, stored only as a hash"`
}

func (o createAPIKeyOut) Text() string {
	return fmt.Sprintf("API key %s (%s, role %s, scopes %s, usable from %s). Its secret is shown this once; store it now:\n\n%s\n",
		o.Key.ID, o.Key.Name, o.Key.Role, strings.Join(o.Key.Scopes, " "), o.Key.networks(), o.Secret)
}

// networks says where a key may be used from.
func (k keyOut) networks() string {
	if len(k.AllowedNetworks) == 0 {
		return "anywhere"
	}
	return strings.Join(k.AllowedNetworks, ", ")
}

// parseNetworksArg reads an allowed_networks argument, refusing it as
// invalid arguments naming each bad entry.
func parseNetworksArg(entries []string) (identity.Networks, error) {
	ns, err := identity.ParseNetworks(entries)
	if err != nil {
		return nil, invalidArgs("allowed_networks: " + strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return ns, nil
}

func createAPIKeyTool() *Tool {
	spec := adminSpec("create_api_key", "Create an API key", "Creates an API key for a service of your organisation. The secret is shown once.")
	spec.Input = createAPIKeyInput
	return newTool(spec, func(ctx context.Context, c *Call, in createAPIKeyIn) (createAPIKeyOut, error) {
		if len(in.Scopes) == 0 { // the caller's own, less mcp:admin for a key below admin
			role := tenancy.Role(in.Role)
			for _, sc := range c.Principal.Scopes {
				if sc != identity.ScopeAdmin || role == tenancy.Admin {
					in.Scopes = append(in.Scopes, sc)
				}
			}
		}
		return issueAPIKey(ctx, c, in)
	})
}

// createAPIKeyInput is the input schema of the tools that create keys.
func createAPIKeyInput(s *jsonschema.Schema) {
	roleEnum(s, "role")
	s.Properties["name"].MinLength, s.Properties["name"].MaxLength = new(1), new(100)
	s.Properties["scopes"].Items.Enum = []any{identity.ScopeRead, identity.ScopeWrite, identity.ScopeAdmin}
	s.Properties["expires_in_days"].Minimum, s.Properties["expires_in_days"].Maximum = new(1.0), new(3650.0)
	s.Properties["allowed_networks"].MaxItems = new(identity.MaxNetworks)
}

// issueAPIKey creates the key in describes in c's tenant, made by c, and
// returns it with its secret (shown once). A key never carries more than
// its maker holds: its role is at most c's role and its scopes are among
// c's credential's; otherwise, or with no scope, the call is refused as
// invalid arguments naming the excess.
func issueAPIKey(ctx context.Context, c *Call, in createAPIKeyIn) (createAPIKeyOut, error) {
	role := tenancy.Role(in.Role)
	if !c.Role.Allows(role) {
		return createAPIKeyOut{}, invalidArgs(fmt.Sprintf("role %s is above your own (%s)", role, c.Role))
	}
	if len(in.Scopes) == 0 {
		return createAPIKeyOut{}, invalidArgs("name at least one scope")
	}
	for _, sc := range in.Scopes {
		if !c.Principal.HasScope(sc) {
			return createAPIKeyOut{}, invalidArgs(fmt.Sprintf("scope %s is beyond your own credential's", sc))
		}
	}
	nets, err := parseNetworksArg(in.AllowedNetworks)
	if err != nil {
		return createAPIKeyOut{}, err
	}
	var expires time.Time
	if in.ExpiresInDays > 0 {
		expires = time.Now().AddDate(0, 0, in.ExpiresInDays)
	}
	secret, k := apikey.New(c.Tenant.ID, string(role), slices.Compact(slices.Sorted(slices.Values(in.Scopes))), in.Name, c.Principal.Subject, expires)
	k.AllowedNetworks = nets
	err = c.asAdmin(ctx, func(a *store.Admin) error { return a.CreateAPIKey(ctx, k, c.MemberID) })
	return createAPIKeyOut{Key: toKey(k), Secret: secret}, err
}

type listAPIKeysIn struct{}

type listAPIKeysOut struct {
	Keys []keyOut `json:"keys"`
}

func (o listAPIKeysOut) Text() string {
	if len(o.Keys) == 0 {
		return "Your organisation has no API keys."
	}
	var b strings.Builder
	for _, k := range o.Keys {
		b.WriteString("- " + k.line() + "\n")
	}
	return b.String()
}

// line describes a key in one line, never its secret.
func (k keyOut) line() string {
	name := k.Name
	if name == "" {
		name = "unnamed"
	}
	s := fmt.Sprintf("%s (%s): role %s, scopes %s, created %s by %s", k.ID, name, k.Role, strings.Join(k.Scopes, " "),
		k.CreatedAt.UTC().Format(time.DateOnly), k.CreatedBy)
	switch {
	case k.RevokedAt != nil:
		s += ", revoked " + k.RevokedAt.UTC().Format(time.RFC3339)
	case k.ExpiresAt != nil && k.ExpiresAt.Before(time.Now()):
		s += ", expired " + k.ExpiresAt.UTC().Format(time.DateOnly)
	case k.ExpiresAt != nil:
		s += ", expires " + k.ExpiresAt.UTC().Format(time.DateOnly)
	}
	if k.LastUsed != nil {
		s += ", last used " + k.LastUsed.UTC().Format(time.RFC3339)
	} else {
		s += ", never used"
	}
	return s + ", usable from " + k.networks()
}

func listAPIKeysTool() *Tool {
	spec := adminSpec("list_api_keys", "List API keys", "Lists your organisation's API keys (never their secrets).")
	spec.ReadOnly, spec.Idempotent = true, true
	return newTool(spec, func(ctx context.Context, c *Call, _ listAPIKeysIn) (listAPIKeysOut, error) {
		out := listAPIKeysOut{Keys: []keyOut{}}
		err := c.asAdmin(ctx, func(a *store.Admin) error {
			ks, err := a.APIKeys(ctx)
			for _, k := range ks {
				out.Keys = append(out.Keys, toKey(k))
			}
			return err
		})
		return out, err
	})
}

type revokeAPIKeyIn struct {
	ID string `json:"id" jsonschema:"the key's id (list_api_keys)"`
}

func revokeAPIKeyTool() *Tool {
	spec := adminSpec("revoke_api_key", "Revoke an API key", "Revokes an API key at once, on every server.")
	spec.Destructive, spec.Idempotent = true, true
	return newTool(spec, func(ctx context.Context, c *Call, in revokeAPIKeyIn) (revokedKeyOut, error) {
		var out revokedKeyOut
		err := c.asAdmin(ctx, func(a *store.Admin) error {
			k, err := a.RevokeAPIKey(ctx, in.ID)
			if err == nil {
				out = revokedKeyOut(toKey(k))
			}
			return err
		})
		return out, err
	})
}

// revokedKeyOut is a key after revoke_api_key.
type revokedKeyOut keyOut

func (o revokedKeyOut) Text() string {
	return fmt.Sprintf("Revoked API key %s; every server refuses it from now on.", keyOut(o).line())
}

type setAPIKeyNetworksIn struct {
	ID              string   `json:"id" jsonschema:"the key's id (list_api_keys)"`
	AllowedNetworks []string `json:"allowed_networks" jsonschema:"the source networks the key may be used from from now on: CIDRs such as 10.0.0.0/8 or 2001:db8::/32, or single addresses (at most 64); an empty list lets it be used from anywhere"`
}

// setAPIKeyNetworksTool replaces where a key may be used from: from the
// key's next call, on every server (the key's cached validation is
// forgotten everywhere, as on revocation).
func setAPIKeyNetworksTool() *Tool {
	spec := adminSpec("set_api_key_networks", "Set an API key's allowed networks",
		"Replaces the source networks an API key of your organisation may be used from (an empty list: anywhere). Applies from the key's next call, on every server.")
	spec.Idempotent = true
	spec.Input = func(s *jsonschema.Schema) { s.Properties["allowed_networks"].MaxItems = new(identity.MaxNetworks) }
	return newTool(spec, func(ctx context.Context, c *Call, in setAPIKeyNetworksIn) (keyNetworksOut, error) {
		var out keyNetworksOut
		nets, err := parseNetworksArg(in.AllowedNetworks)
		if err != nil {
			return out, err
		}
		err = c.asAdmin(ctx, func(a *store.Admin) error {
			k, err := a.SetAPIKeyNetworks(ctx, in.ID, nets)
			if err == nil {
				out = keyNetworksOut(toKey(k))
			}
			return err
		})
		return out, err
	})
}

// keyNetworksOut is a key after set_api_key_networks.
type keyNetworksOut keyOut

func (o keyNetworksOut) Text() string {
	return fmt.Sprintf("API key %s (%s) may now be used from %s.", o.ID, o.Name, keyOut(o).networks())
}
