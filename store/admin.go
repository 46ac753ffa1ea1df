package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// ErrLastAdmin refuses a change that would leave a tenant without an admin.
var ErrLastAdmin = errors.New("the organisation must keep at least one admin")

// Admin is the control-plane work a tenant's admin may do through the
// tools: members and API keys of that one tenant. It runs inside the tool
// call's transaction, so a change commits together with its audit record.
type Admin struct {
	db *DB
	tx pgx.Tx
	t  *tenancy.Tenant
}

// AsAdmin runs fn in tx (a WithTenant transaction) with Gatehouse's own
// privileges, which the control schema needs, then returns tx to the
// tenant role. Only Gatehouse's fixed SQL runs in fn; every statement
// names t's id, so fn reaches no other tenant.
//
// In a read ([DB.InTenantReadOnly]), whose statements each carry the
// tenant's settings, fn's statements carry the schema and read-only
// settings but not the role.
func (db *DB) AsAdmin(ctx context.Context, tx pgx.Tx, t *tenancy.Tenant, fn func(*Admin) error) error {
	if rt, ok := tx.(*readTx); ok {
		rt.asOwner = true
		defer func() { rt.asOwner = false }()
		return fn(&Admin{db: db, tx: tx, t: t})
	}
	if _, err := tx.Exec(ctx, "SELECT set_config('role', 'none', true)"); err != nil {
		return err
	}
	if err := fn(&Admin{db: db, tx: tx, t: t}); err != nil {
		return err
	}
	if t.DBRole == "" {
		return nil
	}
	_, err := tx.Exec(ctx, "SELECT set_config('role', $1, true)", t.DBRole)
	return err
}

// Members lists the tenant's members (removed ones too), oldest first.
func (a *Admin) Members(ctx context.Context) ([]*tenancy.Member, error) {
	rows, _ := a.tx.Query(ctx, selectMember+" WHERE m.tenant_id = $1 ORDER BY m.created_at, m.id", a.t.ID)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*tenancy.Member, error) { return scanMember(r) })
}

func (a *Admin) member(ctx context.Context, id string) (*tenancy.Member, error) {
	if !IsUUID(id) {
		return nil, ErrNotFound
	}
	return scanMember(a.tx.QueryRow(ctx, selectMember+" WHERE m.tenant_id = $1 AND m.id = $2 FOR UPDATE OF m", a.t.ID, id))
}

// keepsAnAdmin refuses to take the admin role away from the last admin.
func (a *Admin) keepsAnAdmin(ctx context.Context, m *tenancy.Member) error {
	if m.Role != tenancy.Admin || !m.RemovedAt.IsZero() {
		return nil
	}
	var others int
	err := a.tx.QueryRow(ctx, `SELECT count(*) FROM gatehouse.members WHERE tenant_id = $1 AND role = 'admin'
		AND removed_at IS NULL AND id <> $2`, a.t.ID, m.ID).Scan(&others)
	if err == nil && others == 0 {
		err = ErrLastAdmin
	}
	return err
}

// SetMemberRole changes a member's role; a removed member is restored.
func (a *Admin) SetMemberRole(ctx context.Context, memberID string, role tenancy.Role) (*tenancy.Member, error) {
	m, err := a.member(ctx, memberID)
	if err != nil {
		return nil, err
	}
	if role != tenancy.Admin {
		if err := a.keepsAnAdmin(ctx, m); err != nil {
			return nil, err
		}
	}
	if _, err := a.tx.Exec(ctx, "UPDATE gatehouse.members SET role = $3, removed_at = NULL WHERE tenant_id = $1 AND id = $2", a.t.ID, m.ID, role); err != nil {
		return nil, err
	}
	m.Role, m.RemovedAt = role, time.Time{}
	return m, a.db.notify(ctx, a.tx, Invalidation{Kind: InvalidateTenant, ID: a.t.ID})
}

// RemoveMember removes a member (who is then refused, until restored) and
// revokes the API keys they created; their data stays with the tenant.
// It returns the revoked keys' ids.
func (a *Admin) RemoveMember(ctx context.Context, memberID string) (*tenancy.Member, []string, error) {
	m, err := a.member(ctx, memberID)
	if err != nil {
		return nil, nil, err
	}
	if err := a.keepsAnAdmin(ctx, m); err != nil {
		return nil, nil, err
	}
	if _, err := a.tx.Exec(ctx, "UPDATE gatehouse.members SET removed_at = coalesce(removed_at, now()) WHERE tenant_id = $1 AND id = $2", a.t.ID, m.ID); err != nil {
		return nil, nil, err
	}
	rows, _ := a.tx.Query(ctx, `UPDATE gatehouse.api_keys SET revoked_at = now()
		WHERE tenant_id = $1 AND member_id = $2 AND revoked_at IS NULL RETURNING id`, a.t.ID, m.ID)
	revoked, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, nil, err
	}
	for _, id := range revoked {
		if err := a.db.notify(ctx, a.tx, Invalidation{Kind: InvalidateAPIKey, ID: id}); err != nil {
			return nil, nil, err
		}
	}
	m.RemovedAt = time.Now()
	return m, revoked, a.db.notify(ctx, a.tx, Invalidation{Kind: InvalidateTenant, ID: a.t.ID})
}

// CreateAPIKey stores a key of this tenant, made by memberID ("" when the
// caller is itself a key).
func (a *Admin) CreateAPIKey(ctx context.Context, k *apikey.Key, memberID string) error {
	if k.TenantID != a.t.ID {
		return fmt.Errorf("a key for another tenant")
	}
	if err := createAPIKey(ctx, a.tx, k); err != nil {
		return err
	}
	if memberID == "" {
		return nil
	}
	_, err := a.tx.Exec(ctx, "UPDATE gatehouse.api_keys SET member_id = $2 WHERE id = $1", k.ID, memberID)
	return err
}

// APIKeys lists the tenant's keys, newest first.
func (a *Admin) APIKeys(ctx context.Context) ([]*apikey.Key, error) {
	rows, _ := a.tx.Query(ctx, selectAPIKey+" WHERE k.tenant_id = $1 ORDER BY k.created_at DESC, k.id", a.t.ID)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*apikey.Key, error) { return scanAPIKey(r) })
}

// RevokeAPIKey revokes one of the tenant's keys (ErrNotFound for any other).
func (a *Admin) RevokeAPIKey(ctx context.Context, id string) (*apikey.Key, error) {
	if _, err := a.tx.Exec(ctx, "UPDATE gatehouse.api_keys SET revoked_at = now() WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL", id, a.t.ID); err != nil {
		return nil, err
	}
	k, err := scanAPIKey(a.tx.QueryRow(ctx, selectAPIKey+" WHERE k.id = $1 AND k.tenant_id = $2", id, a.t.ID))
	if errors.Is(err, apikey.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return k, a.db.notify(ctx, a.tx, Invalidation{Kind: InvalidateAPIKey, ID: id})
}

// SetAPIKeyNetworks replaces the allowed networks of one of the tenant's
// keys (ErrNotFound for any other, or a revoked one); empty: anywhere.
// Every Gatehouse process forgets its cached validation of the key once
// the transaction commits (the same notice as a revocation), so the new
// list applies to the key's next call on every replica.
func (a *Admin) SetAPIKeyNetworks(ctx context.Context, id string, ns identity.Networks) (*apikey.Key, error) {
	tag, err := a.tx.Exec(ctx, "UPDATE gatehouse.api_keys SET allowed_networks = $3 WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
		id, a.t.ID, prefixes(ns))
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() == 0 {
		return nil, ErrNotFound
	}
	k, err := scanAPIKey(a.tx.QueryRow(ctx, selectAPIKey+" WHERE k.id = $1 AND k.tenant_id = $2", id, a.t.ID))
	if err != nil {
		return nil, err
	}
	return k, a.db.notify(ctx, a.tx, Invalidation{Kind: InvalidateAPIKey, ID: id})
}

// MemberAPIKeys lists the keys memberID created in the tenant, newest
// first.
func (a *Admin) MemberAPIKeys(ctx context.Context, memberID string) ([]*apikey.Key, error) {
	if !IsUUID(memberID) {
		return nil, nil
	}
	rows, _ := a.tx.Query(ctx, selectAPIKey+" WHERE k.tenant_id = $1 AND k.member_id = $2 ORDER BY k.created_at DESC, k.id", a.t.ID, memberID)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*apikey.Key, error) { return scanAPIKey(r) })
}

// RevokeMemberAPIKey revokes key id if memberID created it in the tenant
// (ErrNotFound for any other key).
func (a *Admin) RevokeMemberAPIKey(ctx context.Context, id, memberID string) (*apikey.Key, error) {
	if !IsUUID(memberID) {
		return nil, ErrNotFound
	}
	var mine bool
	if err := a.tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM gatehouse.api_keys WHERE id = $1 AND tenant_id = $2 AND member_id = $3)",
		id, a.t.ID, memberID).Scan(&mine); err != nil {
		return nil, err
	}
	if !mine {
		return nil, ErrNotFound
	}
	return a.RevokeAPIKey(ctx, id)
}

// LastSeen returns when each member of the tenant who was ever seen was
// last seen: the latest of their console page loads, their MCP clients'
// token refreshes (at least hourly while a client is in use) and their API
// keys' last use — all kept in the control schema, so no tenant schema is
// read.
func (a *Admin) LastSeen(ctx context.Context) (map[string]time.Time, error) {
	rows, _ := a.tx.Query(ctx, `SELECT m.id::text, greatest(
			(SELECT max(s.last_seen_at) FROM gatehouse.console_sessions s
				JOIN gatehouse.member_identities i ON i.subject = s.subject AND i.tenant_id = m.tenant_id WHERE i.member_id = m.id),
			(SELECT max(r.created_at) FROM gatehouse.oauth_refresh_tokens r
				JOIN gatehouse.member_identities i ON i.subject = r.identity->>'sub' AND i.tenant_id = m.tenant_id WHERE i.member_id = m.id),
			(SELECT max(k.last_used_at) FROM gatehouse.api_keys k WHERE k.tenant_id = m.tenant_id AND k.member_id = m.id))
		FROM gatehouse.members m WHERE m.tenant_id = $1`, a.t.ID)
	out := map[string]time.Time{}
	var id string
	var at *time.Time
	_, err := pgx.ForEachRow(rows, []any{&id, &at}, func() error {
		if at != nil {
			out[id] = *at
		}
		return nil
	})
	return out, err
}
