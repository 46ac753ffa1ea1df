package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
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
// Each record gets its id as it is written, from its tenant's audit log's
// own sequence (nextval: a lock on the sequence and a page, not a table's
// and four indexes' locks, plan and pages), so ids keep the order of the
// writes whichever table a record was written into first, and readers
// list, page and match records by id as before.
//
// The chain passes ([DB.ChainAuditTenants], [DB.ChainAudit]) take a
// tenant's intake rows (DELETE … RETURNING, up to their batch, oldest
// first) and insert them into its audit_log already chained, with their
// ids, in the same transaction: one INSERT, no UPDATE. The log's own
// unchained records and the intake's are linked together in id order
// (linkByID). A record is therefore in exactly one of the two tables at
// any moment, and in its tenant's audit_log within a chain pass of its
// write (chainDelay, a few seconds).
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
// replica.
//
// When the intake's INSERT fails the records go the old way, straight into
// their tenants' audit logs (writeAuditPart), so nothing is lost to a
// problem of the intake alone: a lock held on it (its INSERT waits at most
// auditLockWait, as a call's record does, and the intake is then skipped
// for intakeSkip), a record it refuses (one by one, reduced if need be). A
// tenant's locked audit_log no longer refuses its calls: their records
// wait in the intake until the lock is gone.

// intakeInsertSQL writes a flush's records into the intake, from one array
// per column ($2: each record's audit log's id sequence, by qualified
// name), and returns their ids and times in the arrays' order (unnest
// keeps it, and INSERT … SELECT returns rows in it).
const intakeInsertSQL = `INSERT INTO gatehouse.audit_intake (tenant_id, id, request_id, decision, tool, subject, email, provider,
	api_key_id, client_ip, user_agent, reason, args_digest, via, count)
	SELECT u.t, nextval(u.sq::regclass), u.r, u.d, u.tl, u.s, u.e, u.p, u.k, u.ip, u.ua, u.re, u.ad, u.v, u.c
	FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
		$10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::int[])
		AS u(t, sq, r, d, tl, s, e, p, k, ip, ua, re, ad, v, c)
	RETURNING id, at`

// intakeSkip is how long the group commit writes straight into the
// tenants' audit logs, and the chain passes chain only the logs' own
// records, after a statement on the intake ran out of its lock wait with
// the intake locked by another session (intakeLocked): a lock on the
// intake (VACUUM FULL, an ALTER) would otherwise cost every flush and
// every pass auditLockWait, and hold up the chaining of the records the
// tools write into their logs themselves.
const intakeSkip = time.Second

// writeIntake commits entries (a flush) into the intake in one implicit
// transaction on a connection of lane, and sets each
// record's ID and At. On error nothing was written (the ids drawn are
// skipped, as a failed INSERT's are).
func (db *DB) writeIntake(ctx context.Context, entries []AuditEntry, lane int) error {
	n := len(entries)
	ids, seqs := make([]string, n), make([]string, n)
	recs := make([]*AuditRecord, n)
	for j, e := range entries {
		e.Rec.clean()
		if !opaqueName.MatchString(e.Tenant.Schema) {
			return fmt.Errorf("tenant %s: refusing unexpected schema name", e.Tenant.Key)
		}
		ids[j], seqs[j], recs[j] = e.Tenant.ID, pgx.Identifier{e.Tenant.Schema, "audit_log_id_seq"}.Sanitize(), e.Rec
	}
	cols, counts := auditArrays(recs)
	args := make([]any, 0, 15)
	args = append(args, ids, seqs)
	for _, c := range cols {
		args = append(args, c)
	}
	args = append(args, counts)

	// Of a tenant's relations only its audit log's id sequence is
	// touched: about 2 KB of the backend's catalog caches once warm
	// (measured: CacheMemoryContext 25 MB after nextval on 2,000 tenants'
	// sequences, 42 MB after 10,000), against a table's and four
	// indexes' 25–55 KB. So the tenants do not count towards
	// ControlConnMaxTenants, which would have the connection that writes
	// every tenant's records replaced over and over.
	conn, release, err := db.ctl.acquire(ctx, lane, callWork, ids[0])
	if err != nil {
		return err
	}
	defer release()
	// Both prepared: the lock wait's set_config, planned at every flush,
	// took about 7 µs a call against the INSERT's 45 (pg_stat_statements,
	// bench/tenants -statements, 2026-12-02).
	if err := db.prepare(ctx, conn.Conn(), "gatehouse", lockWaitSQL, intakeInsertSQL); err != nil {
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
			if err := rows.Scan(&entries[k].Rec.ID, &entries[k].Rec.At); err != nil {
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
			e.Rec.ID, e.Rec.At = 0, time.Time{}
		}
		return fmt.Errorf("writing %d audit records into the intake: %w", n, err)
	}
	return nil
}

// intakeOpen reports whether the group commit may write into the intake
// now (see intakeSkip).
func (db *DB) intakeOpen() bool {
	return !db.noIntake && db.intakeFree()
}

// intakeFree reports whether the intake has not been found locked by
// another session in the last intakeSkip: the chain passes take from it
// then (even with Options.NoAuditIntake, which only stops the writes).
func (db *DB) intakeFree() bool {
	return time.Now().UnixNano() >= db.intakeSkipUntil.Load()
}

// skipIntake has the group commit write straight into the tenants' logs,
// and the chain passes leave the intake alone, for intakeSkip.
func (db *DB) skipIntake() {
	db.intakeSkipUntil.Store(time.Now().Add(intakeSkip).UnixNano())
}

// intakeTakeSQL takes up to $2 intake rows of each of the tenants $1 (in
// the order of their ids), oldest first. It answers with each row's tenant
// (its position in $1, from 1) and the record's columns.
const intakeTakeSQL = `DELETE FROM gatehouse.audit_intake i USING (
		SELECT u.tid, u.idx, x.id FROM unnest($1::uuid[]) WITH ORDINALITY AS u(tid, idx)
		CROSS JOIN LATERAL (SELECT id FROM gatehouse.audit_intake WHERE tenant_id = u.tid AND refused IS NULL ORDER BY id LIMIT $2) x
	) s
	WHERE i.tenant_id = s.tid AND i.id = s.id
	RETURNING s.idx, i.id, i.at, i.request_id, i.decision, i.tool, i.subject, i.email, i.provider,
		i.api_key_id, i.client_ip, i.user_agent, i.reason, i.args_digest, i.count, i.via`

// intakeMoveSQL inserts records taken from the intake, with their ids and
// links (a NULL chain_seq: unchained), into schema's audit log (a name
// Gatehouse gave, checked by the caller). $1 ids, $2 times, $3–$13 the
// texts request_id … args_digest, $14 counts, $15 via, $16 the key's id,
// $17 chain_seqs, $18 prev_hashes, $19 hashes.
func intakeMoveSQL(schema string) string {
	return "INSERT INTO " + pgx.Identifier{schema, "audit_log"}.Sanitize() + ` (id, at, request_id, decision, tool, subject, email,
	provider, api_key_id, client_ip, user_agent, reason, args_digest, count, via, chain_seq, key_id, prev_hash, hash) OVERRIDING SYSTEM VALUE
	SELECT u.id, u.at, u.r, u.d, u.t, u.s, u.e, u.p, u.k, u.ip, u.ua, u.re, u.ad, u.c, u.v, u.cs,
		CASE WHEN u.cs IS NOT NULL THEN $16::text END, u.ph, u.h
	FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
		$10::text[], $11::text[], $12::text[], $13::text[], $14::int[], $15::text[], $17::bigint[], $18::bytea[], $19::bytea[])
		AS u(id, at, r, d, t, s, e, p, k, ip, ua, re, ad, c, v, cs, ph, h)`
}

// queueIntakeTake queues on b the take of up to limit intake rows of each
// tenant of ts (in tenant id order, as their chain locks were taken):
// moved[i] gets tenant i's records, in id order.
func queueIntakeTake(b *pgx.Batch, ts []*tenancy.Tenant, limit int, moved [][]*AuditRecord) {
	ids := make([]string, len(ts))
	for i, t := range ts {
		ids[i] = t.ID
	}
	b.Queue(intakeTakeSQL, ids, limit).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var idx int64
			r := &AuditRecord{}
			if err := rows.Scan(&idx, &r.ID, &r.At, &r.RequestID, &r.Decision, &r.Tool, &r.Subject, &r.Email, &r.Provider,
				&r.APIKeyID, &r.ClientIP, &r.UserAgent, &r.Reason, &r.ArgsDigest, &r.Count, &r.Via); err != nil {
				return err
			}
			if idx < 1 || idx > int64(len(ts)) {
				return fmt.Errorf("audit intake: tenant %d of %d", idx, len(ts))
			}
			moved[idx-1] = append(moved[idx-1], r)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		// DELETE … RETURNING answers in no set order.
		for _, ms := range moved {
			slices.SortFunc(ms, func(a, b *AuditRecord) int { return cmp.Compare(a.ID, b.ID) })
		}
		return nil
	})
}

// chainable returns how many of recs (a log's unchained records) and of
// moved (taken from the intake), each in id order and read up to limit, a
// pass may link so that the chain keeps id order: all of both, unless a
// list came back full (more may follow it), in which case those up to the
// lowest last id of the full lists.
func chainable(recs, moved []*AuditRecord, limit int) (nRecs, nMoved int) {
	cut := int64(math.MaxInt64)
	for _, l := range [][]*AuditRecord{recs, moved} {
		if len(l) > 0 && len(l) >= limit {
			cut = min(cut, l[len(l)-1].ID)
		}
	}
	for nRecs < len(recs) && recs[nRecs].ID <= cut {
		nRecs++
	}
	for nMoved < len(moved) && moved[nMoved].ID <= cut {
		nMoved++
	}
	return nRecs, nMoved
}

// queueIntakeMove queues stmt (the tenant's intakeMoveSQL or the name of
// its prepared statement) on b, inserting recs (taken from the intake, at
// least one): the first len(links) with their links, the others unchained
// (a later pass links them, in id order with the log's; see chainable), t
// then marked as having unchained records (audit_pending.go).
func queueIntakeMove(b *pgx.Batch, stmt string, t *tenancy.Tenant, key AuditKey, recs []*AuditRecord, links []chainLink) {
	n := len(recs)
	ids, seqs := make([]int64, n), make([]*int64, n)
	ats := make([]time.Time, n)
	prevs, hashes := make([][]byte, n), make([][]byte, n)
	for j, r := range recs {
		ids[j], ats[j] = r.ID, r.At
		if j < len(links) {
			seqs[j], prevs[j], hashes[j] = &links[j].seq, links[j].prev, links[j].hash
		}
	}
	cols, counts := auditArrays(recs)
	args := make([]any, 0, 19)
	args = append(args, ids, ats)
	for i := range 11 {
		args = append(args, cols[i])
	}
	args = append(args, counts, cols[11], key.ID, seqs, prevs, hashes)
	b.Queue(stmt, args...)
	if len(links) < n {
		b.Queue(markPendingSQL, t.ID)
	}
}

// markPendingSQL marks tenant $1 as having unchained records in its audit
// log (audit_pending.go).
const markPendingSQL = `INSERT INTO gatehouse.audit_pending (tenant_id) VALUES ($1)
	ON CONFLICT (tenant_id) DO UPDATE SET marked_at = now()`

// settleSQL moves every intake row of tenant $1 into the audit log table
// (unchained, ids in the rows' order) and, if it moved any, marks the
// tenant as having unchained records (audit_pending.go).
func settleSQL(table string) string {
	return `WITH taken AS (DELETE FROM gatehouse.audit_intake WHERE tenant_id = $1 AND refused IS NULL
			RETURNING id, at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip, user_agent,
				reason, args_digest, via, count),
		moved AS (INSERT INTO ` + table + ` (id, at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip,
				user_agent, reason, args_digest, via, count) OVERRIDING SYSTEM VALUE
			SELECT id, at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip, user_agent,
				reason, args_digest, via, count FROM taken
			RETURNING 1)
		INSERT INTO gatehouse.audit_pending (tenant_id) SELECT $1 WHERE EXISTS (SELECT 1 FROM moved)
		ON CONFLICT (tenant_id) DO UPDATE SET marked_at = now()`
}

// SettleAudit moves t's records still in the audit intake into its audit
// log, unchained, so that a read of the log that follows sees every record
// committed before it (see the intake's design above). The chainer chains
// them later, as any unchained record. One round trip when t has nothing
// in the intake; else one more, a transaction that takes t's chain lock
// (waiting for it up to settleLockWait: the tenant's chain passes and
// other readers' settles hold it briefly) and waits at most auditLockWait
// for any other lock.
//
// Errors: one that wraps [ErrAuditLogBusy] (a transient outage: 503 with
// Retry-After) when t's audit log or chain is locked by another session;
// the database's, unchanged, otherwise. On error nothing moved.
func (db *DB) SettleAudit(ctx context.Context, t *tenancy.Tenant) error {
	if !opaqueName.MatchString(t.Schema) {
		return fmt.Errorf("tenant %s: refusing unexpected schema name", t.Key)
	}
	seed, err := db.lockSeed(ctx)
	if err != nil {
		return err
	}
	// On a connection of the tenant's own (the tenant-work pool, within
	// the call's admission): a settle that waits for a lock holds up none
	// of the control pool's work (credentials, rate limits, readiness),
	// which every tenant shares.
	conn, release, err := db.work.Acquire(ctx, t.ID)
	if err != nil {
		return fmt.Errorf("moving the audit records of %s out of the intake: %w", t.Key, err)
	}
	defer release()
	var waiting bool
	b := &pgx.Batch{} // one implicit transaction: the lock wait bounds the look too
	b.Queue(lockWaitSQL, auditLockWaitSQL)
	b.Queue("SELECT EXISTS (SELECT 1 FROM gatehouse.audit_intake WHERE tenant_id = $1 AND refused IS NULL)", t.ID).QueryRow(func(row pgx.Row) error {
		return row.Scan(&waiting)
	})
	err = conn.SendBatch(ctx, b).Close()
	if err == nil && waiting {
		err = pgx.BeginFunc(ctx, conn.Conn(), func(tx pgx.Tx) error {
			// The chain lock is held by the tenant's chain passes and
			// other readers' settles, each a short transaction (whose own
			// lock waits are bounded): waited for up to settleLockWait,
			// so that readers of a busy tenant arriving together take
			// turns instead of being refused. Any other lock: as a
			// call's record waits.
			b := &pgx.Batch{}
			b.Queue(lockWaitSQL, settleLockWaitSQL)
			b.Queue(chainLockSQL, t.ID, seed)
			b.Queue(lockWaitSQL, auditLockWaitSQL)
			b.Queue(settleSQL(pgx.Identifier{t.Schema, "audit_log"}.Sanitize()), t.ID)
			return tx.SendBatch(ctx, b).Close()
		})
		if err != nil && !Unavailable(err) && !lockTimedOut(err) && ctx.Err() == nil {
			// A record the log refuses: one at a time, reduced or set
			// aside (drainIntake).
			_, err = db.drainIntake(ctx, t, math.MaxInt)
		}
	}
	if err != nil {
		return fmt.Errorf("moving the audit records of %s out of the intake: %w", t.Key, lockedAs(ErrAuditLogBusy, err))
	}
	return nil
}

// settleLockWait bounds a settle's wait for its tenant's chain lock.
const settleLockWait = 5 * time.Second

var settleLockWaitSQL = strconv.FormatInt(settleLockWait.Milliseconds(), 10) + "ms"

// intakeLocked reports whether another session holds a lock on the intake
// that its writers and takers would wait for (VACUUM FULL, an ALTER, a
// LOCK TABLE): asked after a statement touching the intake ran out of its
// lock wait, which may have been for another lock (a tenant's id sequence
// held by its deletion, a tenant's audit log). One short transaction that
// does not wait.
func (db *DB) intakeLocked(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	err := pgx.BeginFunc(cctx, db.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(cctx, "LOCK TABLE gatehouse.audit_intake IN ROW EXCLUSIVE MODE NOWAIT")
		return err
	})
	return lockTimedOut(err)
}

// intakeCountsSQL counts a tenant's records in the intake ($1: its id):
// those waiting to be moved, and those its audit log refused.
const intakeCountsSQL = "SELECT count(*) FILTER (WHERE refused IS NULL), count(*) FILTER (WHERE refused IS NOT NULL) FROM gatehouse.audit_intake WHERE tenant_id = $1"

// intakeNextSQL reads tenant $1's oldest intake row not refused, locked.
const intakeNextSQL = `SELECT id, at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip, user_agent,
		reason, args_digest, count, via
	FROM gatehouse.audit_intake WHERE tenant_id = $1 AND refused IS NULL ORDER BY id LIMIT 1 FOR UPDATE`

// intakeInsertOneSQL inserts one record taken from the intake into the
// audit log table, unchained, with its id and time; via names its via
// column too (a reduced record has none, so that it fits a log from
// before it).
func intakeInsertOneSQL(table string, via bool) string {
	if !via {
		return `INSERT INTO ` + table + ` (id, at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip,
		user_agent, reason, args_digest, count) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`
	}
	return `INSERT INTO ` + table + ` (id, at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip,
		user_agent, reason, args_digest, count, via) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`
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
			var r AuditRecord
			err := tx.QueryRow(ctx, intakeNextSQL, t.ID).Scan(&r.ID, &r.At, &r.RequestID, &r.Decision, &r.Tool, &r.Subject, &r.Email,
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
				args := []any{r.ID, r.At, r.RequestID, r.Decision, r.Tool, r.Subject, r.Email, r.Provider, r.APIKeyID,
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
				red.ID, red.At = r.ID, r.At
				if rerr := store(red); rerr == nil {
					db.log.Warn("an audit record was refused by its tenant's audit log and stored reduced",
						"tenant", t.Key, "request_id", red.RequestID, "error", err)
					err = nil
				} else if refusal(rerr) {
					why := fmt.Sprintf("%v (reduced form: %v)", err, rerr)
					db.log.Error("an audit record was refused by its tenant's audit log in both its forms: kept in gatehouse.audit_intake",
						"tenant", t.Key, "request_id", red.RequestID, "id", r.ID, "error", why)
					_, err = tx.Exec(ctx, "UPDATE gatehouse.audit_intake SET refused = $3 WHERE tenant_id = $1 AND id = $2", t.ID, r.ID, why)
					return err
				} else {
					err = rerr
				}
			}
			if err != nil {
				return err
			}
			b = &pgx.Batch{}
			b.Queue("DELETE FROM gatehouse.audit_intake WHERE tenant_id = $1 AND id = $2", t.ID, r.ID)
			b.Queue(markPendingSQL, t.ID)
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
