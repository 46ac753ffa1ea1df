package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// pg_dump holds one lock on every table, sequence and materialized view it
// dumps (LOCK TABLE … IN ACCESS SHARE MODE, then reading each sequence), and
// on the TOAST table and TOAST index of each table whose values it
// de-TOASTs, all until it ends. Those locks live in PostgreSQL's shared lock
// table, which holds max_locks_per_transaction × (max_connections +
// max_prepared_transactions) locks for everyone (PostgreSQL documentation,
// "Lock Management": max_locks_per_transaction). At the defaults (64 × 100)
// a dump fails with "out of shared memory … increase
// max_locks_per_transaction" once a database has several thousand tables:
// about 1,500 to 2,000 tenants of four tables each.

// lockReserve is the lock-table room, per connection, left to everything
// else running while the dump does (each backend's first 16 relation locks
// take no room in the shared table: they are fast-path locks).
const lockReserve = 16

// LocksNeeded returns the smallest max_locks_per_transaction with which
// pg_dump of a database holding relations lockable relations (see
// [BackupLocks]) completes while connections (max_connections +
// max_prepared_transactions) are open: relations/connections, rounded up,
// plus lockReserve. It is never below PostgreSQL's default of 64.
func LocksNeeded(relations, connections int) int {
	connections = max(connections, 1)
	return max(64, (relations+connections-1)/connections+lockReserve)
}

// BackupLocks compares the server's max_locks_per_transaction with what
// pg_dump of this database needs now ([LocksNeeded]).
type BackupLocks struct {
	// Relations counts what pg_dump locks: tables, partitioned tables,
	// sequences and materialized views, plus two (the TOAST table and its
	// index) for each TOAST table holding data.
	Relations int
	// Connections is max_connections + max_prepared_transactions.
	Connections int
	// Setting is the server's max_locks_per_transaction, Needed the least
	// that dumps this database.
	Setting, Needed int
}

// OK reports whether pg_dump of the whole database can take its locks.
func (b BackupLocks) OK() bool { return b.Setting >= b.Needed }

// String says what is wrong and what to set, for logs and /readyz.
func (b BackupLocks) String() string {
	if b.OK() {
		return fmt.Sprintf("max_locks_per_transaction %d covers pg_dump of %d relations (needs %d)", b.Setting, b.Relations, b.Needed)
	}
	return fmt.Sprintf("pg_dump of this database would fail: it locks %d relations and max_locks_per_transaction is %d; "+
		"set it to at least %d and restart PostgreSQL, or use a physical backup (docs/operations.md, Backups)", b.Relations, b.Setting, b.Needed)
}

// queryer is what BackupLocks needs of a pool, a connection or a transaction.
type queryer interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}

const backupLocksSQL = `SELECT
	(SELECT count(*) FILTER (WHERE relkind IN ('r', 'p', 'S', 'm')) + 2 * count(*) FILTER (WHERE relkind = 't' AND relpages > 0) FROM pg_class),
	current_setting('max_connections')::int + current_setting('max_prepared_transactions')::int,
	current_setting('max_locks_per_transaction')::int`

func backupLocks(ctx context.Context, q queryer) (BackupLocks, error) {
	var b BackupLocks
	if err := q.QueryRow(ctx, backupLocksSQL).Scan(&b.Relations, &b.Connections, &b.Setting); err != nil {
		return b, fmt.Errorf("counting the relations a backup locks: %w", err)
	}
	b.Needed = LocksNeeded(b.Relations, b.Connections)
	return b, nil
}

// BackupLocks counts the relations pg_dump of this database would lock
// (one scan of pg_class: tens of milliseconds at 10,000 tenants) and
// compares max_locks_per_transaction with what that needs.
func (db *DB) BackupLocks(ctx context.Context) (BackupLocks, error) { return backupLocks(ctx, db.pool) }
