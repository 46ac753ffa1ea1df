package store

import (
	"bytes"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// AuditChain lets [DB.InsertAuditBatch] chain records as it writes them,
// instead of leaving them to the background chainer ([DB.ChainAudit]),
// whose UPDATE rewrote every record and all its index entries a second
// time (measured: about as much PostgreSQL work as the INSERT itself).
//
// A record's link hashes its id and time (see AuditKey.link), so both
// must be known before the INSERT: the writer reserves ids from each
// tenant's audit_log sequence one batch ahead (a statement in the same
// pipelined batch, so no round trip of its own) and sets the time itself.
// It also remembers each tenant's chain head as the last batch left it.
// With both at hand, a batch's records are sent with their links, and
// gatehouse.audit_head_advance moves the head, under the chainer's
// per-tenant lock, only if it is still the one expected; if another
// replica or the chainer moved it, the records are stored unchained
// (the chainer links them later, as before) and the current head is
// remembered for the next batch. Without reserved ids or a known head (a
// tenant's first batch, ids older than reserveLife) records are stored
// unchained. So the chain is never wrong, only sometimes late, and a
// replica writing a tenant alone chains every batch it writes.
//
// Reserved ids are used within reserveLife or dropped (gaps, as a
// rolled-back INSERT leaves): a chained record's id may then be lower than
// that of a record committed up to reserveLife before it. Chain order is
// chain_seq, never id (see [DB.VerifyAudit]).
//
// An AuditChain belongs to one writer (the group committer); it is safe
// for concurrent use.
type AuditChain struct {
	key AuditKey
	mu  sync.Mutex
	m   map[string]*chainState // by tenant id
}

type chainState struct {
	headKnown  bool
	seq        int64
	hash       []byte
	ids        []int64
	reservedAt time.Time
}

// reserveLife bounds how long reserved ids wait for a batch.
const reserveLife = time.Second

// NewAuditChain returns a chain writer that links records with key (the
// newest audit key: the one the background chainer uses).
func NewAuditChain(key AuditKey) *AuditChain {
	return &AuditChain{key: key, m: map[string]*chainState{}}
}

// take returns n reserved ids of tenant and its head, consuming the ids,
// when both are at hand; ok is false otherwise.
func (c *AuditChain) take(tenant string, n int, now time.Time) (ids []int64, seq int64, hash []byte, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.m[tenant]
	if s == nil || !s.headKnown || now.Sub(s.reservedAt) > reserveLife || len(s.ids) < n {
		return nil, 0, nil, false
	}
	ids, s.ids = s.ids[:n:n], s.ids[n:]
	return ids, s.seq, s.hash, true
}

// head remembers tenant's head as a batch's transaction saw it.
func (c *AuditChain) head(tenant string, seq int64, hash []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.state(tenant)
	s.headKnown, s.seq, s.hash = true, seq, bytes.Clone(hash)
}

// forget drops what is known of tenant (after a batch that failed).
func (c *AuditChain) forget(tenant string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, tenant)
}

// reserved keeps ids reserved for tenant's next batch.
func (c *AuditChain) reserved(tenant string, ids []int64, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.state(tenant)
	s.ids, s.reservedAt = ids, at
}

func (c *AuditChain) state(tenant string) *chainState {
	s := c.m[tenant]
	if s == nil {
		s = &chainState{}
		c.m[tenant] = s
	}
	return s
}

// reserveSize is how many ids to reserve after a batch of n records.
func reserveSize(n int) int { return min(max(2*n, 8), 1024) }

// auditInsertSQL is the one statement of a chained batch per tenant: the
// same text for every tenant, so that it is prepared once per connection
// (except through a transaction pooler).
const auditInsertSQL = `SELECT ok, head_seq, head_hash, reserved FROM gatehouse.audit_insert($1, $2, $3, $4, $5, $6, $7,
	$8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)`

// queueChained queues gatehouse.audit_insert of recs into schema with
// their links (chained after the head c knows, with the reserved ids) and
// the reservation of ids for the next batch; it reports false, queuing
// nothing, when c has no ids or head at hand for the tenant. cols and
// counts are the records' columns as InsertAuditBatch builds them.
func (c *AuditChain) queueChained(b *pgx.Batch, schema, tenant string, seed int64, recs []*AuditRecord, cols [][]string, counts []int32) bool {
	now := time.Now()
	ids, seq, prev, ok := c.take(tenant, len(recs), now)
	if !ok {
		return false
	}
	at := now.UTC().Truncate(time.Microsecond)
	n := len(recs)
	ats, prevs, hashes := make([]time.Time, n), make([][]byte, n), make([][]byte, n)
	expectSeq, expectHash := seq, prev
	for i, r := range recs {
		r.ID, r.At, r.Count = ids[i], at, int(counts[i])
		seq++
		h := c.key.link(prev, seq, r)
		ats[i], prevs[i], hashes[i] = at, prev, h
		prev = h
	}
	args := make([]any, 0, 24)
	args = append(args, schema, tenant, seed, expectSeq, expectHash, c.key.ID, reserveSize(n), ids, ats)
	for _, col := range cols {
		args = append(args, col)
	}
	args = append(args, counts, prevs, hashes)
	b.Queue(auditInsertSQL, args...).QueryRow(func(row pgx.Row) error {
		var moved bool
		var headSeq int64
		var headHash []byte
		var next []int64
		if err := row.Scan(&moved, &headSeq, &headHash, &next); err != nil {
			return err
		}
		c.head(tenant, headSeq, headHash)
		slices.Sort(next)
		c.reserved(tenant, next, time.Now())
		if moved {
			for i, r := range recs {
				r.ChainSeq = expectSeq + int64(i) + 1
			}
		}
		return nil
	})
	return true
}

// queueReserve queues, for a batch stored unchained, the reservation of
// ids for tenant's next batch (after one of n records) and, when the head
// is not known, the head's read.
func (c *AuditChain) queueReserve(b *pgx.Batch, table, tenant string, n int) {
	b.Queue(`SELECT array_agg(nextval(s.seq) ORDER BY g) FROM (SELECT pg_get_serial_sequence($1, 'id')::regclass AS seq) s,
		generate_series(1, $2) g`, table, reserveSize(n)).QueryRow(func(row pgx.Row) error {
		var ids []int64
		if err := row.Scan(&ids); err != nil {
			return err
		}
		slices.Sort(ids)
		c.reserved(tenant, ids, time.Now())
		return nil
	})
	c.mu.Lock()
	known := c.m[tenant] != nil && c.m[tenant].headKnown
	c.mu.Unlock()
	if known {
		return
	}
	b.Queue("SELECT coalesce((SELECT chain_seq FROM gatehouse.audit_heads WHERE tenant_id = $1::uuid), 0), coalesce((SELECT hash FROM gatehouse.audit_heads WHERE tenant_id = $1::uuid), '\\x'::bytea)",
		tenant).QueryRow(func(row pgx.Row) error {
		var seq int64
		var hash []byte
		if err := row.Scan(&seq, &hash); err != nil {
			return err
		}
		c.head(tenant, seq, hash)
		return nil
	})
}
