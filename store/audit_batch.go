package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// AuditEntry is one record bound for a tenant's audit log, for
// [DB.InsertAuditBatch].
type AuditEntry struct {
	Tenant *tenancy.Tenant
	Rec    *AuditRecord
}

// InsertAuditBatch writes records of any number of tenants in one
// transaction with one commit (one WAL flush) and one round trip: a
// multi-row INSERT per tenant, pipelined in one extended-protocol batch
// that ends with a single Sync, which PostgreSQL runs as one implicit
// transaction (PostgreSQL documentation, "Pipelining" / "Extended Query":
// statements up to a Sync form an implicit transaction block unless they
// open one). Each tenant's INSERT runs prepared on the lane's connection
// once it recurs there, while the connection has room for it
// (laneStatement, Options.ControlPreparedStatements); behind a transaction pooler it
// uses no session state, so it works through PgBouncer in transaction
// mode.
//
// It runs on a control lane (the first tenant's: see Options.ControlLanes)
// as the owner, into each tenant's schema named by Gatehouse (never by the
// caller); the records' text is cleaned first (see [CleanText]). On
// success every record has its id and time, in the order given per
// tenant. On error nothing was written: callers retry with
// [DB.InsertAuditRecords] per tenant, which falls back to one record at a
// time so that one bad record never drops the others.
// [DB.WriteAuditEntries] splits a batch by the tenants' lanes and does
// that for each part.
func (db *DB) InsertAuditBatch(ctx context.Context, entries []AuditEntry) error {
	if len(entries) == 0 {
		return nil
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.Tenant.ID
	}
	return db.insertAuditBatch(ctx, entries, db.ctl.lanes(ids)[0], true)
}

// insertAuditBatch is InsertAuditBatch on a connection of lane (or of
// another lane when it is taken). With calls set (the records of calls),
// it waits at most auditLockWait for a lock, and an error that says so
// names the tenant whose statement waited (an *auditLockError).
func (db *DB) insertAuditBatch(ctx context.Context, entries []AuditEntry, lane int, calls bool) (err error) {
	type group struct {
		t    *tenancy.Tenant
		recs []*AuditRecord
	}
	var groups []*group
	byID := map[string]*group{}
	for _, e := range entries {
		g := byID[e.Tenant.ID]
		if g == nil {
			if !opaqueName.MatchString(e.Tenant.Schema) {
				return fmt.Errorf("tenant %s: refusing unexpected schema name", e.Tenant.Key)
			}
			g = &group{t: e.Tenant}
			byID[e.Tenant.ID] = g
			groups = append(groups, g)
		}
		e.Rec.clean()
		g.recs = append(g.recs, e.Rec)
	}
	for _, g := range groups {
		// Mark the tenant as having unchained records, as every tenant
		// transaction that writes does (markAuditPending: a statement per
		// tenant and minute at most).
		if err := db.markAuditPending(ctx, g.t); err != nil {
			return err
		}
	}
	ids := make([]string, len(groups))
	for i, g := range groups {
		ids[i] = g.t.ID
	}
	conn, release, err := db.ctl.acquire(ctx, lane, callWork, ids[0], ids...)
	if err != nil {
		return err
	}
	defer release()
	// A tenant's INSERT that names its table runs prepared once the
	// connection has seen it before and has room for it (laneStatement),
	// planned generically: planned at each run, it cost PostgreSQL more
	// than running it (128 against 57 µs per tenant, one record each).
	// The others' records run one by one through a single-row INSERT
	// prepared once for every tenant, its table found through search_path
	// set just before the tenant's first (its parameters then go in
	// binary). They come last: a prepared statement run under a
	// search_path other than the one it was prepared under is analysed and
	// planned again, and the setting lasts to the end of the transaction.
	// That new plan is made once per tenant, and a single-row INSERT's
	// costs far less than the INSERT … SELECT FROM unnest(…)'s: on a warm
	// connection, a tenant's INSERT of one record cost PostgreSQL ~50
	// against ~150 µs (bench/README.md). A tenant with more than
	// rowPathMax records in the batch, or any behind a transaction pooler
	// (where nothing is prepared), has them go in one INSERT … SELECT FROM
	// unnest(…) prepared for every tenant instead, planned once: per
	// record it costs less than single rows from ~16 records on.
	db.startLaneMessage(conn.Conn())
	qs := make([]string, len(groups))
	prepared, shared := false, false
	for i, g := range groups {
		qs[i] = db.laneStatement(ctx, conn.Conn(), g.t.Schema, auditBatchSQL(g.t.Schema))
		if qs[i] == auditBatchSQL(g.t.Schema) {
			qs[i], shared = "", true
		} else {
			prepared = true
		}
	}
	if shared {
		// Parsed under the first tenant's schema: its audit log's lock.
		if err := db.prepare(ctx, conn.Conn(), groups[0].t.Schema, setSearchPathSQL, auditRowPathSQL, auditBatchPathSQL); err != nil {
			if lockTimedOut(err) {
				return &auditLockError{groups[0].t, err}
			}
			return err
		}
	}
	order := make([]int, 0, len(groups))
	for i := range groups {
		if qs[i] != "" {
			order = append(order, i)
		}
	}
	for i := range groups {
		if qs[i] == "" {
			order = append(order, i)
		}
	}
	b := &pgx.Batch{}
	// A call's records wait for a lock no longer than auditLockWait
	// (audit_busy.go); the prepared statements are planned generically.
	// One statement says both.
	switch generic := prepared && !db.customPlans; {
	case calls && generic:
		b.Queue(lockWaitGenericSQL, auditLockWaitSQL)
	case calls:
		b.Queue(lockWaitSQL, auditLockWaitSQL)
	case generic:
		b.Queue(planGenericLocalSQL)
	}
	// blamed is the tenant whose statement ran out of lock_timeout (the
	// first error of a pipeline: the statements after it are not run).
	var blamed *tenancy.Tenant
	blame := func(t *tenancy.Tenant, err error) error {
		if blamed == nil && lockTimedOut(err) {
			blamed = t
		}
		return err
	}
	defer func() {
		if err != nil && blamed != nil {
			err = &auditLockError{blamed, err}
		}
	}()
	for _, gi := range order {
		g := groups[gi]
		if qs[gi] == "" && !db.pooled && len(g.recs) <= rowPathMax {
			b.Queue(setSearchPathSQL, pgx.Identifier{g.t.Schema}.Sanitize())
			for _, r := range g.recs {
				b.Queue(auditRowPathSQL, r.RequestID, r.Decision, r.Tool, r.Subject, r.Email, r.Provider, r.APIKeyID,
					r.ClientIP, r.UserAgent, r.Reason, r.ArgsDigest, r.Via, int32(max(r.Count, 1))).QueryRow(func(row pgx.Row) error {
					return blame(g.t, row.Scan(&r.ID, &r.At))
				})
			}
			continue
		}
		cols, counts := auditArrays(g.recs)
		// unnest keeps the arrays' order, and INSERT … SELECT assigns ids
		// and returns rows in that order.
		args := make([]any, 0, 13)
		for _, c := range cols {
			args = append(args, c)
		}
		args = append(args, counts)
		recs := g.recs
		i := 0
		q := qs[gi]
		if q == "" {
			// More than rowPathMax records, or behind a transaction pooler
			// (where nothing is prepared, and each single-row INSERT would
			// be planned on its own).
			b.Queue(setSearchPathSQL, pgx.Identifier{g.t.Schema}.Sanitize())
			q = auditBatchPathSQL
		}
		t := g.t
		b.Queue(q, args...).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				if i >= len(recs) {
					return fmt.Errorf("audit batch: more rows returned than inserted")
				}
				if err := rows.Scan(&recs[i].ID, &recs[i].At); err != nil {
					return err
				}
				i++
			}
			if err := rows.Err(); err != nil {
				return blame(t, err)
			}
			if i != len(recs) {
				return fmt.Errorf("audit batch: %d rows returned for %d records", i, len(recs))
			}
			return nil
		})
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Close reads every result up to the Sync: the implicit transaction
	// has committed (or rolled back) when it returns. PostgreSQL runs the
	// message to its commit whether or not anyone reads the answer, so
	// the end of ctx cancels it in PostgreSQL and the answer is read
	// (commitContext): an error then means nothing was written.
	cctx, stop := commitContext(ctx, conn.Conn())
	err = conn.SendBatch(cctx, b).Close()
	err = cancelled(stop(), err)
	if err != nil && prepared && staleStatement(err) {
		// A prepared INSERT may have been refused (a migration changed
		// its table under it): the callers' retry runs unprepared, and
		// the next batches prepare afresh.
		for _, g := range groups {
			forgetStatements(conn.Conn(), laneStatementsKey, g.t.Schema)
		}
	}
	return err
}

// auditArrays returns recs' text columns, one array each in the order the
// multi-row statements read them through unnest (request_id, decision,
// tool, subject, email, provider, api_key_id, client_ip, user_agent,
// reason, args_digest, via), and their counts (at least 1).
func auditArrays(recs []*AuditRecord) (cols [][]string, counts []int32) {
	n := len(recs)
	cols = make([][]string, 12)
	for i := range cols {
		cols[i] = make([]string, n)
	}
	counts = make([]int32, n)
	for j, r := range recs {
		for i, v := range []string{r.RequestID, r.Decision, r.Tool, r.Subject, r.Email, r.Provider, r.APIKeyID,
			r.ClientIP, r.UserAgent, r.Reason, r.ArgsDigest, r.Via} {
			cols[i][j] = v
		}
		counts[j] = int32(max(r.Count, 1))
	}
	return cols, counts
}

// setSearchPathSQL points the rest of the transaction at one tenant's
// schema (set_config(…, true): SET LOCAL).
const setSearchPathSQL = "SELECT set_config('search_path', $1, true)"

// auditBatchSQL inserts records into the audit log of schema (a name
// Gatehouse gave, checked by the caller) from one array per column.
func auditBatchSQL(schema string) string {
	return "INSERT INTO " + pgx.Identifier{schema, "audit_log"}.Sanitize() + auditBatchValuesSQL
}

// auditBatchPathSQL is auditBatchSQL for the schema on the search_path,
// the same text for every tenant.
const auditBatchPathSQL = "INSERT INTO audit_log" + auditBatchValuesSQL

// rowPathMax is the most records of one tenant that the group commit and
// the chain pass write one by one through the single-row statements
// (auditRowPathSQL, chainUpdateRowPathSQL) when the tenant's own are not
// prepared; more go through one multi-row statement, which costs more to
// plan and less per record. On a warm connection, a record's INSERT and
// link cost PostgreSQL ~130 against ~320 µs of CPU for a tenant's only
// record, ~50 against ~80 per record for 8; in wall time, about the same
// for 16, ~65 against ~45 µs per record for 64.
const rowPathMax = 8

// auditRowPathSQL inserts one record into the audit log of the schema on
// the search_path (the same text for every tenant): its parameters are
// auditBatchSQL's, one value each, and it returns the record's id and at.
const auditRowPathSQL = `INSERT INTO audit_log (request_id, decision, tool, subject, email,
	provider, api_key_id, client_ip, user_agent, reason, args_digest, via, count)
	VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text,
		$8::text, $9::text, $10::text, $11::text, $12::text, $13::int)
	RETURNING id::bigint, at::timestamptz`

// Its result is cast to the types read (see chainColumns): the shared
// statement is analysed again for each tenant's table, and a row type that
// differed from the one it was prepared with, after a migration of some
// tenants' audit logs, would have it refused for the others.
const auditBatchValuesSQL = ` (request_id, decision, tool, subject, email,
	provider, api_key_id, client_ip, user_agent, reason, args_digest, via, count)
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
		$8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::int[])
	RETURNING id::bigint, at::timestamptz`

// lockWaitSQL bounds the lock waits of the rest of a transaction ($1:
// lock_timeout): a group commit's (audit_busy.go), a background pass's
// after its advisory locks (backgroundLockWait). lockWaitGenericSQL also
// has it plan its prepared statements generically (planGenericLocalSQL).
const (
	lockWaitSQL        = "SELECT set_config('lock_timeout', $1, true)"
	lockWaitGenericSQL = lockWaitSQL + planGenericSQL
)

// planGenericLocalSQL makes the rest of a control lane's transaction plan
// its prepared statements generically (their plans do not depend on their
// arguments: look-ups by primary key, the unchained records' partial
// index, inserts).
const planGenericLocalSQL = "SELECT set_config('plan_cache_mode', 'force_generic_plan', true)"

// laneStatement returns the name of sql, a statement of schema's (its
// tables named with their schema), prepared on control lane connection
// conn, or sql itself when it is not prepared there (not seen before, no
// room, behind a transaction pooler: see prepared.go). conn must be idle
// (not in a transaction).
func (db *DB) laneStatement(ctx context.Context, conn *pgx.Conn, schema, sql string) string {
	if db.pooled || db.lanePreparedCap <= 0 {
		return sql
	}
	return db.cachedStatement(ctx, conn, db.laneStatementsOf(conn), schema, sql, false)
}

// laneStatementIfUsed is laneStatement for a statement whose use is
// counted apart, by laneStatementUsed, once it has done work: it counts
// no use, and is sql itself unless sql has been counted often enough
// before (and is prepared now if it is due). A chain pass runs every
// tenant's SELECT and UPDATE whether or not it has records to chain, and
// the chainer also visits tenants that turn out to have none (the marks
// swept after a start, or every five minutes): counting those visits
// filled a connection's bound with the statements of idle tenants, which
// nothing evicts, leaving none for the busy ones.
func (db *DB) laneStatementIfUsed(ctx context.Context, conn *pgx.Conn, schema, sql string) string {
	if db.pooled || db.lanePreparedCap <= 0 {
		return sql
	}
	s := db.laneStatementsOf(conn)
	e := s.byKey[stmtKey{schema, sql}]
	if e == nil {
		return sql
	}
	return db.admit(ctx, conn, s, e, false)
}

// laneStatementUsed counts one use of sql, a statement of schema's, on
// control lane connection conn (see laneStatementIfUsed).
func (db *DB) laneStatementUsed(conn *pgx.Conn, schema, sql string) {
	if db.pooled || db.lanePreparedCap <= 0 {
		return
	}
	db.laneStatementsOf(conn).use(stmtKey{schema, sql})
}

// startLaneMessage says that a new message is being built on control lane
// connection conn (see [DB.startMessage]).
func (db *DB) startLaneMessage(conn *pgx.Conn) {
	if db.pooled || db.lanePreparedCap <= 0 {
		return
	}
	clear(db.laneStatementsOf(conn).pinned)
}

// prepareOpenSQL opens the transaction in which prepare parses: the
// schema where names resolve ($1) and a bound on lock waits ($2).
const prepareOpenSQL = "SELECT set_config('search_path', $1, true), set_config('lock_timeout', $2, true)"

// prepare prepares Gatehouse's fixed statements sqls on conn, each named
// by its text, once per connection (remembered in the connection's custom
// data), unless the database is behind a transaction pooler, where a
// prepared statement would not follow the connection. A batch sent on
// conn then runs them prepared (pgx looks batch statements up by text),
// parsed and planned once per connection rather than per call. Only
// statements whose text is the same for every tenant are prepared here, so
// their number per connection stays fixed (each tenant's own statements go
// through the bounded caches of prepared.go); they name tables through
// search_path, and schema is one where those names resolve while they are
// prepared (in a transaction of their own). PostgreSQL plans a prepared
// statement again when search_path has changed since (PostgreSQL
// documentation, PREPARE).
func (db *DB) prepare(ctx context.Context, conn *pgx.Conn, schema string, sqls ...string) error {
	if db.pooled {
		return nil
	}
	data := conn.PgConn().CustomData()
	var missing []string
	for _, sql := range sqls {
		if data[preparedKey+sql] == nil {
			missing = append(missing, sql)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// Parsing locks the tables named: no longer a wait than the
		// control lanes' audit writes (audit_busy.go).
		if _, err := tx.Exec(ctx, prepareOpenSQL, pgx.Identifier{schema}.Sanitize(), auditLockWaitSQL); err != nil {
			return err
		}
		for _, sql := range missing {
			if _, err := conn.Prepare(ctx, sql, sql); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("preparing statements: %w", err)
	}
	for _, sql := range missing {
		data[preparedKey+sql] = true
	}
	return nil
}

// preparedKey prefixes the statements prepare has prepared in a
// connection's custom data.
const preparedKey = "gatehouse.prepared:"
