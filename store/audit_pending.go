package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Which tenants may have unchained audit records is kept in the control
// schema (gatehouse.audit_pending), so that the chainer's pass after a
// start asks those tenants only, not every tenant schema.
//
// A process marks a tenant (or renews its mark's time) before a tenant
// transaction whenever its own last marking of that tenant is older than
// markRenew: one statement on the control pool per tenant and minute, none
// on the path of most calls (measured: marking in every transaction, even
// as an INSERT … ON CONFLICT DO NOTHING that writes nothing, cost about
// 40% of the throughput of a small tenant transaction). The anomaly
// detector, which writes into a log only when it raises an alert (rare),
// marks the tenant in the transaction that writes the ALERT record
// instead (writeAlert): marking every tenant it read kept the tenants of
// read-only calls marked for good, and each chain pass reading their logs
// for nothing (bench/README.md, "2026-12-02"). The chainer
// removes a mark only when the tenant has nothing left to chain and the
// mark has not been renewed for markStale: a transaction that began while
// the mark was fresh would have to outlive markStale − markRenew (nine
// minutes) to be missed, and tool calls end within GATEHOUSE_TOOL_TIMEOUT
// (30 s by default).
const (
	markRenew = time.Minute
	markStale = 10 * time.Minute
)

// markAuditPending marks t as possibly holding unchained audit records,
// unless this process did so less than markRenew ago.
func (db *DB) markAuditPending(ctx context.Context, t *tenancy.Tenant) error {
	v, _ := db.auditMarks.LoadOrStore(t.ID, new(atomic.Int64))
	last := v.(*atomic.Int64)
	if l := last.Load(); l != 0 && time.Since(time.Unix(0, l)) < markRenew {
		return nil
	}
	sent := time.Now()
	// Committed without waiting for its WAL flush (one statement, one
	// round trip): every audit record this mark is for is committed later,
	// synchronously, and flushing a later commit flushes the WAL before
	// it, so a record that survives a crash implies its mark survived too.
	// A mark lost in a crash marks a tenant whose records were lost with
	// it. (At 10,000 tenants, calls over 2,000 renewed ~30 marks a second,
	// each waiting for its own fsync.)
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SET LOCAL synchronous_commit = off")
	b.Queue(`INSERT INTO gatehouse.audit_pending (tenant_id) VALUES ($1)
		ON CONFLICT (tenant_id) DO UPDATE SET marked_at = now()`, t.ID)
	b.Queue("COMMIT")
	if err := db.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("marking tenant %s's audit log: %w", t.Key, err)
	}
	last.Store(sent.UnixNano())
	return nil
}

// queueStaleAuditPending queues the check whether t's mark has not been
// renewed for markStale, into *stale: only then does the chainer queue
// queueClearAuditPending. (Its NOT EXISTS over the audit log runs before
// anything else in that DELETE, whatever the mark's age, and right after
// the chainer's UPDATE it visits every index entry the UPDATE left dead:
// 2.2 ms per pass at c=16 under pg_stat_statements, on every pass.)
func queueStaleAuditPending(b *pgx.Batch, t *tenancy.Tenant, stale *bool) {
	b.Queue(`SELECT EXISTS (SELECT 1 FROM gatehouse.audit_pending WHERE tenant_id = $1
		AND marked_at < now() - make_interval(secs => $2))`, t.ID, markStale.Seconds()).QueryRow(func(row pgx.Row) error {
		return row.Scan(stale)
	})
}

// queueClearAuditPending queues the removal of t's mark for when nothing in
// its audit log is left unchained and the mark has not been renewed for
// markStale (checked again here: the mark may have been renewed since
// queueStaleAuditPending). It runs in the chainer's transaction, after
// its last batch.
func queueClearAuditPending(b *pgx.Batch, t *tenancy.Tenant, table string) {
	b.Queue(`DELETE FROM gatehouse.audit_pending WHERE tenant_id = $1
		AND marked_at < now() - make_interval(secs => $2)
		AND NOT EXISTS (SELECT 1 FROM `+table+` WHERE chain_seq IS NULL)`, t.ID, markStale.Seconds())
}

// TenantsWithUnchainedAudit lists the tenants marked as possibly having
// unchained audit records: for the chainer's pass after a start, and its
// sweep every few minutes, which chains what is left and removes the marks
// of tenants idle since. One query on the control schema, whatever the
// number of tenants; tenants idle for markStale are not touched.
//
// Tenants with records in the audit intake (audit_intake.go) are listed
// too: the intake's rows are the list of what is left to chain there.
func (db *DB) TenantsWithUnchainedAudit(ctx context.Context) ([]*tenancy.Tenant, error) {
	rows, _ := db.pool.Query(ctx, selectTenant+` t WHERE (EXISTS (SELECT 1 FROM gatehouse.audit_pending p WHERE p.tenant_id = t.id)
			OR EXISTS (SELECT 1 FROM gatehouse.audit_intake i WHERE i.tenant_id = t.id AND i.refused IS NULL))
		AND schema_version >= 2 ORDER BY created_at`)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*tenancy.Tenant, error) { return scanTenant(r) })
}
