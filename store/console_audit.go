package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// FindAuditRecord returns record id of the tenant of tx (ErrNotFound when
// it has none: ids of other tenants' records are simply not in its table).
func FindAuditRecord(ctx context.Context, tx pgx.Tx, id int64) (*AuditRecord, error) {
	rows, _ := tx.Query(ctx, "SELECT "+auditColumns+" FROM audit_log WHERE id = $1", id)
	r, err := pgx.CollectExactlyOneRow(rows, scanAudit)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return r, err
}

// StreamAudit calls fn for every record of the tenant of tx that f selects
// (f.Limit and f.BeforeID ignored), newest first, as the rows arrive: the
// whole log is never in memory.
func StreamAudit(ctx context.Context, tx pgx.Tx, f AuditFilter, fn func(*AuditRecord) error) error {
	q, args := f.where()
	rows, err := tx.Query(ctx, q+" ORDER BY id DESC", args)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// AuditCheckpoint is the last verification of a tenant's audit chain.
type AuditCheckpoint struct {
	Verified  int64  // chained records whose links checked out
	BrokenSeq int64  // chain position of the first bad record; 0 when intact
	Problem   string // what was wrong; "" when intact
	// Refused is how many of the tenant's records its audit log had
	// refused, kept out of the chain in the audit intake
	// (AuditReport.Refused): the chain is intact but incomplete.
	Refused   int
	CheckedAt time.Time
}

// SaveAuditCheckpoint stores the outcome of verifying t's chain.
func (db *DB) SaveAuditCheckpoint(ctx context.Context, t *tenancy.Tenant, r *AuditReport) error {
	var broken *int64
	if !r.OK() {
		broken = &r.Seq
	}
	_, err := db.pool.Exec(ctx, `INSERT INTO gatehouse.audit_checkpoints (tenant_id, verified, broken_seq, problem, refused, checked_at)
		VALUES ($1, $2, $3, $4, $5, now())
		ON CONFLICT (tenant_id) DO UPDATE SET verified = excluded.verified, broken_seq = excluded.broken_seq,
			problem = excluded.problem, refused = excluded.refused, checked_at = excluded.checked_at`, t.ID, r.Verified, broken, r.Problem, r.Refused)
	return err
}

// FindAuditCheckpoint returns t's last verification (ErrNotFound: never
// verified).
func (db *DB) FindAuditCheckpoint(ctx context.Context, t *tenancy.Tenant) (*AuditCheckpoint, error) {
	var c AuditCheckpoint
	var broken *int64
	err := db.pool.QueryRow(ctx, "SELECT verified, broken_seq, problem, refused, checked_at FROM gatehouse.audit_checkpoints WHERE tenant_id = $1", t.ID).
		Scan(&c.Verified, &broken, &c.Problem, &c.Refused, &c.CheckedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if broken != nil {
		c.BrokenSeq = *broken
	}
	return &c, err
}
