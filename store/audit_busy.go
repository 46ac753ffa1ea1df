package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// A tenant's audit log locked by another session must not stall other
// tenants' calls. Nothing Gatehouse runs while serving conflicts with the
// lock a record's INSERT takes (ROW EXCLUSIVE), but DDL does: a tenant
// migration's ALTER TABLE (and one waiting for its lock behind a long
// reader, such as pg_dump, which queues every INSERT after it), LOCK
// TABLE, VACUUM FULL, a REINDEX without CONCURRENTLY. The group commit
// writes every tenant's records in shared transactions from one writer,
// so a record that waited for such a lock held up every call of the
// batch, and the batches after it, for the commit's whole time limit
// (measured: another tenant's calls took 5 to 10 s while one tenant's
// audit log was locked for 12 s).
//
// So the writes of calls' records (the group commit's parts, the records
// written alone after a part failed, [DB.InsertAuditRecord], and the
// preparation of the lanes' statements, whose parse locks the table) wait
// at most auditLockWait for a lock (lock_timeout). A part that ran out of
// it names the tenant whose statement waited (auditLockError): that
// tenant's records fail, and the part is sent again without them (not
// record by record, which would cost every other record a transaction of
// its own). The tenant is then refused for auditBusyFor with
// [ErrAuditLogBusy], at once and without a statement. After that, one of
// its records is tried alone, outside the shared batches ([ErrAuditProbe],
// [DB.ProbeAuditRecord]), the others refused meanwhile: only when it is
// stored does the tenant join the batches again, so a lock that lasts
// costs the other tenants' batches nothing. Its calls answer as during a
// database outage (retry shortly). Records nobody waits for (the
// aggregated refusals written each second, the records kept because they
// could not be stored when due) wait for the lock instead, within a bound
// of the caller's (mcp/audit_held.go keeps what it refuses and tries again
// later). (PostgreSQL documentation, "Client Connection Defaults":
// lock_timeout; "Explicit Locking": the lock modes.)
const (
	auditLockWait = 200 * time.Millisecond
	auditBusyFor  = time.Second
)

// ErrAuditLogBusy is the error of a record that could not be written
// because its tenant's audit log is locked by another session. It wraps
// [ErrUnavailable], so [Unavailable] reports it as transient.
var ErrAuditLogBusy = fmt.Errorf("%w: the audit log is locked by another session (a migration or maintenance)", ErrUnavailable)

// ErrDetectorBusy is an anomaly detector pass's error for a tenant when one
// of its lock waits ran out (see backgroundLockWait): the tenant's audit
// log, which it reads and writes its alerts into, or a row it writes for
// the tenant (a key an alert suspends, the tenant's cursor or principals'
// state) was locked by another session. PostgreSQL does not say which. It
// wraps [ErrUnavailable].
var ErrDetectorBusy = fmt.Errorf("%w: the tenant's audit log, or a row the anomaly detector writes for it (its keys, its cursor), is locked by another session", ErrUnavailable)

// ErrAuditProbe is [DB.WriteAuditEntries]' error for a record it did not
// write because its tenant's audit log was found locked a moment ago: the
// caller writes it alone with [DB.ProbeAuditRecord], whose outcome says
// whether the tenant's records go into shared batches again. At most one
// record of a tenant is handed back so at a time; the others are refused
// with ErrAuditLogBusy meanwhile.
var ErrAuditProbe = errors.New("store: the record is to be written alone: its tenant's audit log was locked a moment ago")

// auditBusyMark is a tenant's entry in DB.auditBusy: its records are
// refused until until, then one is tried alone (probing).
type auditBusyMark struct {
	until   time.Time
	probing bool
}

// refusing says whether the mark refuses a record outright now: until has
// not come (monotonic time: a clock stepped back changes nothing), or a
// record is being tried alone.
func (m auditBusyMark) refusing() bool { return m.probing || time.Now().Before(m.until) }

// auditLockWaitSQL is the lock_timeout of a call's audit write, for
// set_config(…, true) in its transaction.
var auditLockWaitSQL = strconv.FormatInt(auditLockWait.Milliseconds(), 10) + "ms"

// auditLockError is a batch's error when a tenant's statement in it ran
// out of lock_timeout.
type auditLockError struct {
	t   *tenancy.Tenant
	err error
}

func (e *auditLockError) Error() string { return e.err.Error() }
func (e *auditLockError) Unwrap() error { return e.err }

// auditBusyErr returns the error for t's records while its audit log was
// found locked less than auditBusyFor ago, or one of its records is being
// tried alone; else nil (a write of a record alone may go ahead, and
// settles the mark: see auditBusyAfter).
func (db *DB) auditBusyErr(t *tenancy.Tenant) error {
	v, ok := db.auditBusy.Load(t.ID)
	if !ok {
		return nil
	}
	if v.(auditBusyMark).refusing() {
		return busyError(t)
	}
	return nil
}

// auditBatchGate says what becomes of a record of t bound for a shared
// batch: nil, it goes; ErrAuditProbe, it is to be written alone (the first
// after t's mark expired, which now says so); ErrAuditLogBusy's, it is
// refused.
func (db *DB) auditBatchGate(t *tenancy.Tenant) error {
	v, ok := db.auditBusy.Load(t.ID)
	if !ok {
		return nil
	}
	m := v.(auditBusyMark)
	if m.refusing() {
		return busyError(t)
	}
	if db.auditBusy.CompareAndSwap(t.ID, m, auditBusyMark{until: m.until, probing: true}) {
		return ErrAuditProbe
	}
	return busyError(t)
}

// markAuditBusy refuses t's records for auditBusyFor, and returns their
// error.
func (db *DB) markAuditBusy(t *tenancy.Tenant) error {
	db.auditBusy.Store(t.ID, auditBusyMark{until: time.Now().Add(auditBusyFor)})
	return busyError(t)
}

// auditBusyAfter settles t's mark after a write of one of its records
// alone, and returns the error to report. A lock wait that ran out
// (SQLSTATE 55P03, lock_not_available): t is refused for auditBusyFor
// more, with ErrAuditLogBusy's error. Stored (err nil): t's records go
// into shared batches again. Another error says nothing about locks: the
// next record tries again, and err is returned as it is.
func (db *DB) auditBusyAfter(t *tenancy.Tenant, err error) error {
	if lockTimedOut(err) {
		return db.markAuditBusy(t)
	}
	if v, ok := db.auditBusy.Load(t.ID); ok {
		if err == nil {
			db.auditBusy.CompareAndDelete(t.ID, v)
		} else {
			db.auditBusy.CompareAndSwap(t.ID, v, auditBusyMark{until: v.(auditBusyMark).until})
		}
	}
	return err
}

// ProbeAuditRecord writes r, a call's record that [DB.WriteAuditEntries]
// handed back with [ErrAuditProbe], alone in t's audit log, as
// [DB.InsertAuditRecord] does, and settles t's mark by the outcome: stored,
// t's records go into shared batches again; refused by a lock, they are
// refused for a moment more.
func (db *DB) ProbeAuditRecord(ctx context.Context, t *tenancy.Tenant, r *AuditRecord) (reduced bool, err error) {
	return db.writeAuditRecordAlone(ctx, t, r, true)
}

func busyError(t *tenancy.Tenant) error { return fmt.Errorf("tenant %s: %w", t.Key, ErrAuditLogBusy) }

// backgroundLockWait: the background passes over audit logs (the chain
// passes, [DB.ChainAudit] and [DB.ChainAuditTenants]; the anomaly
// detector's, [DB.DetectAnomalies] and [DB.DetectAnomaliesTenants]) wait
// without a bound for their own advisory locks (replicas take turns), then
// at most auditLockWait for any other lock: a tenant's audit log locked by
// DDL or maintenance (see the top of this file), or one whose INSERT or
// UPDATE a non-concurrent CREATE INDEX holds up. Without that bound such a
// pass waited as long as the lock was held, holding its lane's background
// connection and the auditor's flush loop, so every other tenant's chaining
// (and with it the alerts, which read only chained records) and the
// aggregated records' writes waited too. A pass that runs out of it fails
// with ErrAuditLogBusy (the detector's with ErrDetectorBusy: it also
// writes rows of the control schema); its group's other tenants are then
// passed one at a time, and the locked tenant alone at each later pass
// until it succeeds (the chainer's and the detector's failing tenants).

// LockTimedOut reports whether err is PostgreSQL's lock_not_available
// (55P03): a lock wait bounded by lock_timeout ran out, or NOWAIT found
// the lock taken; or an index build that, behind a transaction pooler,
// was cancelled because a lock wait outlasted the same bound or could not
// be watched (see DB.execLockBounded).
func LockTimedOut(err error) bool { return lockTimedOut(err) }

// Locked reports whether err says that a tenant's tables were locked by
// another session (a migration, a dump, maintenance) for longer than the
// wait Gatehouse allows, rather than that the database could not be
// reached: [ErrMigrationLocked], [ErrAuditLogBusy], [ErrDetectorBusy], [ErrIndexBuildLocked],
// or any lock wait that ran out ([LockTimedOut]). Such errors are
// transient ([Unavailable] reports them too), but they are not outages.
func Locked(err error) bool {
	return errors.Is(err, ErrMigrationLocked) || errors.Is(err, ErrAuditLogBusy) || errors.Is(err, ErrDetectorBusy) ||
		errors.Is(err, ErrIndexBuildLocked) || lockTimedOut(err)
}

// lockedAs is err, marked with as when it is a lock wait that ran out
// (55P03): ErrAuditLogBusy or ErrDetectorBusy for the background passes
// over audit logs (see backgroundLockWait), ErrMigrationLocked for tenant
// migrations, ErrIndexBuildLocked for index builds.
func lockedAs(as, err error) error {
	if lockTimedOut(err) {
		return fmt.Errorf("%w: %w", as, err)
	}
	return err
}

// lockTimedOut reports whether err is PostgreSQL's lock_not_available
// (55P03): lock_timeout ran out, or NOWAIT found the lock taken; or a
// statement that the watchdog of [DB.execLockBounded] cancelled for the
// same reason, behind a transaction pooler.
func lockTimedOut(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03" || errors.Is(err, errLockWaitRanOut) || errors.Is(err, errLockWaitUnwatched)
}
