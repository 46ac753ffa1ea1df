package store

import (
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
// So the writes of calls' records (the group commit's parts and the
// records written alone after a part failed, [DB.InsertAuditRecord]) wait
// at most auditLockWait for a lock (lock_timeout); a tenant whose write
// ran out of it is refused for auditBusyFor with [ErrAuditLogBusy], at
// once and without a statement, and then tried again. Its calls answer as
// during a database outage (retry shortly); the others' records are
// written without it. (PostgreSQL documentation, "Client Connection
// Defaults": lock_timeout; "Explicit Locking": the lock modes.)
const (
	auditLockWait = 200 * time.Millisecond
	auditBusyFor  = time.Second
)

// ErrAuditLogBusy is the error of a record that could not be written
// because its tenant's audit log is locked by another session. It wraps
// [ErrUnavailable], so [Unavailable] reports it as transient.
var ErrAuditLogBusy = fmt.Errorf("%w: the audit log is locked by another session (a migration or maintenance)", ErrUnavailable)

// auditLockWaitSQL is the lock_timeout of a call's audit write, for
// set_config(…, true) in its transaction.
var auditLockWaitSQL = strconv.FormatInt(auditLockWait.Milliseconds(), 10) + "ms"

// auditBusyErr returns the error for t's records while its audit log was
// found locked less than auditBusyFor ago, else nil.
func (db *DB) auditBusyErr(t *tenancy.Tenant) error {
	v, ok := db.auditBusy.Load(t.ID)
	if !ok {
		return nil
	}
	if time.Now().UnixNano() < v.(int64) {
		return fmt.Errorf("tenant %s: %w", t.Key, ErrAuditLogBusy)
	}
	db.auditBusy.CompareAndDelete(t.ID, v)
	return nil
}

// auditBusyAfter notes t as busy when err is a lock wait that ran out
// (SQLSTATE 55P03, lock_not_available), and returns the error to report:
// ErrAuditLogBusy's for a lock, err otherwise.
func (db *DB) auditBusyAfter(t *tenancy.Tenant, err error) error {
	if !lockTimedOut(err) {
		return err
	}
	db.auditBusy.Store(t.ID, time.Now().Add(auditBusyFor).UnixNano())
	return fmt.Errorf("tenant %s: %w", t.Key, ErrAuditLogBusy)
}

// lockTimedOut reports whether err is PostgreSQL's lock_not_available
// (55P03): lock_timeout ran out, or NOWAIT found the lock taken.
func lockTimedOut(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}
