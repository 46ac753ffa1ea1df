package store

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// DetectInput is one tenant's part of [DB.DetectAnomaliesTenants].
type DetectInput struct {
	Tenant *tenancy.Tenant
	// From is where to read from when the detector has no cursor for the
	// tenant yet (see TenantCursor).
	From     int64
	Failures []KeyFailure // failed authentications naming the tenant's keys
}

// DetectResult is what [DB.DetectAnomaliesTenants] did for one tenant.
type DetectResult struct {
	N       int            // records read; N == the limit: there may be more
	Written []*StoredAlert // the alerts written
	Err     error
	// Group is which of the call's transactions read the tenant (0, 1, …),
	// or -1 when it was read alone because its group's transaction failed,
	// or was not read at all (Err says why).
	Group int
}

// DefaultDetectTenants is the most tenants [DB.DetectAnomaliesTenants]
// reads in one transaction.
const DefaultDetectTenants = 64

// DetectAnomaliesTenants does what [DB.DetectAnomalies] does for each of
// in, many tenants a transaction: when calls spread over many tenants,
// each pass finds most of them with a few new records, and a transaction
// of its own per tenant cost about 0.8 ms of PostgreSQL CPU and 0.4 ms of
// Gatehouse's per tenant, mostly for its eight round trips (BEGIN and
// COMMIT among them)
// (BenchmarkAlertPassTenants, mcp).
//
// The tenants are split by control lane (each lane's on its own
// connection, as the chainer's: [DB.ChainAuditTenants]), then into
// transactions of at most DefaultDetectTenants tenants, in tenant id
// order. Each transaction is at most five round trips: BEGIN; the advisory lock
// of every tenant (the lock DetectAnomalies takes, in tenant id order, so
// that passes over overlapping sets wait for each other instead of
// deadlocking), their cursors and each tenant's records after its cursor
// (up to limit each), pipelined; the states of their principals; fn for
// each tenant in turn (in's index and its input), then its alerts (two
// round trips each, four when it revokes a key; rare), the states and the
// cursors' advance, pipelined; COMMIT. So every record is still
// read once and raises its alerts once, in the transaction that advances
// its cursor. If a transaction fails, its tenants are read one at a time
// (DetectAnomalies), so one broken tenant never stops the others'; a
// tenant that fails alone too has its error in its result. fn may be
// called more than once for a tenant (its group's transaction failed
// after it): only what the committing call returned is written.
//
// The results are in the order of in; a tenant named twice is read once,
// under its first entry.
func (db *DB) DetectAnomaliesTenants(ctx context.Context, in []DetectInput, limit int,
	fn func(i int, in AnomalyInput) (AnomalyOutput, error)) []DetectResult {
	res := make([]DetectResult, len(in))
	limit = max(limit, 1)
	fail := func(err error, is ...int) {
		for _, i := range is {
			res[i] = DetectResult{Group: -1, Err: fmt.Errorf("detecting anomalies in %s: %w", in[i].Tenant.Key, err)}
		}
	}
	all := make([]int, 0, len(in))
	first := map[string]int{}
	for i, d := range in {
		if j, ok := first[d.Tenant.ID]; ok {
			res[i] = DetectResult{Group: -1, Err: fmt.Errorf("detecting anomalies in %s: read under its first entry (%d)", d.Tenant.Key, j)}
			continue
		}
		first[d.Tenant.ID] = i
		if !opaqueName.MatchString(d.Tenant.Schema) {
			res[i] = DetectResult{Group: -1, Err: fmt.Errorf("tenant %s: refusing unexpected schema name", d.Tenant.Key)}
			continue
		}
		all = append(all, i)
	}
	seed, err := db.lockSeed(ctx)
	if err == nil {
		// Read before a lane is taken (see DetectAnomalies).
		_, err = db.Secret(ctx, invalidationSecret)
	}
	if err != nil {
		fail(err, all...)
		return res
	}
	ids := make([]string, len(all))
	for k, i := range all {
		ids[k] = in[i].Tenant.ID
	}
	lanes := db.ctl.lanes(ids)
	laneOf := make(map[int]int, len(all))
	for k, i := range all {
		laneOf[i] = lanes[k]
	}
	slices.SortFunc(all, func(a, b int) int {
		if c := laneOf[a] - laneOf[b]; c != 0 {
			return c
		}
		return strings.Compare(in[a].Tenant.ID, in[b].Tenant.ID)
	})
	for g := 0; len(all) > 0; g++ {
		lane := laneOf[all[0]]
		n := 1
		for n < min(DefaultDetectTenants, len(all)) && laneOf[all[n]] == lane {
			n++
		}
		group := all[:n]
		all = all[n:]
		err := db.detectGroup(ctx, in, res, group, lane, seed, limit, fn)
		for _, i := range group {
			res[i].Group = g
		}
		if err == nil {
			continue
		}
		for _, i := range group { // one at a time
			res[i] = DetectResult{Group: -1}
			if ctx.Err() != nil {
				fail(err, i)
				continue
			}
			res[i].N, res[i].Written, res[i].Err = db.DetectAnomalies(ctx, in[i].Tenant, in[i].From, limit, in[i].Failures,
				func(a AnomalyInput) (AnomalyOutput, error) { return fn(i, a) })
		}
	}
	return res
}

// The statements of a detector group's transaction that are the same for
// every group; the ids are in tenant id order (unnest yields them in the
// array's order).
const (
	detectLockManySQL = `SELECT pg_advisory_xact_lock(hashtextextended('gatehouse.anomaly:' || u.id, $2))
		FROM unnest($1::text[]) AS u(id)`
	detectCursorsManySQL = `SELECT u.i, c.chain_seq FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, i)
		JOIN gatehouse.anomaly_cursors c ON c.tenant_id = u.id`
	detectStatesManySQL = `SELECT u.i, p.subject, p.state::text FROM unnest($1::uuid[], $2::text[], $3::int[]) AS u(id, s, i)
		JOIN gatehouse.anomaly_principals p ON p.tenant_id = u.id AND p.subject = u.s`
	detectSaveStatesManySQL = `INSERT INTO gatehouse.anomaly_principals (tenant_id, subject, state)
		SELECT id, s, v::jsonb FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, s, v)
		ON CONFLICT (tenant_id, subject) DO UPDATE SET state = excluded.state, updated_at = now()`
	detectSaveCursorsManySQL = `INSERT INTO gatehouse.anomaly_cursors (tenant_id, chain_seq)
		SELECT * FROM unnest($1::uuid[], $2::bigint[])
		ON CONFLICT (tenant_id) DO UPDATE SET chain_seq = excluded.chain_seq`
)

// detectGroup reads the tenants in[group] (of one lane, in id order) in
// one transaction on lane's connection for background work, and sets
// their results (see DetectAnomaliesTenants).
func (db *DB) detectGroup(ctx context.Context, in []DetectInput, res []DetectResult, group []int, lane int, seed int64, limit int,
	fn func(i int, in AnomalyInput) (AnomalyOutput, error)) error {
	ids := make([]string, len(group))
	for k, i := range group {
		ids[k] = in[i].Tenant.ID
	}
	conn, release, err := db.ctl.acquire(ctx, lane, backgroundWork, ids[0], ids...)
	if err != nil {
		return err
	}
	defer release()
	return connTxFunc(ctx, conn.Conn(), pgx.TxOptions{}, func(tx pgx.Tx) error {
		// The locks, the cursors and each tenant's records after its
		// cursor (read again in its SELECT, under the lock taken before),
		// in one round trip.
		cursors := make([]int64, len(group))
		had := make([]bool, len(group))
		recs := make([][]*AuditRecord, len(group))
		tables := make([]string, len(group))
		b := &pgx.Batch{}
		b.Queue(detectLockManySQL, ids, seed)
		b.Queue(lockWaitSQL, auditLockWaitSQL) // see backgroundLockWait
		b.Queue(detectCursorsManySQL, ids).Query(func(rows pgx.Rows) error {
			var k int
			var seq int64
			_, err := pgx.ForEachRow(rows, []any{&k, &seq}, func() error {
				cursors[k-1], had[k-1] = seq, true
				return nil
			})
			return err
		})
		for k, i := range group {
			tables[k] = pgx.Identifier{in[i].Tenant.Schema, "audit_log"}.Sanitize()
			b.Queue("SELECT "+auditColumns+" FROM "+tables[k]+` WHERE chain_seq > coalesce(
				(SELECT chain_seq FROM gatehouse.anomaly_cursors WHERE tenant_id = $1), $2) ORDER BY chain_seq LIMIT $3`,
				in[i].Tenant.ID, in[i].From, limit).Query(func(rows pgx.Rows) error {
				var err error
				recs[k], err = pgx.CollectRows(rows, scanAudit)
				return err
			})
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		// The states of every principal in the records and the failures.
		var stIDs, stSubjects []string
		var stIdx []int32
		for k, i := range group {
			if !had[k] {
				cursors[k] = in[i].From
			}
			for _, s := range anomalySubjects(recs[k], in[i].Failures) {
				stIDs, stSubjects, stIdx = append(stIDs, ids[k]), append(stSubjects, s), append(stIdx, int32(k))
			}
		}
		states := make([]map[string][]byte, len(group))
		for k := range states {
			states[k] = map[string][]byte{}
		}
		if len(stIDs) > 0 {
			rows, _ := tx.Query(ctx, detectStatesManySQL, stIDs, stSubjects, stIdx)
			var k int
			var subject, state string
			if _, err := pgx.ForEachRow(rows, []any{&k, &subject, &state}, func() error {
				states[k][subject] = []byte(state)
				return nil
			}); err != nil {
				return err
			}
		}
		// Each tenant's decisions and alerts, then every state and cursor.
		var saveIDs, saveSubjects, saveStates, curIDs []string
		var curSeqs []int64
		for k, i := range group {
			res[i] = DetectResult{N: len(recs[k])}
			out, err := fn(i, AnomalyInput{Records: recs[k], Failures: in[i].Failures, States: states[k]})
			if err != nil {
				return err
			}
			for s, v := range out.States {
				saveIDs, saveSubjects, saveStates = append(saveIDs, ids[k]), append(saveSubjects, s), append(saveStates, string(v))
			}
			for _, a := range out.Alerts {
				sa, err := writeAlert(ctx, tx, db, in[i].Tenant, tables[k], a)
				if err != nil {
					return err
				}
				res[i].Written = append(res[i].Written, sa)
			}
			if n := len(recs[k]); n > 0 || !had[k] { // a tenant read for the first time keeps its place even with nothing to read
				seq := cursors[k]
				if n > 0 {
					seq = recs[k][n-1].ChainSeq
				}
				curIDs, curSeqs = append(curIDs, ids[k]), append(curSeqs, seq)
			}
		}
		b = &pgx.Batch{}
		if len(saveIDs) > 0 {
			b.Queue(detectSaveStatesManySQL, saveIDs, saveSubjects, saveStates)
		}
		if len(curIDs) > 0 {
			b.Queue(detectSaveCursorsManySQL, curIDs, curSeqs)
		}
		if b.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, b).Close()
	})
}

// anomalySubjects returns the principals of recs and failures, each once,
// in order of appearance: those whose states a detector pass reads.
func anomalySubjects(recs []*AuditRecord, failures []KeyFailure) []string {
	var subjects []string
	seen := map[string]bool{}
	for _, r := range recs {
		if !seen[r.Subject] {
			seen[r.Subject] = true
			subjects = append(subjects, r.Subject)
		}
	}
	for _, f := range failures {
		if s := "apikey:" + f.APIKeyID; !seen[s] {
			seen[s] = true
			subjects = append(subjects, s)
		}
	}
	return subjects
}
