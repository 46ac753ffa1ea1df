package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// InTenantReadOnly runs fn for a tool that only reads tenant t's data, with
// one round trip per statement and no BEGIN or COMMIT: each statement fn
// sends through its pgx.Tx travels in one pipelined message after a
// statement that sets the tenant's search_path and role and makes the
// transaction read-only (set_config(…, true), that is SET LOCAL), and the
// message ends with its Sync. PostgreSQL runs the statements up to a Sync
// as one implicit transaction and ends it there, undoing the local
// settings (PostgreSQL documentation, "Extended Query" and "Pipelining"):
// so every statement runs as the tenant role in its schema, refuses any
// write (SQLSTATE 25006) and leaves nothing behind on the connection. No
// session state is used, so it works through PgBouncer in transaction
// mode.
//
// Statements of one call see separate snapshots, as statements of one READ
// COMMITTED transaction do. fn's context is marked as holding a tenant
// connection (see [ErrNestedConnection]). The Tx cannot commit, roll back,
// nest, prepare or copy, and its Conn is nil: a statement sent on the
// connection directly would not carry the tenant's role. The call's audit
// record is written elsewhere (group-committed).
func (db *DB) InTenantReadOnly(ctx context.Context, t *tenancy.Tenant, fn func(ctx context.Context, tx pgx.Tx) error) error {
	if holdsTenantConn(ctx) {
		return ErrNestedConnection
	}
	if !opaqueName.MatchString(t.Schema) || (t.DBRole != "" && !opaqueName.MatchString(t.DBRole)) {
		return fmt.Errorf("tenant %s: refusing unexpected schema or role name", t.Key)
	}
	pc, release, err := db.work.Acquire(ctx, t.ID)
	if err != nil {
		return err
	}
	defer release()
	tx := &readTx{conn: pc.Conn(), db: db, schema: t.Schema}
	tx.owner = queued{sql: readOpenOwnerSQL, args: []any{pgx.Identifier{t.Schema}.Sanitize()}}
	tx.prelude = tx.owner // a database whose account cannot create roles: schema isolation only
	if t.DBRole != "" {
		tx.prelude = queued{sql: readOpenSQL, args: []any{pgx.Identifier{t.Schema}.Sanitize(), t.DBRole}}
	}
	if err := db.prepare(ctx, tx.conn, t.Schema, readOpenSQL, readOpenOwnerSQL, readOpenSQL+planGenericSQL, readOpenOwnerSQL+planGenericSQL); err != nil {
		return err
	}
	err = fn(context.WithValue(ctx, holdKey{}, true), tx)
	if tx.anyPrepared && staleStatement(err) {
		// A statement that was not retried (one of a batch) may have met
		// a prepared statement PostgreSQL now refuses (staleStatement):
		// the tenant's statements are dropped, or every later call on
		// this connection would meet the same refusal.
		forgetTenantStatements(tx.conn, tx.schema)
	}
	return err
}

// readOpenSQL and readOpenOwnerSQL (without the role, see [DB.AsAdmin])
// travel before each statement of a read.
const (
	readOpenSQL      = "SELECT set_config('search_path', $1, true), set_config('role', $2, true), set_config('transaction_read_only', 'on', true)"
	readOpenOwnerSQL = "SELECT set_config('search_path', $1, true), set_config('transaction_read_only', 'on', true)"
)

var _ pgx.Tx = (*readTx)(nil)

// readTx is the pgx.Tx of [DB.InTenantReadOnly]: every statement is sent
// after the prelude, in one implicit transaction of its own.
type readTx struct {
	conn    *pgx.Conn
	prelude queued
	// owner is the prelude without the role, used while asOwner is set
	// (see [DB.AsAdmin]: Gatehouse's own SQL on the control schema).
	owner   queued
	asOwner bool
	// db and schema prepare the tool's statements for the tenant
	// (prepared.go).
	db     *DB
	schema string
	// sentPrepared: the last message ran a statement by its prepared
	// name; anyPrepared: one of the read's messages did.
	sentPrepared, anyPrepared bool
}

var errReadTx = errors.New("store: a read runs each statement in its own implicit transaction; it cannot commit, roll back, nest, prepare, copy or use its connection directly")

func (tx *readTx) Begin(context.Context) (pgx.Tx, error) { return nil, errReadTx }
func (tx *readTx) Commit(context.Context) error          { return errReadTx }
func (tx *readTx) Rollback(context.Context) error        { return errReadTx }
func (tx *readTx) LargeObjects() pgx.LargeObjects        { return pgx.LargeObjects{} }
func (tx *readTx) Conn() *pgx.Conn                       { return nil }

func (tx *readTx) CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error) {
	return 0, errReadTx
}

func (tx *readTx) Prepare(context.Context, string, string) (*pgconn.StatementDescription, error) {
	return nil, errReadTx
}

// send sends the prelude and b's statements in one batch, and reads the
// prelude's result. b's statements run prepared for the tenant where
// prepared.go says so, unless unprepared is set; the prelude sets generic
// plans when every one of them runs prepared and ctx marks them so
// (plans.go).
func (tx *readTx) send(ctx context.Context, b *pgx.Batch, unprepared bool) (pgx.BatchResults, error) {
	all := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 1, len(b.QueuedQueries)+1)}
	tx.db.startMessage(tx.conn)
	tx.sentPrepared = false
	generic := len(b.QueuedQueries) > 0
	for _, q := range b.QueuedQueries {
		prepared := false
		if !unprepared {
			if sql, args := tx.db.tenantSQL(ctx, tx.conn, tx.schema, q.SQL, q.Arguments, false); sql != q.SQL {
				pq := *q
				pq.SQL, pq.Arguments = sql, args
				q = &pq
				prepared = true
				tx.sentPrepared, tx.anyPrepared = true, true
			}
		}
		generic = generic && tx.db.wantsGeneric(ctx, prepared)
		all.QueuedQueries = append(all.QueuedQueries, q)
	}
	p := tx.prelude
	if tx.asOwner {
		p = tx.owner
	}
	if generic {
		p.sql += planGenericSQL
	}
	all.QueuedQueries[0] = &pgx.QueuedQuery{SQL: p.sql, Arguments: p.args}
	if err := ctx.Err(); err != nil {
		// A preparation cut short by ctx (held up by a lock, say) has
		// closed the connection: the call's time ran out, the database
		// is not unavailable.
		return nil, err
	}
	br := tx.conn.SendBatch(ctx, all)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, err
	}
	return br, nil
}

// retry says whether a statement that failed with err is sent once more,
// unprepared: it was sent by its prepared name and PostgreSQL may have
// refused the prepared form (staleStatement: its result columns or its
// parameters' types no longer fit the tables after a migration), and the
// tenant's statements on this connection are dropped.
func (tx *readTx) retry(err error) bool {
	if !tx.sentPrepared || !staleStatement(err) {
		return false
	}
	forgetTenantStatements(tx.conn, tx.schema)
	return true
}

// SendBatch sends b after the prelude. A batch is not sent again when a
// prepared statement's result type changed (its callbacks may have run):
// that error is returned and, once fn returns it to
// [DB.InTenantReadOnly], the tenant's statements on the connection are
// dropped, so the next call runs unprepared.
func (tx *readTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	br, err := tx.send(ctx, b, false)
	if err != nil {
		return failedBatch{err}
	}
	return br
}

func (tx *readTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := tx.exec(ctx, sql, args, false)
	if tx.retry(err) {
		tag, err = tx.exec(ctx, sql, args, true)
	}
	return tag, err
}

func (tx *readTx) exec(ctx context.Context, sql string, args []any, unprepared bool) (pgconn.CommandTag, error) {
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	br, err := tx.send(ctx, b, unprepared)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

func (tx *readTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := tx.query(ctx, sql, args, false)
	if tx.retry(err) {
		rows, err = tx.query(ctx, sql, args, true)
	}
	return rows, err
}

func (tx *readTx) query(ctx context.Context, sql string, args []any, unprepared bool) (pgx.Rows, error) {
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	br, err := tx.send(ctx, b, unprepared)
	if err != nil {
		return &batchRows{err: err}, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return &batchRows{err: err}, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

func (tx *readTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, _ := tx.Query(ctx, sql, args...)
	return pipeRow{rows}
}

// failedBatch is the BatchResults of a batch whose prelude failed.
type failedBatch struct{ err error }

func (f failedBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, f.err }
func (f failedBatch) Query() (pgx.Rows, error)         { return &batchRows{err: f.err}, f.err }
func (f failedBatch) QueryRow() pgx.Row                { return pipeRow{&batchRows{err: f.err}} }
func (f failedBatch) Close() error                     { return f.err }
func (f failedBatch) Tx() pgx.Tx                       { return nil }
