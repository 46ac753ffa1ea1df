package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/migrations"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Storage of the anomaly detector (mcp/alerts.go): where it has read each
// tenant's audit chain to, what it knows of each principal, the alerts it
// raised, and failed authentications that named an API key. Everything is
// in the control schema (no relation per tenant), read and written by the
// one replica holding the detector's lease, in batches: nothing here is on
// a call's path.

// alertVersion is the tenant schema version from which audit logs accept
// ALERT records (found by name: migration numbers are not fixed).
var alertVersion = sync.OnceValue(func() int {
	for _, m := range migrations.Tenant() {
		if m.Name == "audit_alert" {
			return m.Version
		}
	}
	panic("store: tenant migration audit_alert is missing")
})

// StoredAlert is an alert as admins read it.
type StoredAlert struct {
	ID             int64           `json:"id"`
	AuditID        int64           `json:"audit_id"`
	At             time.Time       `json:"at"`
	Kind           string          `json:"kind"`
	Subject        string          `json:"subject"`
	APIKeyID       string          `json:"api_key_id,omitempty"`
	ClientIP       string          `json:"client_ip,omitempty"`
	Summary        string          `json:"summary"`
	Evidence       json.RawMessage `json:"evidence"`
	Suspended      bool            `json:"suspended"`
	AcknowledgedAt *time.Time      `json:"acknowledged_at,omitempty"`
	AcknowledgedBy string          `json:"acknowledged_by,omitempty"`
}

// NewAlert is an alert the detector raises: its ALERT record for the
// tenant's audit log, and what admins will read.
type NewAlert struct {
	Record   *AuditRecord // Decision is set to ALERT; ArgsDigest should digest Evidence
	Kind     string
	Summary  string
	Evidence json.RawMessage
	// Suspend revokes Record.APIKeyID (a key of this tenant) in the same
	// transaction as the record; the record's reason then says so.
	Suspend bool
}

// KeyFailure is an aggregate of failed authentications whose token named
// one API key id, in one minute.
type KeyFailure struct {
	TenantID, APIKeyID string
	Window             time.Time
	Count              int64
	First, Last        time.Time
}

// AnomalyInput is what the detector reads of one tenant in one batch.
type AnomalyInput struct {
	Records  []*AuditRecord    // chained, in chain order
	Failures []KeyFailure      // failed authentications naming the tenant's keys
	States   map[string][]byte // by subject: the principals of Records and Failures that have a state
}

// AnomalyOutput is what the detector writes back.
type AnomalyOutput struct {
	States map[string][]byte // by subject
	Alerts []*NewAlert
}

// TakeAnomalyLease makes holder the replica that runs the detector's pass
// for d, unless another holds an unexpired lease. It returns whether
// holder has it, and up to when failed authentications naming keys were
// read.
func (db *DB) TakeAnomalyLease(ctx context.Context, holder string, d time.Duration) (bool, time.Time, error) {
	var until time.Time
	err := db.pool.QueryRow(ctx, `UPDATE gatehouse.anomaly_pass SET holder = $1, lease_until = now() + make_interval(secs => $2)
		WHERE lease_until < now() OR holder = $1 RETURNING failures_until`, holder, d.Seconds()).Scan(&until)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, time.Time{}, nil
	}
	return err == nil, until, err
}

// ReleaseAnomalyLease gives up holder's lease, if it has it (on shutdown:
// another replica takes over at its next pass).
func (db *DB) ReleaseAnomalyLease(ctx context.Context, holder string) error {
	_, err := db.pool.Exec(ctx, "UPDATE gatehouse.anomaly_pass SET lease_until = '-infinity' WHERE holder = $1", holder)
	return err
}

// SetKeyFailuresRead records that failed authentications naming keys were
// read up to until (exclusive).
func (db *DB) SetKeyFailuresRead(ctx context.Context, until time.Time) error {
	_, err := db.pool.Exec(ctx, "UPDATE gatehouse.anomaly_pass SET failures_until = greatest(failures_until, $1)", until)
	return err
}

// RecordKeyFailures adds aggregates of failed authentications naming key
// ids (which need not exist: only those that do reach a tenant).
func (db *DB) RecordKeyFailures(ctx context.Context, fs []KeyFailure) error {
	b := &pgx.Batch{}
	for _, f := range fs {
		b.Queue(`INSERT INTO gatehouse.auth_failures_by_key (window_start, api_key_id, count, first_at, last_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (window_start, api_key_id) DO UPDATE SET count = auth_failures_by_key.count + excluded.count,
				first_at = least(auth_failures_by_key.first_at, excluded.first_at), last_at = greatest(auth_failures_by_key.last_at, excluded.last_at)`,
			f.Window, CleanText(f.APIKeyID, auditShortMax), f.Count, f.First, f.Last)
	}
	return db.pool.SendBatch(ctx, b).Close()
}

// KeyFailures returns the failed authentications naming existing keys in
// minutes [since, until), with each key's tenant.
func (db *DB) KeyFailures(ctx context.Context, since, until time.Time) ([]KeyFailure, error) {
	rows, _ := db.pool.Query(ctx, `SELECT k.tenant_id::text, f.api_key_id, f.window_start, f.count, f.first_at, f.last_at
		FROM gatehouse.auth_failures_by_key f JOIN gatehouse.api_keys k ON k.id = f.api_key_id
		WHERE f.window_start >= $1 AND f.window_start < $2 ORDER BY f.window_start`, since, until)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (KeyFailure, error) {
		var f KeyFailure
		err := r.Scan(&f.TenantID, &f.APIKeyID, &f.Window, &f.Count, &f.First, &f.Last)
		return f, err
	})
}

// TenantCursor is a tenant whose audit chain has records the detector has
// not read: from From (exclusive) to Head.
type TenantCursor struct {
	Tenant     *tenancy.Tenant
	From, Head int64
}

// TenantsWithNewAudit lists the tenants whose chain head is past the
// detector's cursor, and the tenants named by ids (failed authentications
// naming their keys), all at the schema version that accepts ALERT
// records. One query on the control schema whatever the number of
// tenants. A tenant the detector has never read starts up to
// historyRecords before its head (see SkipIdleAuditHistory for those idle
// since long).
func (db *DB) TenantsWithNewAudit(ctx context.Context, ids []string) ([]TenantCursor, error) {
	rows, _ := db.pool.Query(ctx, `SELECT t.id, t.key, t.kind, t.schema_name, coalesce(t.role_name, ''), coalesce(t.query_role, ''), t.status,
			t.schema_version, t.created_at, t.rate_per_minute, t.rate_burst,
			coalesce(c.chain_seq, greatest(coalesce(h.chain_seq, 0) - $3, 0)), coalesce(h.chain_seq, 0)
		FROM gatehouse.tenants t LEFT JOIN gatehouse.audit_heads h ON h.tenant_id = t.id
			LEFT JOIN gatehouse.anomaly_cursors c ON c.tenant_id = t.id
		WHERE t.schema_version >= $1 AND (h.chain_seq > coalesce(c.chain_seq, 0) OR t.id::text = ANY($2))
		ORDER BY t.created_at`, alertVersion(), ids, historyRecords)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (TenantCursor, error) {
		var tc TenantCursor
		t, err := scanTenant(cursorRow{r, &tc.From, &tc.Head})
		tc.Tenant = t
		return tc, err
	})
}

// historyRecords is how far back the detector starts reading a tenant it
// has never read (the records before teach nothing): one batch.
const historyRecords = 2000

// SkipIdleAuditHistory sets the detector's cursor at the chain head of
// every tenant it has never read whose chain has not grown for idle: on
// the first pass after an upgrade, thousands of idle tenants cost one
// statement instead of a transaction each, and their old records are not
// read. It returns how many tenants it skipped.
func (db *DB) SkipIdleAuditHistory(ctx context.Context, idle time.Duration) (int64, error) {
	tag, err := db.pool.Exec(ctx, `INSERT INTO gatehouse.anomaly_cursors (tenant_id, chain_seq)
		SELECT h.tenant_id, h.chain_seq FROM gatehouse.audit_heads h
		WHERE h.updated_at < now() - make_interval(secs => $1)
			AND NOT EXISTS (SELECT 1 FROM gatehouse.anomaly_cursors c WHERE c.tenant_id = h.tenant_id)
		ON CONFLICT (tenant_id) DO NOTHING`, idle.Seconds())
	return tag.RowsAffected(), err
}

// cursorRow scans a tenant followed by two more columns.
type cursorRow struct {
	pgx.CollectableRow
	from, head *int64
}

func (c cursorRow) Scan(dest ...any) error {
	return c.CollectableRow.Scan(append(dest, c.from, c.head)...)
}

// DetectAnomalies reads up to limit of t's chained records after its
// cursor (from, when the tenant has none yet), with failures and the
// states of the principals involved; fn decides; what fn returns is
// written in the same transaction as the cursor's advance: new states,
// ALERT records in t's audit log (chained by the next ChainAudit), the
// alerts for admins and any key suspensions. So every record is read
// once and raises its alerts once, whichever replica runs the pass
// (a per-tenant lock makes replicas take turns). It returns how many
// records it read and the alerts written.
func (db *DB) DetectAnomalies(ctx context.Context, t *tenancy.Tenant, from int64, limit int, failures []KeyFailure,
	fn func(AnomalyInput) (AnomalyOutput, error)) (int, []*StoredAlert, error) {
	if !opaqueName.MatchString(t.Schema) {
		return 0, nil, fmt.Errorf("tenant %s: refusing unexpected schema name", t.Key)
	}
	seed, err := db.lockSeed(ctx)
	if err != nil {
		return 0, nil, err
	}
	// A revoked key's invalidation is signed with this secret (notify):
	// read before the lane is taken, so that the transaction, once it holds
	// the key's row lock, never waits for a control-pool connection, whose
	// holders may be waiting for that lock (calls touching the key).
	if _, err := db.Secret(ctx, invalidationSecret); err != nil {
		return 0, nil, err
	}
	table := pgx.Identifier{t.Schema, "audit_log"}.Sanitize()
	var n int
	var written []*StoredAlert
	conn, release, err := db.ctl.acquireTenant(ctx, t.ID, backgroundWork)
	if err != nil {
		return 0, nil, err
	}
	defer release()
	err = connTxFunc(ctx, conn.Conn(), pgx.TxOptions{}, func(tx pgx.Tx) error {
		written = nil
		// The lock, then no wait for another longer than auditLockWait
		// (backgroundLockWait), in one round trip.
		b := &pgx.Batch{}
		b.Queue("SELECT pg_advisory_xact_lock(hashtextextended('gatehouse.anomaly:' || $1, $2))", t.ID, seed)
		b.Queue(lockWaitSQL, auditLockWaitSQL)
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		cursor := from
		err := tx.QueryRow(ctx, "SELECT chain_seq FROM gatehouse.anomaly_cursors WHERE tenant_id = $1", t.ID).Scan(&cursor)
		hadCursor := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		rows, _ := tx.Query(ctx, "SELECT "+auditColumns+" FROM "+table+" WHERE chain_seq > $1 ORDER BY chain_seq LIMIT $2", cursor, limit)
		recs, err := pgx.CollectRows(rows, scanAudit)
		if err != nil {
			return err
		}
		n = len(recs)
		in := AnomalyInput{Records: recs, Failures: failures, States: map[string][]byte{}}
		rows, _ = tx.Query(ctx, "SELECT subject, state::text FROM gatehouse.anomaly_principals WHERE tenant_id = $1 AND subject = ANY($2)", t.ID, anomalySubjects(recs, failures))
		var subject, state string
		if _, err := pgx.ForEachRow(rows, []any{&subject, &state}, func() error { in.States[subject] = []byte(state); return nil }); err != nil {
			return err
		}
		out, err := fn(in)
		if err != nil {
			return err
		}
		if len(out.States) > 0 {
			ss, vs := make([]string, 0, len(out.States)), make([]string, 0, len(out.States))
			for s, v := range out.States {
				ss, vs = append(ss, s), append(vs, string(v))
			}
			if _, err := tx.Exec(ctx, `INSERT INTO gatehouse.anomaly_principals (tenant_id, subject, state)
				SELECT $1, s, v::jsonb FROM unnest($2::text[], $3::text[]) AS u(s, v)
				ON CONFLICT (tenant_id, subject) DO UPDATE SET state = excluded.state, updated_at = now()`, t.ID, ss, vs); err != nil {
				return err
			}
		}
		for _, a := range out.Alerts {
			sa, err := writeAlert(ctx, tx, db, t, table, a)
			if err != nil {
				return err
			}
			written = append(written, sa)
		}
		if n > 0 {
			cursor = recs[n-1].ChainSeq
		}
		if n > 0 || !hadCursor { // a tenant read for the first time keeps its place even with nothing to read
			_, err = tx.Exec(ctx, `INSERT INTO gatehouse.anomaly_cursors (tenant_id, chain_seq) VALUES ($1, $2)
				ON CONFLICT (tenant_id) DO UPDATE SET chain_seq = excluded.chain_seq`, t.ID, cursor)
		}
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("detecting anomalies in %s: %w", t.Key, lockedAs(ErrDetectorBusy, err))
	}
	return n, written, nil
}

// writeAlert writes one alert in tx: the key's suspension if asked, its
// ALERT record (its tenant marked as having unchained records with it),
// and its row for admins. Two round trips, four with a suspension.
func writeAlert(ctx context.Context, tx pgx.Tx, db *DB, t *tenancy.Tenant, table string, a *NewAlert) (*StoredAlert, error) {
	r := a.Record
	r.Decision, r.Count = Alerted, 1
	suspended := false
	if a.Suspend && r.APIKeyID != "" {
		tag, err := tx.Exec(ctx, "UPDATE gatehouse.api_keys SET revoked_at = now() WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL", r.APIKeyID, t.ID)
		if err != nil {
			return nil, err
		}
		if suspended = tag.RowsAffected() == 1; suspended {
			if err := db.notify(ctx, tx, Invalidation{Kind: InvalidateAPIKey, ID: r.APIKeyID}); err != nil {
				return nil, err
			}
			r.Reason += " The key was revoked (GATEHOUSE_ALERT_SUSPEND)."
		}
	}
	r.clean()
	// The record is unchained: its tenant is marked for the chainer's
	// sweep (audit_pending.go) in the same transaction, and the same
	// round trip, so the mark and the record are committed together.
	// Before, the detector marked every tenant it read, ahead of its
	// transaction: that kept the tenants of calls that write nothing into
	// their own logs marked for good (the detector reads every busy tenant
	// about once a minute), and every chain pass reading their logs for
	// nothing, a SELECT planned afresh per tenant and pass.
	b := &pgx.Batch{}
	b.Queue(markPendingSQL, t.ID)
	b.Queue(`INSERT INTO `+table+` (request_id, decision, tool, subject, email, provider, api_key_id,
			client_ip, user_agent, reason, args_digest, count, via)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id, at`,
		r.RequestID, r.Decision, r.Tool, r.Subject, r.Email, r.Provider, r.APIKeyID,
		r.ClientIP, r.UserAgent, r.Reason, r.ArgsDigest, r.Count, r.Via).QueryRow(func(row pgx.Row) error {
		return row.Scan(&r.ID, &r.At)
	})
	err := tx.SendBatch(ctx, b).Close()
	if err != nil {
		return nil, err
	}
	sa := &StoredAlert{AuditID: r.ID, At: r.At, Kind: a.Kind, Subject: r.Subject, APIKeyID: r.APIKeyID, ClientIP: r.ClientIP,
		Summary: CleanText(a.Summary, auditReasonMax), Evidence: a.Evidence, Suspended: suspended}
	err = tx.QueryRow(ctx, `INSERT INTO gatehouse.alerts (tenant_id, audit_id, at, kind, subject, api_key_id, client_ip, summary, evidence, suspended)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id`,
		t.ID, sa.AuditID, sa.At, sa.Kind, sa.Subject, sa.APIKeyID, sa.ClientIP, sa.Summary, string(sa.Evidence), sa.Suspended).Scan(&sa.ID)
	return sa, err
}

// ForgetAnomalyState drops principals' states unused for 90 days and
// failed authentications naming keys older than two days.
func (db *DB) ForgetAnomalyState(ctx context.Context) error {
	_, err := db.pool.Exec(ctx, "DELETE FROM gatehouse.anomaly_principals WHERE updated_at < now() - interval '90 days'")
	if err == nil {
		_, err = db.pool.Exec(ctx, "DELETE FROM gatehouse.auth_failures_by_key WHERE window_start < now() - interval '2 days'")
	}
	return err
}
