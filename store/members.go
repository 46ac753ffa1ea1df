package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

const selectMember = `SELECT m.id, m.tenant_id, m.email, m.name, m.role, m.created_at, m.removed_at,
	coalesce((SELECT array_agg(i.subject ORDER BY i.created_at) FROM gatehouse.member_identities i WHERE i.member_id = m.id), '{}')
	FROM gatehouse.members m`

func scanMember(row pgx.Row) (*tenancy.Member, error) {
	var m tenancy.Member
	var removed *time.Time
	err := row.Scan(&m.ID, &m.TenantID, &m.Email, &m.Name, &m.Role, &m.CreatedAt, &removed, &m.Subjects)
	m.RemovedAt = deref(removed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &m, err
}

// EnsureMember returns the member p signs in as in tenant t, creating it
// (and linking p's identity) on first sign-in:
//   - an identity already linked → its member;
//   - else a member of t with p's verified email → p's identity is linked to
//     it (one person, several providers);
//   - else a new member: admin if t has no members yet, else newRole.
//
// Only a verified email links identities. Concurrent first sign-ins to one
// tenant are serialised, so exactly one of them becomes the first admin.
func (db *DB) EnsureMember(ctx context.Context, t *tenancy.Tenant, p *identity.Principal, newRole tenancy.Role) (*tenancy.Member, error) {
	byIdentity := selectMember + ` JOIN gatehouse.member_identities i ON i.member_id = m.id WHERE i.tenant_id = $1 AND i.subject = $2`
	m, err := scanMember(db.pool.QueryRow(ctx, byIdentity, t.ID, p.Subject))
	if !errors.Is(err, ErrNotFound) {
		return m, err
	}
	seed, err := db.lockSeed(ctx)
	if err != nil {
		return nil, err
	}
	err = beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('gatehouse.members:' || $1, $2))", t.ID, seed); err != nil {
			return err
		}
		if m, err = scanMember(tx.QueryRow(ctx, byIdentity, t.ID, p.Subject)); !errors.Is(err, ErrNotFound) {
			return err
		}
		email := ""
		if p.EmailVerified {
			email = strings.ToLower(p.Email)
		}
		if email != "" {
			m, err = scanMember(tx.QueryRow(ctx, selectMember+` WHERE m.tenant_id = $1 AND m.email = $2`, t.ID, email))
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		if m == nil {
			if m, err = createMember(ctx, tx, t, p, email, newRole); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO gatehouse.member_identities (tenant_id, subject, member_id, provider) VALUES ($1, $2, $3, $4)`,
			t.ID, p.Subject, m.ID, p.Provider)
		m.Subjects = append(m.Subjects, p.Subject)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("adding %s to tenant %s: %w", p.Subject, t.Key, err)
	}
	return m, nil
}

func createMember(ctx context.Context, tx pgx.Tx, t *tenancy.Tenant, p *identity.Principal, email string, role tenancy.Role) (*tenancy.Member, error) {
	var first bool
	if err := tx.QueryRow(ctx, "SELECT NOT EXISTS (SELECT 1 FROM gatehouse.members WHERE tenant_id = $1)", t.ID).Scan(&first); err != nil {
		return nil, err
	}
	if first || t.Kind == tenancy.Personal {
		role = tenancy.Admin
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	m := &tenancy.Member{ID: uuidString(b), TenantID: t.ID, Email: email, Name: p.Name, Role: role}
	err := tx.QueryRow(ctx, `INSERT INTO gatehouse.members (id, tenant_id, email, name, role) VALUES ($1, $2, $3, $4, $5) RETURNING created_at`,
		m.ID, m.TenantID, m.Email, m.Name, m.Role).Scan(&m.CreatedAt)
	return m, err
}

// FindMembers returns a tenant's members, oldest first.
func (db *DB) FindMembers(ctx context.Context, tenantID string) ([]*tenancy.Member, error) {
	rows, _ := db.pool.Query(ctx, selectMember+" WHERE m.tenant_id = $1 ORDER BY m.created_at, m.id", tenantID)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*tenancy.Member, error) { return scanMember(r) })
}
