package store

import (
	"archive/zip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// A tenant's lifecycle, for operators (the console's operator pages and
// `gatehouse tenant suspend|resume|export|delete`). Every step is recorded
// in gatehouse.operator_audit, outside the tenant's schema, so the record
// of a deletion outlives the tenant.

// OperatorAction is who did what to a tenant, for the operator audit.
type OperatorAction struct {
	Operator string // provider-qualified subject, or cli:<user>
	Action   string // suspend, resume, limits, export, delete
	Detail   string
	ClientIP string
	Via      string // console or cli
}

func recordOperatorAction(ctx context.Context, tx pgx.Tx, t *tenancy.Tenant, a OperatorAction) error {
	_, err := tx.Exec(ctx, `INSERT INTO gatehouse.operator_audit (operator, action, tenant_id, tenant_key, detail, client_ip, via)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, CleanText(a.Operator, auditSubjMax), a.Action, t.ID, t.Key,
		CleanText(a.Detail, auditReasonMax), CleanText(a.ClientIP, auditShortMax), a.Via)
	return err
}

// RecordOperatorAction records a, about t, on its own (export).
func (db *DB) RecordOperatorAction(ctx context.Context, t *tenancy.Tenant, a OperatorAction) error {
	return beginFunc(ctx, db.pool, func(tx pgx.Tx) error { return recordOperatorAction(ctx, tx, t, a) })
}

// OperatorRecord is a stored operator action.
type OperatorRecord struct {
	At time.Time
	OperatorAction
	TenantKey string
}

// FindOperatorActions returns the latest operator actions (about any
// tenant, deleted ones too), newest first.
func (db *DB) FindOperatorActions(ctx context.Context, limit int) ([]OperatorRecord, error) {
	rows, _ := db.pool.Query(ctx, `SELECT at, operator, action, detail, client_ip, via, tenant_key FROM gatehouse.operator_audit
		ORDER BY id DESC LIMIT $1`, limit)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (OperatorRecord, error) {
		var o OperatorRecord
		err := r.Scan(&o.At, &o.Operator, &o.Action, &o.Detail, &o.ClientIP, &o.Via, &o.TenantKey)
		return o, err
	})
}

// SetTenantStatus suspends (every request refused with 403, nothing
// deleted) or resumes a tenant, on every replica within a second.
func (db *DB) SetTenantStatus(ctx context.Context, t *tenancy.Tenant, s tenancy.Status, a OperatorAction) error {
	return beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE gatehouse.tenants SET status = $2 WHERE id = $1", t.ID, s)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return tenancy.ErrTenantNotFound
		}
		if err := recordOperatorAction(ctx, tx, t, a); err != nil {
			return err
		}
		return db.notify(ctx, tx, Invalidation{Kind: InvalidateTenant, ID: t.ID})
	})
}

// ExportTenant writes a zip archive of t: tenant.json, members.jsonl,
// api_keys.jsonl (never secrets or their hashes), audit_log.jsonl and one
// <table>.jsonl per workspace table, read in one consistent snapshot and
// streamed (nothing is held in memory). The export is recorded. Records
// still in the audit intake are moved into the audit log first
// ([DB.SettleAudit]), so that audit_log.jsonl holds every record
// committed before the export began.
func (db *DB) ExportTenant(ctx context.Context, t *tenancy.Tenant, w io.Writer, a OperatorAction) error {
	if err := db.SettleAudit(ctx, t); err != nil {
		return fmt.Errorf("exporting %s: %w", t.Key, err)
	}
	zw := zip.NewWriter(w)
	err := beginTxFunc(ctx, db.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		f, err := zw.Create("tenant.json")
		if err != nil {
			return err
		}
		if err := json.NewEncoder(f).Encode(map[string]any{"id": t.ID, "key": t.Key, "kind": t.Kind, "status": t.Status,
			"schema_version": t.SchemaVersion, "created_at": t.CreatedAt, "exported_at": time.Now().UTC()}); err != nil {
			return err
		}
		parts := []struct{ name, sql string }{
			{"members.jsonl", `SELECT row_to_json(x)::text FROM (SELECT m.id, m.email, m.name, m.role, m.created_at, m.removed_at,
				coalesce((SELECT array_agg(i.subject ORDER BY i.subject) FROM gatehouse.member_identities i WHERE i.member_id = m.id), '{}') AS identities
				FROM gatehouse.members m WHERE m.tenant_id = $1 ORDER BY m.created_at, m.id) x`},
			{"api_keys.jsonl", `SELECT row_to_json(x)::text FROM (SELECT id, name, role, scopes, created_by, created_at, expires_at, last_used_at, revoked_at, allowed_networks
				FROM gatehouse.api_keys WHERE tenant_id = $1 ORDER BY created_at, id) x`},
		}
		for _, p := range parts {
			if err := exportRows(ctx, tx, zw, p.name, p.sql, t.ID); err != nil {
				return err
			}
		}
		schema := pgx.Identifier{t.Schema}.Sanitize()
		rows, _ := tx.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname`, t.Schema)
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, tbl := range tables {
			if tbl == "schema_version" {
				continue
			}
			q := "SELECT row_to_json(x)::text FROM " + schema + "." + pgx.Identifier{tbl}.Sanitize() + " x"
			if tbl == "audit_log" {
				q = "SELECT row_to_json(x)::text FROM (SELECT id, at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip, user_agent, reason, args_digest, count, chain_seq, key_id, encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash, via FROM " +
					schema + ".audit_log ORDER BY id) x"
			}
			if err := exportRows(ctx, tx, zw, tbl+".jsonl", q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("exporting %s: %w", t.Key, err)
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return db.RecordOperatorAction(ctx, t, a)
}

func exportRows(ctx context.Context, tx pgx.Tx, zw *zip.Writer, name, sql string, args ...any) error {
	f, err := zw.Create(name)
	if err != nil {
		return err
	}
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return err
		}
		if _, err := io.WriteString(f, line+"\n"); err != nil {
			return err
		}
	}
	return rows.Err()
}

// DeleteTenant deletes t for good: its schema (workspace and audit log),
// its database roles, and its control-plane rows (members, identities,
// keys, checkpoints, counters, its members' console sessions, its records
// still in the audit intake), in one
// transaction with the operator's
// record of it, which stays.
func (db *DB) DeleteTenant(ctx context.Context, t *tenancy.Tenant, a OperatorAction) error {
	return beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if err := recordOperatorAction(ctx, tx, t, a); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, "DELETE FROM gatehouse.tenants WHERE id = $1", t.ID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return tenancy.ErrTenantNotFound
		}
		if _, err := tx.Exec(ctx, "DELETE FROM gatehouse.tenant_calls WHERE tenant_id = $1", t.ID); err != nil {
			return err
		}
		// No foreign key removes them (audit_intake.go).
		if _, err := tx.Exec(ctx, "DELETE FROM gatehouse.audit_intake WHERE tenant_id = $1", t.ID); err != nil {
			return err
		}
		// Its members' console sessions end with it.
		if _, err := tx.Exec(ctx, "DELETE FROM gatehouse.console_sessions WHERE tenant_key = $1", t.Key); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{t.Schema}.Sanitize()+" CASCADE"); err != nil {
			return err
		}
		for _, role := range []string{t.DBRole, t.QueryRole} {
			var exists bool
			if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&exists); err != nil {
				return err
			}
			if role == "" || !exists {
				continue
			}
			// Privileges it was granted outside the dropped schema (the
			// database, for the query role's login) go first.
			if _, err := tx.Exec(ctx, "DROP OWNED BY "+pgx.Identifier{role}.Sanitize()); err != nil {
				return fmt.Errorf("dropping privileges of %s: %w", t.Key, err)
			}
			if _, err := tx.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize()); err != nil {
				return fmt.Errorf("dropping role of %s: %w", t.Key, err)
			}
		}
		return db.notify(ctx, tx, Invalidation{Kind: InvalidateTenant, ID: t.ID})
	})
}

// TenantCounts are an operator's figures for one tenant.
type TenantCounts struct {
	Members, Keys int64
	Calls24h      int64
}

// CountTenants returns members, live keys and calls in the last 24 hours
// (from gatehouse.tenant_calls, never from the tenant schemas) per tenant
// id.
func (db *DB) CountTenants(ctx context.Context) (map[string]TenantCounts, error) {
	rows, _ := db.pool.Query(ctx, `SELECT t.id,
		(SELECT count(*) FROM gatehouse.members m WHERE m.tenant_id = t.id AND m.removed_at IS NULL),
		(SELECT count(*) FROM gatehouse.api_keys k WHERE k.tenant_id = t.id AND k.revoked_at IS NULL),
		coalesce((SELECT sum(calls) FROM gatehouse.tenant_calls c WHERE c.tenant_id = t.id AND c.hour > now() - interval '24 hours'), 0)::bigint
		FROM gatehouse.tenants t`)
	out := map[string]TenantCounts{}
	var id string
	var c TenantCounts
	_, err := pgx.ForEachRow(rows, []any{&id, &c.Members, &c.Keys, &c.Calls24h}, func() error {
		out[id] = c
		return nil
	})
	return out, err
}

// CountCalls adds calls to tenantID's counter for the hour of at (the
// audit flush calls it with what it wrote), in one statement whatever the
// number of tenants: a flush after calls spread over 2,000 tenants counts
// several hundred, which took a statement each. The rows are locked in
// the order of the tenants' ids, so that replicas flushing at once cannot
// deadlock.
func (db *DB) CountCalls(ctx context.Context, counts map[string]int64, at time.Time) error {
	if len(counts) == 0 {
		return nil
	}
	ids := slices.Sorted(maps.Keys(counts))
	ns := make([]int64, len(ids))
	for i, id := range ids {
		ns[i] = counts[id]
	}
	_, err := db.pool.Exec(ctx, `INSERT INTO gatehouse.tenant_calls (tenant_id, hour, calls)
		SELECT u.id, $2, u.n FROM unnest($1::uuid[], $3::bigint[]) WITH ORDINALITY AS u(id, n, i) ORDER BY u.i
		ON CONFLICT (tenant_id, hour) DO UPDATE SET calls = tenant_calls.calls + excluded.calls`, ids, at.Truncate(time.Hour), ns)
	return err
}
