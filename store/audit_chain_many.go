package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// ChainLimits bounds the transactions of [DB.ChainAuditTenants]. Zero
// fields take the defaults.
type ChainLimits struct {
	// Tenants is the most tenants chained in one transaction (default
	// 64): it holds about six locks per tenant until its commit (the
	// advisory lock, the audit log and its four indexes) in PostgreSQL's
	// lock table, which pg_dump needs too (max_locks_per_transaction ×
	// max_connections slots: 6,400 by default).
	Tenants int
	// Records is the most records read in one transaction (default
	// 2,000) from the audit logs, and as many from the audit intake: each
	// tenant of a transaction of n tenants is read up to max(1,
	// Records/n) records of each (and never more than the batch passed).
	Records int
}

// Default bounds of one chaining transaction (see [ChainLimits]).
const (
	DefaultChainTenants = 64
	DefaultChainRecords = 2000
)

// ChainResult is what [DB.ChainAuditTenants] did for one tenant.
type ChainResult struct {
	Tenant *tenancy.Tenant
	N      int   // records chained
	More   bool  // N reached the tenant's limit in its transaction: records may be left
	Err    error // the tenant's chaining failed (alone, after its group failed)
	// Group is which of the call's transactions chained the tenant (0,
	// 1, …), or -1 when the tenant was chained alone because its group's
	// transaction failed.
	Group int
}

// ChainAuditTenants links the unchained audit records of several tenants
// onto their chains as [DB.ChainAudit] does for one, but many tenants in
// one transaction: at many quiet tenants (calls spread over 2,000 tenants
// leave ~600 of them with about one new record each second), a
// transaction per tenant cost a commit (a WAL flush), two round trips and
// the statements' overhead for each record.
//
// The tenants are split by control lane (each lane's on its own
// connection: see Options.ControlLanes), then into transactions of at most
// limits.Tenants tenants, in tenant id order; each is two pipelined round
// trips, three when any of its tenants is marked as possibly having
// unchained records in its log: BEGIN, the advisory lock of every tenant
// (the lock [DB.ChainAudit] takes, in tenant id order, so that chainers of
// several replicas over overlapping sets of tenants wait for each other
// instead of deadlocking), their heads, their pending marks and their
// ages, and up to max(1, limits.Records/n) (at most batch) of each
// tenant's records waiting in the audit intake (audit_intake.go); then the
// marked tenants' unchained records, as many each; then each tenant's
// UPDATE and INSERT of the intake's records, already linked, the heads,
// the removal of stale pending marks of the tenants left with nothing to
// chain, and COMMIT. If a transaction fails,
// its tenants are chained one at a time ([DB.ChainAudit]'s path), so one
// broken tenant never stops the others' chaining; a tenant that fails
// alone too has its error in its result.
//
// The results are in the order of ts. A result with More set read as many
// records as its limit allowed: call again for those tenants.
func (db *DB) ChainAuditTenants(ctx context.Context, ts []*tenancy.Tenant, key AuditKey, batch int, limits ChainLimits) []ChainResult {
	if limits.Tenants <= 0 {
		limits.Tenants = DefaultChainTenants
	}
	if limits.Records <= 0 {
		limits.Records = DefaultChainRecords
	}
	batch = max(batch, 1)
	// One result per distinct tenant, in tenant id order (the locks'
	// order); a tenant named twice in ts is chained once.
	byID := make(map[string]*ChainResult, len(ts))
	var uniq []*ChainResult
	for _, t := range ts {
		if byID[t.ID] == nil {
			r := &ChainResult{Tenant: t}
			byID[t.ID] = r
			uniq = append(uniq, r)
		}
	}
	ids := make([]string, len(uniq))
	for i, r := range uniq {
		ids[i] = r.Tenant.ID
	}
	lanes := db.ctl.lanes(ids)
	laneOf := make(map[*ChainResult]int, len(uniq))
	for i, r := range uniq {
		laneOf[r] = lanes[i]
	}
	// By lane, then by id: each transaction's tenants are of one lane and
	// locked in id order.
	slices.SortFunc(uniq, func(a, b *ChainResult) int {
		if c := laneOf[a] - laneOf[b]; c != 0 {
			return c
		}
		return strings.Compare(a.Tenant.ID, b.Tenant.ID)
	})
	for g := 0; len(uniq) > 0; g++ {
		lane := laneOf[uniq[0]]
		n := 1
		for n < min(limits.Tenants, len(uniq)) && laneOf[uniq[n]] == lane {
			n++
		}
		group := uniq[:n]
		uniq = uniq[n:]
		limit := min(batch, max(1, limits.Records/len(group)))
		take := db.intakeFree()
		err := db.chainGroup(ctx, group, lane, key, limit, take)
		if err != nil && take && lockTimedOut(err) && ctx.Err() == nil && db.intakeLocked(ctx) {
			// The intake locked, not a tenant's log: the logs' own
			// records are chained, the intake's wait (intakeSkip).
			db.skipIntake()
			err = db.chainGroup(ctx, group, lane, key, limit, false)
		}
		for _, r := range group {
			r.Group = g
		}
		if err == nil {
			continue
		}
		if len(group) == 1 && lockTimedOut(err) {
			// Alone and locked: the one-at-a-time path would wait for
			// the same lock again (backgroundLockWait).
			group[0].Group = -1
			group[0].Err = fmt.Errorf("chaining the audit log of %s: %w", group[0].Tenant.Key, lockedAs(ErrAuditLogBusy, err))
			continue
		}
		for _, r := range group { // one at a time, today's path
			r.Group = -1
			if cerr := ctx.Err(); cerr != nil {
				r.Err = fmt.Errorf("chaining the audit log of %s: %w", r.Tenant.Key, errors.Join(err, cerr))
				continue
			}
			// (Which moves a record its log refuses one at a time.)
			r.N, r.Err = db.ChainAudit(ctx, r.Tenant, key, limit)
			r.More = r.Err == nil && r.N >= limit
		}
	}
	res := make([]ChainResult, len(ts))
	for i, t := range ts {
		res[i] = *byID[t.ID]
		res[i].Tenant = t
	}
	return res
}

// The statements of a group's transaction that are the same for every
// group (prepared once per connection, see DB.prepare). The ids are
// passed as text in tenant id order: unnest yields them in the array's
// order, so the locks are taken in it; WITH ORDINALITY numbers them
// (from 1) for the answers.
const (
	chainLockManySQL = `SELECT pg_advisory_xact_lock(hashtextextended('gatehouse.audit-chain:' || u.id, $2))
		FROM unnest($1::text[]) AS u(id)`
	chainHeadsManySQL = `SELECT u.i, h.chain_seq, h.hash FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, i)
		JOIN gatehouse.audit_heads h ON h.tenant_id = u.id`
	chainMarksManySQL = `SELECT u.i, p.marked_at < now() - make_interval(secs => $2) FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, i)
		JOIN gatehouse.audit_pending p ON p.tenant_id = u.id`
	chainHeadsUpsertManySQL = `INSERT INTO gatehouse.audit_heads (tenant_id, chain_seq, hash)
		SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bytea[])
		ON CONFLICT (tenant_id) DO UPDATE SET chain_seq = excluded.chain_seq, hash = excluded.hash, updated_at = now()`
)

// chainGroup chains up to limit records of each tenant of group in one
// transaction on one connection; group is in tenant id order, without
// duplicates. On error nothing was written (the transaction is rolled
// back) and the results are untouched.
//
// take says whether the group's records in the audit intake are taken too.
func (db *DB) chainGroup(ctx context.Context, group []*ChainResult, lane int, key AuditKey, limit int, take bool) (err error) {
	for _, r := range group {
		if !opaqueName.MatchString(r.Tenant.Schema) {
			return fmt.Errorf("tenant %s: refusing unexpected schema name", r.Tenant.Key)
		}
	}
	seed, err := db.lockSeed(ctx)
	if err != nil {
		return err
	}
	// The backend gathers the caches of every tenant whose audit log it
	// serves: all of them count towards ControlConnMaxTenants.
	ids := make([]string, len(group))
	for i, r := range group {
		ids[i] = r.Tenant.ID
	}
	conn, release, err := db.ctl.acquire(ctx, lane, backgroundWork, ids[0], ids...)
	if err != nil {
		return err
	}
	defer release()
	defer func() {
		if err != nil && conn.Conn().PgConn().TxStatus() != 'I' {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_, _ = conn.Exec(rctx, "ROLLBACK")
		}
	}()
	if err := db.prepare(ctx, conn.Conn(), group[0].Tenant.Schema, chainLockManySQL, chainHeadsManySQL, chainMarksManySQL, chainHeadsUpsertManySQL); err != nil {
		return err
	}
	// Each tenant's SELECT and UPDATE name its table. They run prepared
	// once the connection has chained records of the tenant before and
	// has room for them (laneStatementIfUsed: a visit that finds nothing
	// to chain does not count), planned generically: planned at each
	// pass they cost PostgreSQL 82 and 175 µs per tenant, prepared 17 and
	// 49 (bench/README.md). Their names are all taken here, before the
	// transaction: preparing one may take round trips of its own.
	db.startLaneMessage(conn.Conn())
	selects, updates, moves := make([]string, len(group)), make([]string, len(group)), make([]string, len(group))
	byPath := make([]bool, len(group)) // its UPDATE not prepared here: see below
	texts := make([][3]string, len(group))
	prepared, anyByPath := false, false
	for i, r := range group {
		s, u, m := chainSelectSQL(r.Tenant.Schema), chainUpdateSQL(r.Tenant.Schema), intakeMoveSQL(r.Tenant.Schema)
		texts[i] = [3]string{s, u, m}
		selects[i] = db.laneStatementIfUsed(ctx, conn.Conn(), r.Tenant.Schema, s)
		updates[i] = db.laneStatementIfUsed(ctx, conn.Conn(), r.Tenant.Schema, u)
		moves[i] = db.laneStatementIfUsed(ctx, conn.Conn(), r.Tenant.Schema, m)
		prepared = prepared || selects[i] != s || updates[i] != u || moves[i] != m
		byPath[i] = updates[i] == u && !db.pooled
		anyByPath = anyByPath || byPath[i]
	}
	if anyByPath {
		// In a transaction of its own: before this pass's.
		if err := db.prepare(ctx, conn.Conn(), group[0].Tenant.Schema, setSearchPathSQL, chainUpdateRowPathSQL); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil && prepared && staleStatement(err) {
			// A prepared statement may have been refused (a migration
			// changed the audit log under it): the fall-back runs
			// unprepared, and later passes prepare afresh.
			for _, r := range group {
				forgetStatements(conn.Conn(), laneStatementsKey, r.Tenant.Schema)
			}
		}
	}()

	n := len(group)
	seqs := make([]int64, n)
	prevs := make([][]byte, n)
	recs := make([][]*AuditRecord, n)
	moved := make([][]*AuditRecord, n) // taken from the intake (audit_intake.go)
	tenants := make([]*tenancy.Tenant, n)
	for i, r := range group {
		tenants[i] = r.Tenant
	}
	stale := make([]bool, n)
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(chainLockManySQL, ids, seed)
	// Then no lock wait longer than auditLockWait (backgroundLockWait),
	// and the tenants' prepared statements planned generically: one
	// statement for both.
	if prepared && !db.customPlans {
		b.Queue(lockWaitGenericSQL, auditLockWaitSQL)
	} else {
		b.Queue(lockWaitSQL, auditLockWaitSQL)
	}
	b.Queue(chainHeadsManySQL, ids).Query(func(rows pgx.Rows) error {
		var i, seq int64
		var hash []byte
		_, err := pgx.ForEachRow(rows, []any{&i, &seq, &hash}, func() error {
			if i < 1 || i > int64(n) {
				return fmt.Errorf("audit heads: tenant %d of %d", i, n)
			}
			seqs[i-1], prevs[i-1] = seq, slices.Clone(hash)
			return nil
		})
		return err
	})
	// Which tenants are marked as possibly having unchained records in
	// their logs, and whose marks are stale (audit_pending.go): an
	// unmarked tenant has none (every writer of a log marks its tenant
	// before or with its records, and a mark goes only once nothing is
	// left), so its log is
	// not read. Through the intake, most tenants' passes are of the
	// intake's records alone: their logs' SELECT, one statement per
	// tenant and pass, planned again wherever it is not prepared, was
	// most of a spread pass's cost left.
	marked := make([]bool, n)
	b.Queue(chainMarksManySQL, ids, markStale.Seconds()).Query(func(rows pgx.Rows) error {
		var i int64
		var old bool
		_, err := pgx.ForEachRow(rows, []any{&i, &old}, func() error {
			if i < 1 || i > int64(n) {
				return fmt.Errorf("audit pending: tenant %d of %d", i, n)
			}
			marked[i-1], stale[i-1] = true, old
			return nil
		})
		return err
	})
	// The records waiting in the intake, inserted already linked.
	if take {
		queueIntakeTake(b, tenants, limit, moved)
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	// Named through search_path instead, in statements prepared once per
	// connection for every tenant, they measured no cheaper: PostgreSQL
	// plans a prepared statement again whenever search_path has changed
	// since its last use (PostgreSQL documentation, PREPARE), so that
	// saved only the parse (BenchmarkChainAuditTenants, bench/README.md).
	b = &pgx.Batch{}
	for i := range group {
		if !marked[i] {
			continue
		}
		b.Queue(selects[i], limit).Query(func(rows pgx.Rows) error {
			var err error
			recs[i], err = pgx.CollectRows(rows, scanAudit)
			return err
		})
	}
	if b.Len() > 0 {
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
	}

	// The links of a tenant whose UPDATE is not prepared here (up to
	// rowPathMax of them) are stored record by record, by a single-row
	// UPDATE prepared once for every tenant, its table found through
	// search_path: planned again for each tenant, as the UPDATE … FROM
	// unnest(…) that names the table was planned at each pass, but at far
	// less cost (on a warm connection, ~80 against ~190 µs per tenant;
	// bench/README.md). Behind a transaction pooler, where nothing is
	// prepared, each tenant's UPDATE … FROM unnest(…) is planned once
	// instead of a plan per record. Setting search_path would have every
	// prepared statement run after it planned again (see
	// insertAuditBatch), so b holds what it does not concern (the other
	// UPDATEs, which name their tables, the heads, those tenants' pending
	// marks) and onPath, sent after them, the single-row ones, each
	// tenant's pending mark after its links.
	for i, r := range group {
		if len(recs[i]) > 0 {
			db.laneStatementUsed(conn.Conn(), r.Tenant.Schema, texts[i][0])
			db.laneStatementUsed(conn.Conn(), r.Tenant.Schema, texts[i][1])
		}
		if len(moved[i]) > 0 {
			db.laneStatementUsed(conn.Conn(), r.Tenant.Schema, texts[i][2])
		}
	}
	b = &pgx.Batch{}
	onPath := &pgx.Batch{}
	var headIDs []string
	var headSeqs []int64
	var headHashes [][]byte
	chained := make([]int, n)
	for i, r := range group {
		q := b
		nRecs, nMoved := chainable(recs[i], moved[i], limit)
		chained[i] = nRecs + nMoved
		if len(recs[i]) > 0 || len(moved[i]) > 0 {
			prev := prevs[i]
			if prev == nil {
				prev = []byte{}
			}
			links, seq, prev := linkByID(key, seqs[i], prev, recs[i][:nRecs], moved[i][:nMoved])
			switch {
			case nRecs == 0:
			case byPath[i] && nRecs <= rowPathMax:
				q = onPath
				q.Queue(setSearchPathSQL, pgx.Identifier{r.Tenant.Schema}.Sanitize())
				queueChainLinkRows(q, key, recs[i][:nRecs], links[0])
			default:
				queueChainLinks(q, updates[i], key, recs[i][:nRecs], links[0])
			}
			if len(moved[i]) > 0 { // names its table: on b, whatever the links' way
				queueIntakeMove(b, moves[i], r.Tenant, key, moved[i], links[1])
			}
			if nRecs+nMoved > 0 {
				headIDs, headSeqs, headHashes = append(headIDs, r.Tenant.ID), append(headSeqs, seq), append(headHashes, prev)
			}
		}
		if len(recs[i]) < limit && stale[i] { // nothing left: the tenant may leave the pending list (after its links)
			queueClearAuditPending(q, r.Tenant, pgx.Identifier{r.Tenant.Schema, "audit_log"}.Sanitize())
		}
	}
	if len(headIDs) > 0 {
		b.Queue(chainHeadsUpsertManySQL, headIDs, headSeqs, headHashes)
	}
	b.QueuedQueries = append(b.QueuedQueries, onPath.QueuedQueries...)
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	for i, r := range group {
		r.N, r.More, r.Err = chained[i], len(recs[i]) == limit || len(moved[i]) == limit, nil
	}
	return nil
}
