package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Chaining a call's record when it is written.
//
// A record written unchained costs PostgreSQL twice: its INSERT (the row,
// its four index entries, one of them in the partial index of unchained
// records), then the chainer's UPDATE of its link columns a moment later,
// which is never HOT (chain_seq is indexed): a second row version, three
// more index entries, a dead tuple for autovacuum, plus the chain pass's
// own statements. Calls spread over many tenants paid most for it (issue
// 17: the links cost 24 µs a call over 10 tenants, 54 over 2,000, because
// each pass found about one record per tenant).
//
// So the group commit chains the records it writes itself, whenever it
// can do so without waiting:
//
//  1. Before its transaction, one statement (chainWriteHeadsSQL, in the
//     same round trip as its lock_timeout) reads the chain head of every
//     tenant of the batch that has one (gatehouse.audit_heads) and takes
//     the ids and times of their records: nextval of each audit log's
//     identity sequence and clock_timestamp(), which the INSERT would
//     otherwise have filled in. Those are the values the link hashes
//     (AuditKey.link), so the links are computed here, before the INSERT,
//     in the chain's existing format: `audit verify` and every reader
//     see the same records as before.
//  2. In the transaction, each such tenant's INSERT (auditChainedSQL) also
//     moves the tenant's head from the head read in step 1 to the last
//     new link, by a compare-and-set: an UPDATE of the head row that
//     matches only if the head is still the one read and the tenant's
//     chain lock (the advisory lock every chain writer holds to its
//     commit: ChainAudit, ChainAuditTenants) is free, taken with
//     pg_try_advisory_xact_lock, which never waits. The records carry
//     their links only if that UPDATE matched; otherwise (another
//     replica's group commit or a chain pass moved the head since, or
//     holds the lock now) they are written unchained, as before, and the
//     chainer links them at its next pass.
//
// Either way nothing waits and nothing is lost: the fall-back is today's
// path. The lock held to the commit keeps chain writers in turn, so a
// tenant's links still commit in chain order (the anomaly detector reads
// records by chain_seq after its cursor and relies on that); the
// compare-and-set keeps a head read before another writer's commit from
// being extended (a fork; chain_seq's UNIQUE constraint would refuse the
// second writer's records anyway, and the batch would be written again
// record by record, unchained). Records a tenant's own transaction wrote
// (tools that change data), and records written chained after older
// unchained ones, take the next positions when the chainer links them: a
// chain's order is chain_seq's, not id's.
//
// Only the tenants whose INSERT is prepared on the lane's connection are
// chained so (laneStatement: one statement text per tenant, planned
// once); the others, tenants with no head yet (never chained), and every
// tenant behind a transaction pooler (where nothing is prepared) are
// written unchained. The records of a batch that fails are written again
// one by one, unchained.

// chainWriteHeadsSQL reads, for the tenants $1 (ids, in the batch's
// order) with a chain head, that head and $3 ids of their audit log's
// identity sequence $2 (regclass text), each with clock_timestamp(): one
// row per record, numbered by tenant (u.i, from 1), in record order.
const chainWriteHeadsSQL = `SELECT u.i, h.chain_seq, h.hash, nextval(u.seq::regclass), clock_timestamp()
	FROM unnest($1::uuid[], $2::text[], $3::int[]) WITH ORDINALITY AS u(id, seq, n, i)
	JOIN gatehouse.audit_heads h ON h.tenant_id = u.id
	CROSS JOIN LATERAL generate_series(1, u.n)`

// auditSequence is the identity sequence of schema's audit log (the name
// PostgreSQL gives the sequence of an identity column: table_column_seq),
// as regclass text.
func auditSequence(schema string) string {
	return pgx.Identifier{schema, "audit_log_id_seq"}.Sanitize()
}

// auditChainedSQL inserts records into the audit log of schema with their
// ids, times and links, as auditBatchSQL does without them: $1–$13 are
// auditBatchSQL's arrays; $14 the ids, $15 the times, $16 the chain
// positions, $17 the previous links, $18 the links; $19 the tenant's id,
// $20 and $21 the head read (chain_seq, hash), $22 and $23 the new head,
// $24 the advisory lock seed, $25 the key's id. The links are stored only
// if the head moved from ($20, $21) to ($22, $23) and the chain lock was
// free (see the top of this file); it returns each record's id, time and
// chain position (0: unchained).
func auditChainedSQL(schema string) string {
	return `WITH head AS (
		UPDATE gatehouse.audit_heads SET chain_seq = $22::bigint, hash = $23::bytea, updated_at = now()
		WHERE tenant_id = $19::text::uuid AND chain_seq = $20::bigint AND hash = $21::bytea
			AND pg_try_advisory_xact_lock(hashtextextended('gatehouse.audit-chain:' || $19::text, $24::bigint))
		RETURNING 1)
	INSERT INTO ` + pgx.Identifier{schema, "audit_log"}.Sanitize() + ` (id, at, request_id, decision, tool,
		subject, email, provider, api_key_id, client_ip, user_agent, reason, args_digest, via, count,
		chain_seq, key_id, prev_hash, hash) OVERRIDING SYSTEM VALUE
	SELECT v.id, v.at, v.request_id, v.decision, v.tool, v.subject, v.email, v.provider, v.api_key_id,
		v.client_ip, v.user_agent, v.reason, v.args_digest, v.via, v.count,
		CASE WHEN c.ok THEN v.seq END, CASE WHEN c.ok THEN $25::text END,
		CASE WHEN c.ok THEN v.prev END, CASE WHEN c.ok THEN v.hash END
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
		$8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::int[],
		$14::bigint[], $15::timestamptz[], $16::bigint[], $17::bytea[], $18::bytea[])
		AS v(request_id, decision, tool, subject, email, provider, api_key_id, client_ip, user_agent,
			reason, args_digest, via, count, id, at, seq, prev, hash),
		(SELECT EXISTS (SELECT FROM head) AS ok) AS c
	RETURNING id::bigint, at::timestamptz, coalesce(chain_seq, 0)::bigint`
}

// chainWriteHead is what chainWriteHeads read for one tenant of a batch.
type chainWriteHead struct {
	seq  int64
	hash []byte
	ids  []int64
	ats  []time.Time
}

// chainWriteHeads runs step 1 (see the top of this file) on conn for the
// tenants schemas (ids), each with counts[i] records: it returns, by
// position, the head and the records' ids and times of those with a chain
// head, nil for the others. With calls set it waits at most auditLockWait
// for a lock. An error leaves every tenant without (its records are
// then written unchained).
func chainWriteHeads(ctx context.Context, conn *pgx.Conn, ids, schemas []string, counts []int32, calls bool) ([]*chainWriteHead, error) {
	seqs := make([]string, len(schemas))
	for i, s := range schemas {
		seqs[i] = auditSequence(s)
	}
	heads := make([]*chainWriteHead, len(ids))
	b := &pgx.Batch{}
	if calls {
		b.Queue(auditOpenSQL, auditLockWaitSQL)
	}
	b.Queue(chainWriteHeadsSQL, ids, seqs, counts).Query(func(rows pgx.Rows) error {
		var i, seq, id int64
		var hash []byte
		var at time.Time
		_, err := pgx.ForEachRow(rows, []any{&i, &seq, &hash, &id, &at}, func() error {
			if i < 1 || i > int64(len(ids)) {
				return fmt.Errorf("audit heads: tenant %d of %d", i, len(ids))
			}
			h := heads[i-1]
			if h == nil {
				h = &chainWriteHead{seq: seq, hash: slices.Clone(hash)}
				heads[i-1] = h
			}
			h.ids, h.ats = append(h.ids, id), append(h.ats, at)
			return nil
		})
		return err
	})
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("reading the audit chains' heads: %w", err)
	}
	for i, h := range heads {
		if h != nil && len(h.ids) != int(counts[i]) {
			return nil, fmt.Errorf("audit heads: %d ids for %d records", len(h.ids), counts[i])
		}
	}
	return heads, nil
}

// chainedArgs returns auditChainedSQL's arguments after the first
// thirteen (args, auditBatchSQL's) for recs, whose head h was read: their
// ids, times and links with key, and the compare-and-set's terms.
func chainedArgs(args []any, tenantID string, key AuditKey, seed int64, h *chainWriteHead, recs []*AuditRecord) []any {
	n := len(recs)
	seqs, prevs, hashes := make([]int64, n), make([][]byte, n), make([][]byte, n)
	prev, seq := h.hash, h.seq
	for i, r := range recs {
		// As stored: the count is at least 1 (auditBatchSQL's arguments).
		r.ID, r.At, r.Count = h.ids[i], h.ats[i], max(r.Count, 1)
		seq++
		link := key.link(prev, seq, r)
		seqs[i], prevs[i], hashes[i] = seq, prev, link
		prev = link
	}
	return append(args, h.ids, h.ats, seqs, prevs, hashes, tenantID, h.seq, h.hash, seq, prev, seed, key.ID)
}
