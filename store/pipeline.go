package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// InTenantWrite is [DB.InTenant] for a call that changes data, with its
// audit record, in two round trips when fn sends one statement: the
// transaction's opening statements (BEGIN, both set_configs) travel in one
// pipelined message with fn's first statement, and rec's INSERT travels
// with COMMIT. A statement fn marks with [Final] carries rec's INSERT and
// COMMIT itself, so a write of one final statement takes one round trip.
// The record commits with the effect or not at all, as with [InsertAudit]
// in [DB.InTenant].
//
// fn gets a pgx.Tx whose statements run on the transaction's connection;
// it cannot open nested transactions (savepoints) or commit. rec is
// cleaned (see [CleanText]) and gets its id and time. An error from fn
// or from the commit rolls everything back and is returned; an error
// from fn after its final statement committed is returned wrapped in one
// that says the write committed.
func (db *DB) InTenantWrite(ctx context.Context, t *tenancy.Tenant, fn func(ctx context.Context, tx pgx.Tx) error, rec *AuditRecord) error {
	if holdsTenantConn(ctx) {
		return ErrNestedConnection
	}
	if !opaqueName.MatchString(t.Schema) || (t.DBRole != "" && !opaqueName.MatchString(t.DBRole)) {
		return fmt.Errorf("tenant %s: refusing unexpected schema or role name", t.Key)
	}
	if err := db.markAuditPending(ctx, t); err != nil {
		return err
	}
	pc, release, err := db.work.Acquire(ctx, t.ID)
	if err != nil {
		return err
	}
	// A connection left inside a transaction (an error mid-way) is not
	// idle: the pool closes it on Release instead of reusing it.
	defer release()
	conn := pc.Conn()
	tx := &pipeTx{conn: conn, db: db, schema: t.Schema, rec: rec}
	err = db.writeOnce(ctx, conn, t, fn, tx)
	if tx.prepared && !tx.committed && staleStatement(err) {
		// A prepared statement of the write's may have been refused
		// (its result columns or its parameters' types no longer fit
		// after a migration) and the transaction rolled back: the
		// tenant's statements are dropped and the write runs again,
		// unprepared (prepared.go).
		forgetTenantStatements(conn, t.Schema)
		err = db.writeOnce(ctx, conn, t, fn, &pipeTx{conn: conn, db: db, schema: t.Schema, rec: rec, unprepared: true})
	}
	return err
}

// writeOnce is one attempt of [DB.InTenantWrite] on conn, with tx, a
// fresh pipeTx of conn (its unprepared set to keep the tool's statements
// unprepared).
func (db *DB) writeOnce(ctx context.Context, conn *pgx.Conn, t *tenancy.Tenant, fn func(ctx context.Context, tx pgx.Tx) error, tx *pipeTx) error {
	// The same opening as withTenantMode's, as separate statements (one
	// Parse each in the extended protocol).
	tx.pre = append(tx.pre, queued{sql: "BEGIN"})
	open := setSearchPathSQL
	if t.DBRole != "" {
		open = writeOpenSQL
		tx.pre = append(tx.pre, queued{sql: open, args: []any{pgx.Identifier{t.Schema}.Sanitize(), t.DBRole}})
	} else {
		tx.pre = append(tx.pre, queued{sql: open, args: []any{pgx.Identifier{t.Schema}.Sanitize()}})
	}
	// The opening runs prepared (see DB.prepare), with generic plans if
	// the tool's first statement is marked so (plans.go); the tool's
	// statements and the audit INSERT, which name the tenant's tables, are
	// prepared per tenant as they recur (prepared.go).
	if err := db.prepare(ctx, conn, t.Schema, open, open+planGenericSQL); err != nil {
		return err
	}
	rollback := func() {
		if conn.PgConn().TxStatus() != 'I' && !conn.IsClosed() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), groupRollbackTimeout)
			defer cancel()
			_, _ = conn.Exec(rctx, "ROLLBACK")
		}
	}
	err := fn(context.WithValue(ctx, holdKey{}, true), tx)
	if ferr := tx.finish(); err == nil {
		err = ferr
	}
	if tx.ended {
		// The final statement carried the record and COMMIT.
		switch {
		case err != nil && tx.committed:
			return fmt.Errorf("%w, then the tool failed: %w", ErrWriteCommitted, err)
		case err != nil:
			rollback()
			return cancelled(tx.endCause, err)
		case !tx.committed:
			rollback()
			return pgx.ErrTxCommitRollback
		}
		return nil
	}
	if err == nil {
		// No COMMIT is sent for a call whose time has already run out.
		err = ctx.Err()
	}
	if err != nil {
		rollback()
		return err
	}
	b := &pgx.Batch{}
	if !tx.begun {
		for _, q := range tx.pre {
			b.Queue(q.sql, q.args...)
		}
	}
	db.startMessage(conn)
	tx.queueEnd(ctx, b)
	cctx, stop := commitContext(ctx, conn)
	err = conn.SendBatch(cctx, b).Close()
	if cause := stop(); err != nil {
		rollback()
		return cancelled(cause, err)
	}
	return nil
}

// commitContext returns the context to send a message that carries COMMIT
// with (the write's record and COMMIT, or a final statement with them),
// and stop, to call once the message's results are read. Once PostgreSQL
// has that message it runs it to the end whether or not anyone reads the
// answer: a statement waiting for a lock, say, commits when the lock is
// released. So the end of ctx must not merely stop reading (pgx's way,
// which leaves the caller believing the write failed while it commits);
// instead PostgreSQL is asked to cancel what is still running (a cancel
// request, PostgreSQL documentation, "Canceling Requests in Progress"),
// and its answer says whether the write committed. Only if no answer
// comes within groupRollbackTimeout more is the connection abandoned
// (the outcome is then unknown). stop waits for a cancel request in
// flight, so none reaches the connection's next statement, and returns
// ctx's error if one was sent.
func commitContext(ctx context.Context, conn *pgx.Conn) (context.Context, func() error) {
	cctx, abandon := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	var timer *time.Timer
	var cause error
	stopCancel := context.AfterFunc(ctx, func() {
		defer close(done)
		cause = ctx.Err()
		timer = time.AfterFunc(groupRollbackTimeout, abandon)
		rctx, cancel := context.WithTimeout(cctx, groupRollbackTimeout)
		defer cancel()
		_ = conn.PgConn().CancelRequest(rctx)
	})
	var once sync.Once
	return cctx, func() error {
		once.Do(func() {
			if !stopCancel() {
				<-done
				timer.Stop()
			}
			abandon()
		})
		return cause
	}
}

// cancelled returns err, a write's failure, as cause (the end of the
// context a message carrying COMMIT was sent with, see commitContext)
// too, so that callers see a timeout as one: PostgreSQL reports the
// statement it cancelled on request.
func cancelled(cause, err error) error {
	if cause != nil && err != nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w (%w)", cause, err)
	}
	return err
}

// commitBatch is the results of a message carrying COMMIT, sent with
// commitContext: closing them stops that context's cancel request and
// sets *cause.
type commitBatch struct {
	pgx.BatchResults
	stop  func() error
	cause *error
}

func (b *commitBatch) Close() error {
	err := b.BatchResults.Close()
	*b.cause = b.stop()
	return err
}

// writeOpenSQL confines the rest of a write transaction to the tenant.
const writeOpenSQL = "SELECT set_config('search_path', $1, true), set_config('role', $2, true)"

// writeAuditSQL is a write's audit record, in the tenant's transaction.
const writeAuditSQL = `INSERT INTO audit_log (request_id, decision, tool, subject, email, provider, api_key_id,
	client_ip, user_agent, reason, args_digest, count, via)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id, at`

// groupRollbackTimeout bounds the ROLLBACK after a failure.
const groupRollbackTimeout = 5 * time.Second

var _ pgx.Tx = (*pipeTx)(nil)

type queued struct {
	sql  string
	args []any
}

// pipeTx is the pgx.Tx that InTenantWrite hands to fn: the transaction's
// opening statements are sent with its first statement.
type pipeTx struct {
	conn  *pgx.Conn
	pre   []queued
	begun bool
	// db and schema prepare the tool's statements for the tenant
	// (prepared.go), unless unprepared is set; prepared says that a
	// statement was sent by its prepared name.
	db         *DB
	schema     string
	unprepared bool
	prepared   bool
	// generic: the transaction plans its prepared statements generically
	// (its opening set plan_cache_mode, see plans.go), until a statement
	// not marked with GenericPlan comes.
	generic bool
	// rec is the write's audit record. A statement sent with a context
	// from [Final] carries it and COMMIT (ended); committed is set once
	// PostgreSQL has answered that COMMIT with COMMIT; endRows are that
	// statement's rows, whose closing reads the record and COMMIT.
	rec       *AuditRecord
	ended     bool
	committed bool
	endRows   *batchRows
	// endCause is the end of the final statement's context if it ended
	// before PostgreSQL answered (see commitContext).
	endCause error
}

// finalKey marks a statement as its write's last (see Final).
type finalKey struct{}

// Final returns ctx marking the statement sent with it, in a write
// ([DB.InTenantWrite]), as the write's last: the write's audit record and
// COMMIT travel in the same message as that statement, so a write whose
// only statement is final takes one round trip (BEGIN, the tenant's
// settings, the statement, the record, COMMIT) instead of two. The
// record is written as it stands when the statement is sent. After it,
// the tool may read the statement's result but send nothing more, and
// must not fail: the write has committed (InTenantWrite returns an error
// wrapping [ErrWriteCommitted] if it does). If the statement fails,
// PostgreSQL rolls the whole transaction back, record included, as it
// would have at COMMIT.
// Outside a write, or in a read, Final changes nothing.
func Final(ctx context.Context) context.Context { return context.WithValue(ctx, finalKey{}, true) }

// ErrWriteCommitted is wrapped in the error [DB.InTenantWrite] returns
// when the tool failed after its final statement ([Final]) had committed
// the write and its audit record: the call's effect and its record exist,
// so a caller must not record the call a second time.
var ErrWriteCommitted = errors.New("store: the write committed with its final statement")

// errAfterFinal refuses a statement sent after a write's final one.
var errAfterFinal = errors.New("store: a statement was sent after the write's final statement (store.Final)")

// sql is what to send for the tool's statement sql with args: its
// prepared name or sql itself (prepared.go).
func (tx *pipeTx) sql(ctx context.Context, sql string, args []any) (string, []any) {
	if tx.unprepared {
		return sql, args
	}
	psql, pargs := tx.db.tenantSQL(ctx, tx.conn, tx.schema, sql, args, tx.begun)
	if psql != sql {
		tx.prepared = true
	}
	return psql, pargs
}

var errPipeTx = errors.New("store: a call's write transaction cannot be committed, rolled back or nested by the tool")

// send sends sql (prepared where prepared.go says so) in one message
// with the transaction's opening statements if they have not been sent,
// and with the write's record and COMMIT if ctx marks it final, and reads
// the results before sql's. direct is set (and nothing sent) when sql is
// neither first nor final: it then runs on the connection as it is.
func (tx *pipeTx) send(ctx context.Context, sql string, args []any) (br pgx.BatchResults, direct bool, err error) {
	if tx.ended {
		return nil, false, errAfterFinal
	}
	tx.db.startMessage(tx.conn)
	final := tx.rec != nil && ctx.Value(finalKey{}) != nil
	if tx.begun && !final {
		return nil, true, nil
	}
	b := &pgx.Batch{}
	n := 0
	psql, pargs := tx.sql(ctx, sql, args)
	if !tx.begun {
		tx.generic = tx.db.wantsGeneric(ctx, psql != sql)
		for i, q := range tx.pre {
			if i == len(tx.pre)-1 && tx.generic {
				// The opening's set_configs (after BEGIN).
				q.sql += planGenericSQL
			}
			b.Queue(q.sql, q.args...)
		}
		n = len(tx.pre)
	} else if tx.leaveGeneric(ctx) {
		b.Queue(planDefaultSQL)
		n = 1
	}
	b.Queue(psql, pargs...)
	if final {
		tx.queueEnd(ctx, b)
	}
	if err := ctx.Err(); err != nil {
		// A preparation cut short by ctx has closed the connection
		// (see readTx.send).
		return nil, false, err
	}
	tx.begun = true
	if final {
		cctx, stop := commitContext(ctx, tx.conn)
		br = &commitBatch{tx.conn.SendBatch(cctx, b), stop, &tx.endCause}
	} else {
		br = tx.conn.SendBatch(ctx, b)
	}
	for range n {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return nil, false, err
		}
	}
	return br, false, nil
}

// queueEnd queues the write's audit record and COMMIT on b, and marks the
// write ended.
func (tx *pipeTx) queueEnd(ctx context.Context, b *pgx.Batch) {
	rec := tx.rec
	rec.clean()
	auditSQL := writeAuditSQL
	if !tx.unprepared {
		auditSQL = tx.db.tenantStatement(ctx, tx.conn, tx.schema, writeAuditSQL, tx.begun)
		tx.prepared = tx.prepared || auditSQL != writeAuditSQL
	}
	b.Queue(auditSQL,
		rec.RequestID, rec.Decision, rec.Tool, rec.Subject, rec.Email, rec.Provider, rec.APIKeyID,
		rec.ClientIP, rec.UserAgent, rec.Reason, rec.ArgsDigest, rec.Count, rec.Via).QueryRow(func(row pgx.Row) error {
		return row.Scan(&rec.ID, &rec.At)
	})
	b.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() != "COMMIT" {
			return pgx.ErrTxCommitRollback
		}
		tx.committed = true
		return nil
	})
	tx.ended = true
}

// finish reads what is left of the final statement's message (the
// record, COMMIT) if the tool left its rows open, and returns the first
// error in it.
func (tx *pipeTx) finish() error {
	if tx.endRows == nil {
		return nil
	}
	tx.endRows.Close()
	err := tx.endRows.Err()
	tx.endRows = nil
	return err
}

// begin sends the opening statements alone (for the rare calls that start
// with something other than Exec, Query or QueryRow).
func (tx *pipeTx) begin(ctx context.Context) error {
	if tx.begun {
		return nil
	}
	b := &pgx.Batch{}
	for _, q := range tx.pre {
		b.Queue(q.sql, q.args...)
	}
	tx.begun = true
	return tx.conn.SendBatch(ctx, b).Close()
}

func (tx *pipeTx) Begin(context.Context) (pgx.Tx, error) { return nil, errPipeTx }
func (tx *pipeTx) Commit(context.Context) error          { return errPipeTx }
func (tx *pipeTx) Rollback(context.Context) error        { return errPipeTx }
func (tx *pipeTx) LargeObjects() pgx.LargeObjects        { return pgx.LargeObjects{} }
func (tx *pipeTx) Conn() *pgx.Conn                       { return tx.conn }

func (tx *pipeTx) CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	if err := tx.begin(ctx); err != nil {
		return 0, err
	}
	return tx.conn.CopyFrom(ctx, table, cols, src)
}

func (tx *pipeTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	// An opening that failed leaves the transaction aborted: the batch then
	// fails with it.
	_ = tx.begin(ctx)
	if err := tx.planDefault(ctx); err != nil {
		return failedBatch{err}
	}
	return tx.conn.SendBatch(ctx, b)
}

// leaveGeneric reports whether a statement sent with ctx in a
// transaction planning generically is not marked so (GenericPlan): the
// transaction must return to PostgreSQL's own choice of plans before it,
// prepared or not (an unnamed statement too is planned generically under
// force_generic_plan). It sets generic to false.
func (tx *pipeTx) leaveGeneric(ctx context.Context) bool {
	if !tx.generic || genericPlanned(ctx) {
		return false
	}
	tx.generic = false
	return true
}

// planDefault sends planDefaultSQL on its own if the statements sent next
// with ctx are to leave the transaction's generic plans (leaveGeneric):
// one more round trip, for a write that mixes marked and unmarked
// statements.
func (tx *pipeTx) planDefault(ctx context.Context) error {
	if !tx.leaveGeneric(ctx) {
		return nil
	}
	_, err := tx.conn.Exec(ctx, planDefaultSQL)
	return err
}

func (tx *pipeTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if err := tx.begin(ctx); err != nil {
		return nil, err
	}
	return tx.conn.Prepare(ctx, name, sql)
}

func (tx *pipeTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	br, direct, err := tx.send(ctx, sql, args)
	if direct {
		sql, args = tx.sql(ctx, sql, args)
		if err := ctx.Err(); err != nil {
			return pgconn.CommandTag{}, err
		}
		if err := tx.planDefault(ctx); err != nil {
			return pgconn.CommandTag{}, err
		}
		return tx.conn.Exec(ctx, sql, args...)
	}
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

func (tx *pipeTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	br, direct, err := tx.send(ctx, sql, args)
	if direct {
		sql, args = tx.sql(ctx, sql, args)
		if err := ctx.Err(); err != nil {
			return &batchRows{err: err}, err
		}
		if err := tx.planDefault(ctx); err != nil {
			return &batchRows{err: err}, err
		}
		return tx.conn.Query(ctx, sql, args...)
	}
	if err != nil {
		return &batchRows{err: err}, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return &batchRows{err: err}, err
	}
	r := &batchRows{Rows: rows, br: br}
	if tx.ended {
		// Closing the rows reads the record and COMMIT.
		tx.endRows = r
	}
	return r, nil
}

func (tx *pipeTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, _ := tx.Query(ctx, sql, args...)
	return pipeRow{rows}
}

// batchRows is the rows of a statement sent in a batch: closing them
// reads the batch to its end.
type batchRows struct {
	pgx.Rows // nil when err is set before any row
	br       pgx.BatchResults
	err      error
}

func (r *batchRows) Close() {
	if r.Rows != nil {
		r.Rows.Close()
	}
	if r.br != nil {
		if err := r.br.Close(); err != nil && r.err == nil {
			r.err = err
		}
		r.br = nil
	}
}

func (r *batchRows) Err() error {
	if r.Rows != nil {
		if err := r.Rows.Err(); err != nil {
			return err
		}
	}
	return r.err
}

func (r *batchRows) Next() bool {
	if r.Rows == nil || r.err != nil {
		return false
	}
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Scan(dest ...any) error {
	if r.Rows == nil {
		return r.err
	}
	return r.Rows.Scan(dest...)
}

func (r *batchRows) Values() ([]any, error) {
	if r.Rows == nil {
		return nil, r.err
	}
	return r.Rows.Values()
}

func (r *batchRows) RawValues() [][]byte {
	if r.Rows == nil {
		return nil
	}
	return r.Rows.RawValues()
}

func (r *batchRows) CommandTag() pgconn.CommandTag {
	if r.Rows == nil {
		return pgconn.CommandTag{}
	}
	return r.Rows.CommandTag()
}

func (r *batchRows) FieldDescriptions() []pgconn.FieldDescription {
	if r.Rows == nil {
		return nil
	}
	return r.Rows.FieldDescriptions()
}

func (r *batchRows) Conn() *pgx.Conn {
	if r.Rows == nil {
		return nil
	}
	return r.Rows.Conn()
}

// pipeRow is QueryRow's row: pgx's semantics (ErrNoRows, first row only).
type pipeRow struct{ rows pgx.Rows }

func (r pipeRow) Scan(dest ...any) error {
	defer r.rows.Close()
	if !r.rows.Next() {
		r.rows.Close()
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
