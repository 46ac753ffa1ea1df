package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// The audit intake: where calls' records are committed first.
//
// The group commit ([DB.WriteAuditEntries]) writes each flush's records,
// whatever their tenants, into one control-schema table,
// gatehouse.audit_intake, with one INSERT. Writing them into each tenant's
// own audit_log cost a statement per tenant in every flush, and with it
// the table's and its four indexes' locks, a plan and their pages: at
// calls spread over 2,000 of 10,000 tenants that was most of PostgreSQL's
// CPU per call, and what kept their throughput below 0.9× of calls over
// 10 tenants (issue 17; bench/README.md, "The audit intake").
//
// The chain passes ([DB.ChainAuditTenants], [DB.ChainAudit]) take a
// tenant's intake rows (DELETE … RETURNING, up to their batch, oldest
// first, each given an id from the audit log's own sequence) and insert
// them into its audit_log already chained, after the log's unchained
// records, in the same transaction: one INSERT, no UPDATE. A record is
// therefore in exactly one of the two tables at any moment, and in its
// tenant's audit_log within a chain pass of its write (chainDelay, a few
// seconds).
//
// Readers of a tenant's audit log (read_audit_log, get_usage, the console's
// audit and usage pages, `gatehouse audit tail`, the tenant export) call
// [DB.SettleAudit] first, which moves the tenant's intake rows into its
// audit_log unchained (no key is needed), so that they read every record
// committed before, as they did when records went straight to audit_log.
// The chainer then chains them as it chains any unchained record.
// [DB.VerifyAudit] counts intake rows as pending. The start-up pass and
// the sweep list tenants with intake rows along with the marked ones
// ([DB.TenantsWithUnchainedAudit]); a tenant's deletion removes its rows.
//
// Moves take the tenant's chain lock (the advisory lock of chainLockSQL),
// so a move and a chain pass of one tenant never interleave, on any
// replica. Ids are given at the move: a record written straight into
// audit_log meanwhile (the one-by-one fallback below, an operator's
// action) may have a lower id than an intake record written before it.
// The chain's order is its own (chain_seq), and each record keeps its
// time (at, set at the intake's INSERT).
//
// When the intake's INSERT fails the records go the old way, straight into
// their tenants' audit logs (writeAuditPart), so nothing is lost to a
// problem of the intake alone: a lock held on it (its INSERT waits at most
// auditLockWait, as a call's record does, and the intake is then skipped
// for intakeSkip), a record it refuses (one by one, reduced if need be). A
// tenant's locked audit_log no longer refuses its calls: their records
// wait in the intake until the lock is gone.

// intakeInsertSQL writes a flush's records into the intake, from one array
// per column, and returns their times in the arrays' order.
const intakeInsertSQL = `INSERT INTO gatehouse.audit_intake (tenant_id, request_id, decision, tool, subject, email, provider,
	api_key_id, client_ip, user_agent, reason, args_digest, via, count)
	SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
		$9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::int[])
	RETURNING at`

// intakeSkip is how long the group commit writes straight into the
// tenants' audit logs after the intake's INSERT ran out of its lock wait:
// a lock on the intake (VACUUM FULL, an ALTER) would otherwise cost every
// flush auditLockWait.
const intakeSkip = time.Second

// writeIntake commits entries (a lane's part of a flush) into the intake
// in one implicit transaction on a connection of lane, and sets each
// record's At. Their ID stays 0: it is given when the record moves into
// its tenant's audit log. On error nothing was written.
func (db *DB) writeIntake(ctx context.Context, entries []AuditEntry, lane int) error {
	n := len(entries)
	ids := make([]string, n)
	cols := make([][]string, 12)
	for i := range cols {
		cols[i] = make([]string, n)
	}
	counts := make([]int32, n)
	for j, e := range entries {
		r := e.Rec
		r.clean()
		ids[j] = e.Tenant.ID
		for i, v := range []string{r.RequestID, r.Decision, r.Tool, r.Subject, r.Email, r.Provider, r.APIKeyID,
			r.ClientIP, r.UserAgent, r.Reason, r.ArgsDigest, r.Via} {
			cols[i][j] = v
		}
		counts[j] = int32(max(r.Count, 1))
	}
	args := make([]any, 0, 14)
	args = append(args, ids)
	for _, c := range cols {
		args = append(args, c)
	}
	args = append(args, counts)

	// No tenant's relations are touched: the connection gathers no
	// tenant's caches (ControlConnMaxTenants).
	conn, release, err := db.ctl.acquire(ctx, lane, callWork, ids[0])
	if err != nil {
		return err
	}
	defer release()
	if err := db.prepare(ctx, conn.Conn(), "gatehouse", intakeInsertSQL); err != nil {
		return err
	}
	b := &pgx.Batch{}
	b.Queue(lockWaitSQL, auditLockWaitSQL) // see audit_busy.go
	k := 0
	b.Queue(intakeInsertSQL, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			if k >= n {
				return errors.New("audit intake: more rows returned than inserted")
			}
			if err := rows.Scan(&entries[k].Rec.At); err != nil {
				return err
			}
			k++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if k != n {
			return fmt.Errorf("audit intake: %d rows returned for %d records", k, n)
		}
		return nil
	})
	// As insertAuditBatch: the end of ctx cancels the statement in
	// PostgreSQL and the answer is read, so an error means nothing was
	// written.
	cctx, stop := commitContext(ctx, conn.Conn())
	err = conn.SendBatch(cctx, b).Close()
	if err = cancelled(stop(), err); err != nil {
		for _, e := range entries {
			e.Rec.At = time.Time{}
		}
		return fmt.Errorf("writing %d audit records into the intake: %w", n, err)
	}
	for _, e := range entries {
		e.Rec.ID = 0
	}
	return nil
}

// intakeOpen reports whether the group commit may write into the intake
// now (see intakeSkip).
func (db *DB) intakeOpen() bool {
	return time.Now().UnixNano() >= db.intakeSkipUntil.Load()
}

// intakeTakeSQL takes up to $3 intake rows of each of the tenants $1 (in
// the order of their ids), oldest first, each with a fresh id from its
// tenant's audit log's id sequence ($2: the sequences' qualified names).
// It answers with each row's tenant (its position in $1, from 1) and seq,
// the id, and the record's columns as scanMoved reads them.
const intakeTakeSQL = `DELETE FROM gatehouse.audit_intake i USING (
		SELECT u.id, u.idx, u.sq, x.seq FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS u(id, sq, idx)
		CROSS JOIN LATERAL (SELECT seq FROM gatehouse.audit_intake WHERE tenant_id = u.id AND refused IS NULL ORDER BY seq LIMIT $3) x
	) s
	WHERE i.tenant_id = s.id AND i.seq = s.seq
	RETURNING s.idx, i.seq, nextval(s.sq::regclass), i.at, i.request_id, i.decision, i.tool, i.subject, i.email, i.provider,
		i.api_key_id, i.client_ip, i.user_agent, i.reason, i.args_digest, i.count, i.via`

// intakeMoveSQL inserts records taken from the intake, with their ids and
// links, into schema's audit log (a name Gatehouse gave, checked by the
// caller). $1 ids, $2 times, $3–$13 the texts request_id … args_digest,
// $14 counts, $15 via, $16 the key's id, $17 chain_seqs, $18 prev_hashes,
// $19 hashes.
func intakeMoveSQL(schema string) string {
	return "INSERT INTO " + pgx.Identifier{schema, "audit_log"}.Sanitize() + ` (id, at, request_id, decision, tool, subject, email,
	provider, api_key_id, client_ip, user_agent, reason, args_digest, count, via, chain_seq, key_id, prev_hash, hash) OVERRIDING SYSTEM VALUE
	SELECT u.id, u.at, u.r, u.d, u.t, u.s, u.e, u.p, u.k, u.ip, u.ua, u.re, u.ad, u.c, u.v, u.cs, $16::text, u.ph, u.h
	FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
		$10::text[], $11::text[], $12::text[], $13::text[], $14::int[], $15::text[], $17::bigint[], $18::bytea[], $19::bytea[])
		AS u(id, at, r, d, t, s, e, p, k, ip, ua, re, ad, c, v, cs, ph, h)`
}

// queueIntakeTake queues on b the take of up to limit intake rows of each
// tenant of ts (in tenant id order, as their chain locks were taken):
// moved[i] gets tenant i's records, oldest first, with their new ids in
// the same order.
func queueIntakeTake(b *pgx.Batch, ts []*tenancy.Tenant, limit int, moved [][]*AuditRecord) {
	ids, seqs := make([]string, len(ts)), make([]string, len(ts))
	for i, t := range ts {
		ids[i], seqs[i] = t.ID, pgx.Identifier{t.Schema, "audit_log_id_seq"}.Sanitize()
	}
	type taken struct {
		seq int64
		r   *AuditRecord
	}
	b.Queue(intakeTakeSQL, ids, seqs, limit).Query(func(rows pgx.Rows) error {
		per := make([][]taken, len(ts))
		newIDs := make([][]int64, len(ts))
		for rows.Next() {
			var idx int64
			m := taken{r: &AuditRecord{}}
			r := m.r
			var id int64
			if err := rows.Scan(&idx, &m.seq, &id, &r.At, &r.RequestID, &r.Decision, &r.Tool, &r.Subject, &r.Email, &r.Provider,
				&r.APIKeyID, &r.ClientIP, &r.UserAgent, &r.Reason, &r.ArgsDigest, &r.Count, &r.Via); err != nil {
				return err
			}
			if idx < 1 || idx > int64(len(ts)) {
				return fmt.Errorf("audit intake: tenant %d of %d", idx, len(ts))
			}
			per[idx-1] = append(per[idx-1], m)
			newIDs[idx-1] = append(newIDs[idx-1], id)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		// DELETE … RETURNING visits rows in no set order: the ids, drawn
		// as it went, are handed out again in the records' order.
		for i, ms := range per {
			slices.SortFunc(ms, func(a, b taken) int { return cmpInt64(a.seq, b.seq) })
			slices.Sort(newIDs[i])
			moved[i] = make([]*AuditRecord, len(ms))
			for k := range ms {
				ms[k].r.ID = newIDs[i][k]
				moved[i][k] = ms[k].r
			}
		}
		return nil
	})
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// queueIntakeMove links recs (taken from the intake, at least one) onto a
// chain whose head is at seq with hash prev, queues stmt (the tenant's
// intakeMoveSQL or the name of its prepared statement) inserting them on
// b, and returns the new head.
func queueIntakeMove(b *pgx.Batch, stmt string, key AuditKey, seq int64, prev []byte, recs []*AuditRecord) (int64, []byte) {
	n := len(recs)
	ids, seqs := make([]int64, n), make([]int64, n)
	ats := make([]time.Time, n)
	cols := make([][]string, 12)
	for i := range cols {
		cols[i] = make([]string, n)
	}
	counts := make([]int32, n)
	prevs, hashes := make([][]byte, n), make([][]byte, n)
	for j, r := range recs {
		seq++
		h := key.link(prev, seq, r)
		ids[j], seqs[j], ats[j], prevs[j], hashes[j] = r.ID, seq, r.At, prev, h
		prev = h
		for i, v := range []string{r.RequestID, r.Decision, r.Tool, r.Subject, r.Email, r.Provider, r.APIKeyID,
			r.ClientIP, r.UserAgent, r.Reason, r.ArgsDigest, r.Via} {
			cols[i][j] = v
		}
		counts[j] = int32(r.Count)
	}
	args := make([]any, 0, 19)
	args = append(args, ids, ats)
	for i := range 11 {
		args = append(args, cols[i])
	}
	args = append(args, counts, cols[11], key.ID, seqs, prevs, hashes)
	b.Queue(stmt, args...)
	return seq, prev
}

// settleSQL moves every intake row of tenant $1 into the audit log table
// (unchained, ids in the rows' order) and, if it moved any, marks the
// tenant as having unchained records (audit_pending.go).
func settleSQL(table string) string {
	return `WITH taken AS (DELETE FROM gatehouse.audit_intake WHERE tenant_id = $1 AND refused IS NULL
			RETURNING seq, at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip, user_agent,
				reason, args_digest, via, count),
		moved AS (INSERT INTO ` + table + ` (at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip,
				user_agent, reason, args_digest, via, count)
			SELECT at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip, user_agent,
				reason, args_digest, via, count FROM taken ORDER BY seq
			RETURNING 1)
		INSERT INTO gatehouse.audit_pending (tenant_id) SELECT $1 WHERE EXISTS (SELECT 1 FROM moved)
		ON CONFLICT (tenant_id) DO UPDATE SET marked_at = now()`
}

// SettleAudit moves t's records still in the audit intake into its audit
// log, unchained, so that a read of the log that follows sees every record
// committed before it (see the intake's design above). The chainer chains
// them later, as any unchained record. One round trip when t has nothing
// in the intake; else one more, a transaction that takes t's chain lock
// and waits at most auditLockWait for any other lock.
//
// Errors: one that wraps [ErrAuditLogBusy] (a transient outage: 503 with
// Retry-After) when t's audit log or chain is locked by another session;
// the database's, unchanged, otherwise. On error nothing moved.
func (db *DB) SettleAudit(ctx context.Context, t *tenancy.Tenant) error {
	if !opaqueName.MatchString(t.Schema) {
		return fmt.Errorf("tenant %s: refusing unexpected schema name", t.Key)
	}
	var waiting bool
	if err := db.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM gatehouse.audit_intake WHERE tenant_id = $1 AND refused IS NULL)", t.ID).Scan(&waiting); err != nil {
		return fmt.Errorf("reading the audit intake of %s: %w", t.Key, err)
	}
	if !waiting {
		return nil
	}
	seed, err := db.lockSeed(ctx)
	if err != nil {
		return err
	}
	// Through the pool, not a lane: a read's work, which may wait for
	// the tenant's chain pass; its lanes are the calls' records'.
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(lockWaitSQL, auditLockWaitSQL)
		b.Queue(chainLockSQL, t.ID, seed)
		b.Queue(settleSQL(pgx.Identifier{t.Schema, "audit_log"}.Sanitize()), t.ID)
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil && !Unavailable(err) && !lockTimedOut(err) && ctx.Err() == nil {
		// A record the log refuses: one at a time, reduced or set aside
		// (drainIntake).
		_, err = db.drainIntake(ctx, t, math.MaxInt)
	}
	if err != nil {
		return fmt.Errorf("moving the audit records of %s out of the intake: %w", t.Key, lockedAs(ErrAuditLogBusy, err))
	}
	return nil
}

// intakeCountsSQL counts a tenant's records in the intake ($1: its id):
// those waiting to be moved, and those its audit log refused.
const intakeCountsSQL = "SELECT count(*) FILTER (WHERE refused IS NULL), count(*) FILTER (WHERE refused IS NOT NULL) FROM gatehouse.audit_intake WHERE tenant_id = $1"

// intakeNextSQL reads tenant $1's oldest intake row not refused, locked.
const intakeNextSQL = `SELECT seq, at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip, user_agent,
		reason, args_digest, count, via
	FROM gatehouse.audit_intake WHERE tenant_id = $1 AND refused IS NULL ORDER BY seq LIMIT 1 FOR UPDATE`

// intakeInsertOneSQL inserts one record taken from the intake into the
// audit log table, unchained, with its time; via names its via column too
// (a reduced record has none, so that it fits a log from before it).
func intakeInsertOneSQL(table string, via bool) string {
	if !via {
		return `INSERT INTO ` + table + ` (at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip,
		user_agent, reason, args_digest, count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`
	}
	return `INSERT INTO ` + table + ` (at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip,
		user_agent, reason, args_digest, count, via) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`
}

// drainIntake moves up to limit of t's intake records into its audit log
// one at a time, oldest first, each in a transaction of its own, unchained
// (the chain pass that follows links them); a record the log refuses goes
// in its reduced form (see reduced), as on the group commit's one-by-one
// way, and one refused in both forms stays in the intake, set aside with
// the reason (its refused column: no longer moved, reported by
// [DB.VerifyAudit]) and logged. It runs after a chain pass or a settle of
// t failed for another reason than a lock or an outage, so that a record
// its log refuses (a constraint of its own) never holds up the tenant's
// other records for good. It returns how many records it moved or set
// aside; the error is the database's (the record then stays as it was).
func (db *DB) drainIntake(ctx context.Context, t *tenancy.Tenant, limit int) (done int, err error) {
	if !opaqueName.MatchString(t.Schema) {
		return 0, fmt.Errorf("tenant %s: refusing unexpected schema name", t.Key)
	}
	seed, err := db.lockSeed(ctx)
	if err != nil {
		return 0, err
	}
	table := pgx.Identifier{t.Schema, "audit_log"}.Sanitize()
	for done < limit {
		last := false
		err := beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue(lockWaitSQL, auditLockWaitSQL)
			b.Queue(chainLockSQL, t.ID, seed)
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return err
			}
			var seq int64
			var r AuditRecord
			err := tx.QueryRow(ctx, intakeNextSQL, t.ID).Scan(&seq, &r.At, &r.RequestID, &r.Decision, &r.Tool, &r.Subject, &r.Email,
				&r.Provider, &r.APIKeyID, &r.ClientIP, &r.UserAgent, &r.Reason, &r.ArgsDigest, &r.Count, &r.Via)
			if errors.Is(err, pgx.ErrNoRows) {
				last = true
				return nil
			} else if err != nil {
				return err
			}
			store := func(r *AuditRecord) error {
				sp, err := tx.Begin(ctx) // a savepoint: a refusal undoes the insert alone
				if err != nil {
					return err
				}
				args := []any{r.At, r.RequestID, r.Decision, r.Tool, r.Subject, r.Email, r.Provider, r.APIKeyID,
					r.ClientIP, r.UserAgent, r.Reason, r.ArgsDigest, r.Count}
				if r.Via != "" {
					args = append(args, r.Via)
				}
				if _, err := sp.Exec(ctx, intakeInsertOneSQL(table, r.Via != ""), args...); err != nil {
					_ = sp.Rollback(ctx)
					return err
				}
				return sp.Commit(ctx)
			}
			err = store(&r)
			if err != nil && refusal(err) {
				red := r.reduced(err)
				red.At = r.At
				if rerr := store(red); rerr == nil {
					db.log.Warn("an audit record was refused by its tenant's audit log and stored reduced",
						"tenant", t.Key, "request_id", red.RequestID, "error", err)
					err = nil
				} else if refusal(rerr) {
					why := fmt.Sprintf("%v (reduced form: %v)", err, rerr)
					db.log.Error("an audit record was refused by its tenant's audit log in both its forms: kept in gatehouse.audit_intake",
						"tenant", t.Key, "request_id", red.RequestID, "seq", seq, "error", why)
					_, err = tx.Exec(ctx, "UPDATE gatehouse.audit_intake SET refused = $3 WHERE tenant_id = $1 AND seq = $2", t.ID, seq, why)
					return err
				} else {
					err = rerr
				}
			}
			if err != nil {
				return err
			}
			b = &pgx.Batch{}
			b.Queue("DELETE FROM gatehouse.audit_intake WHERE tenant_id = $1 AND seq = $2", t.ID, seq)
			b.Queue(`INSERT INTO gatehouse.audit_pending (tenant_id) VALUES ($1)
				ON CONFLICT (tenant_id) DO UPDATE SET marked_at = now()`, t.ID)
			return tx.SendBatch(ctx, b).Close()
		})
		if err != nil {
			return done, fmt.Errorf("moving an audit record of %s out of the intake: %w", t.Key, lockedAs(ErrAuditLogBusy, err))
		}
		if last {
			return done, nil
		}
		done++
	}
	return done, nil
}

// refusal reports whether err is PostgreSQL refusing a statement for what
// it is or what it writes (a constraint, a type, a missing table): not a
// lock, an outage or a cancel, after which trying another form of the
// record would say nothing.
func refusal(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || Unavailable(err) || lockTimedOut(err) {
		return false
	}
	switch pgErr.Code[:2] {
	case "22", "23", "42": // data exception, integrity constraint violation, syntax error or access rule violation
		return true
	}
	return false
}
