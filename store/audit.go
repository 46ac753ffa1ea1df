package store

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Audit decisions.
const (
	Allowed     = "ALLOWED"
	Denied      = "DENIED"
	RateLimited = "RATE_LIMITED"
	Failed      = "ERROR"
	AuthFailed  = "AUTH_FAILED" // control-plane only (gatehouse.auth_failures)
	Alerted     = "ALERT"       // an anomaly alert (written by the detector, see DetectAnomalies)
)

// AuditRecord is one decision in a tenant's audit log. It never holds a
// credential or raw arguments: ArgsDigest is a keyed digest of them.
type AuditRecord struct {
	ID         int64     `json:"id"`
	At         time.Time `json:"at"`
	RequestID  string    `json:"request_id"`
	Decision   string    `json:"decision"`
	Tool       string    `json:"tool,omitempty"`
	Subject    string    `json:"subject"`
	Email      string    `json:"email,omitempty"`
	Provider   string    `json:"provider,omitempty"`
	APIKeyID   string    `json:"api_key_id,omitempty"`
	ClientIP   string    `json:"client_ip,omitempty"`
	UserAgent  string    `json:"user_agent,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	ArgsDigest string    `json:"args_digest,omitempty"`
	Count      int       `json:"count"`
	ChainSeq   int64     `json:"chain_seq,omitempty"` // 0: not chained yet
	// Via is the surface the call came through: "" for MCP, "console".
	Via string `json:"via,omitempty"`
}

// InsertAudit writes r in the tenant transaction tx (see [DB.WithTenant]),
// filling in its id and time: the record commits or rolls back with the
// tool's effect. Its text fields are cleaned first (see [CleanText]), in r
// too, so what is mirrored elsewhere is what was stored.
func InsertAudit(ctx context.Context, tx pgx.Tx, r *AuditRecord) error {
	r.clean()
	if r.Via != "" {
		return tx.QueryRow(ctx, `INSERT INTO audit_log (request_id, decision, tool, subject, email, provider, api_key_id,
			client_ip, user_agent, reason, args_digest, count, via)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id, at`,
			r.RequestID, r.Decision, r.Tool, r.Subject, r.Email, r.Provider, r.APIKeyID,
			r.ClientIP, r.UserAgent, r.Reason, r.ArgsDigest, r.Count, r.Via).Scan(&r.ID, &r.At)
	}
	return tx.QueryRow(ctx, `INSERT INTO audit_log (request_id, decision, tool, subject, email, provider, api_key_id,
			client_ip, user_agent, reason, args_digest, count)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id, at`,
		r.RequestID, r.Decision, r.Tool, r.Subject, r.Email, r.Provider, r.APIKeyID,
		r.ClientIP, r.UserAgent, r.Reason, r.ArgsDigest, r.Count).Scan(&r.ID, &r.At)
}

// AuditKey keys the audit chain (and argument digests): HMAC-SHA256.
type AuditKey struct {
	secret []byte
	ID     string    // identifies the key in each chained record, never reveals it
	args   hash.Hash // HMAC keyed for argument digests, cloned per use
}

// NewAuditKey returns a key for secret.
func NewAuditKey(secret []byte) AuditKey {
	sum := sha256.Sum256(append([]byte("gatehouse audit key id "), secret...))
	return AuditKey{secret: secret, ID: hex.EncodeToString(sum[:6]), args: hmac.New(sha256.New, append([]byte("args:"), secret...))}
}

// Derive returns a key for another purpose, independent of the chain key.
func (k AuditKey) Derive(purpose string) []byte {
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte("derive:" + purpose))
	return m.Sum(nil)
}

// Digest is the keyed digest of arguments: equal arguments give equal
// digests, and the digest reveals nothing of them without the key. (It is
// on every call's path: the keyed HMAC is cloned, not keyed again.)
func (k AuditKey) Digest(b []byte) string {
	var m hash.Hash
	if c, ok := k.args.(hash.Cloner); ok {
		if cl, err := c.Clone(); err == nil {
			m = cl
		}
	}
	if m == nil { // GOFIPS140=v1.0.0 builds cannot clone
		m = hmac.New(sha256.New, append([]byte("args:"), k.secret...))
	}
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// link is the chain hash of a record at seq after prev.
func (k AuditKey) link(prev []byte, seq int64, r *AuditRecord) []byte {
	vals := []any{seq, r.ID, r.At.UTC().Format("2006-01-02T15:04:05.000000Z"), r.RequestID, r.Decision, r.Tool,
		r.Subject, r.Email, r.Provider, r.APIKeyID, r.ClientIP, r.UserAgent, r.Reason, r.ArgsDigest, r.Count}
	if r.Via != "" { // hashed only when set: records without it hash as they always did
		vals = append(vals, r.Via)
	}
	fields, _ := json.Marshal(vals)
	m := hmac.New(sha256.New, k.secret)
	m.Write(prev)
	m.Write(fields)
	return m.Sum(nil)
}

const auditColumns = "id, at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip, user_agent, reason, args_digest, count, coalesce(chain_seq, 0), via"

func scanAudit(row pgx.CollectableRow) (*AuditRecord, error) {
	var r AuditRecord
	err := row.Scan(&r.ID, &r.At, &r.RequestID, &r.Decision, &r.Tool, &r.Subject, &r.Email, &r.Provider, &r.APIKeyID,
		&r.ClientIP, &r.UserAgent, &r.Reason, &r.ArgsDigest, &r.Count, &r.ChainSeq, &r.Via)
	return &r, err
}

// ChainAudit links up to batch of a tenant's unchained records onto its
// chain, oldest first, then up to batch of its records waiting in the audit
// intake (inserted into its audit log already linked: audit_intake.go),
// and records the new head in the control schema; it returns how many
// records it chained, up to 2×batch. It
// runs as the owner (the tenant role cannot write chain columns); replicas
// may run it at once: a per-tenant advisory lock makes them take turns.
// That lock is all the serialisation it needs: nothing else writes the
// chain columns, and each statement after the lock (READ COMMITTED) sees
// what the previous holder committed, so the records are read without
// row locks (SELECT … FOR UPDATE wrote a lock into every row, WAL
// included, only for the UPDATE to write it again).
//
// A pass is two round trips, whatever it finds: BEGIN, the lock, the head,
// the records, the age of the tenant's pending mark and the take of its
// intake rows in one pipelined batch; the UPDATE, the intake records'
// INSERT, the new head, the pending mark's removal (when
// nothing is left and the mark is stale) and COMMIT in another (it runs every second for every
// tenant with new records, so at many quiet tenants its round trips, seven
// or eight one by one, were most of its cost). A statement that fails
// aborts the transaction and the statements after it in its batch; the
// transaction is then rolled back.
func (db *DB) ChainAudit(ctx context.Context, t *tenancy.Tenant, key AuditKey, batch int) (int, error) {
	take := db.intakeFree()
	n, err := db.chainAudit(ctx, t, key, batch, take)
	if err != nil && take && lockTimedOut(err) && ctx.Err() == nil && db.intakeLocked(ctx) {
		// The intake locked, not the log: its own records are chained.
		db.skipIntake()
		take = false
		n, err = db.chainAudit(ctx, t, key, batch, false)
	}
	if err != nil && take && !Unavailable(err) && !lockTimedOut(err) && ctx.Err() == nil {
		// A record its log refuses, taken from the intake with the
		// others: moved one at a time, reduced or set aside, then the
		// rest chained (audit_intake.go).
		if done, derr := db.drainIntake(ctx, t, batch); done > 0 {
			n, err = db.chainAudit(ctx, t, key, batch, take)
		} else if derr != nil {
			err = errors.Join(err, derr)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("chaining the audit log of %s: %w", t.Key, lockedAs(ErrAuditLogBusy, err))
	}
	return n, nil
}

// The chainer's statements that are the same for every tenant, prepared
// once per connection (not behind a pooler, see DB.prepare); those naming
// the tenant's table are planned on each pass.
const (
	chainLockSQL       = "SELECT pg_advisory_xact_lock(hashtextextended('gatehouse.audit-chain:' || $1, $2))"
	chainHeadSQL       = "SELECT chain_seq, hash FROM gatehouse.audit_heads WHERE tenant_id = $1"
	chainHeadUpsertSQL = `INSERT INTO gatehouse.audit_heads (tenant_id, chain_seq, hash) VALUES ($1, $2, $3)
		ON CONFLICT (tenant_id) DO UPDATE SET chain_seq = excluded.chain_seq, hash = excluded.hash, updated_at = now()`
)

// chainLink is a record's place on its chain: its chain_seq, the hash
// before it, its own.
type chainLink struct {
	seq        int64
	prev, hash []byte
}

// linkByID links the records of lists (each in id order; the unchained
// records of an audit log, those taken from the audit intake) onto a chain
// whose head is at seq with hash prev, all of them merged in id order: ids
// are drawn when a record is written, wherever it is written, so a pass
// chains its records in the order they were written (as before, a record
// committed after a pass, with a lower id than some that pass chained, is
// chained by the next). links[k][i] is lists[k][i]'s link; the new head is
// returned.
func linkByID(key AuditKey, seq int64, prev []byte, lists ...[]*AuditRecord) (links [][]chainLink, head int64, headHash []byte) {
	links = make([][]chainLink, len(lists))
	next := make([]int, len(lists))
	for k, l := range lists {
		links[k] = make([]chainLink, len(l))
	}
	for {
		k := -1
		for j, l := range lists {
			if next[j] < len(l) && (k < 0 || l[next[j]].ID < lists[k][next[k]].ID) {
				k = j
			}
		}
		if k < 0 {
			return links, seq, prev
		}
		seq++
		h := key.link(prev, seq, lists[k][next[k]])
		links[k][next[k]] = chainLink{seq, prev, h}
		prev = h
		next[k]++
	}
}

// queueChainLinks queues update (the audit log's chainUpdateSQL, or the
// name of its prepared statement) storing the links of recs (unchained
// records of that log, in id order, at least one) on b.
// The range on id lets PostgreSQL find the rows through the primary key;
// joined on id alone, it planned a hash join over a sequential scan of the
// whole audit log, a cost that grew with the log on every pass
// (BenchmarkChainAudit).
func queueChainLinks(b *pgx.Batch, update string, key AuditKey, recs []*AuditRecord, links []chainLink) {
	n := len(recs)
	ids, seqs, prevs, hashes := make([]int64, n), make([]int64, n), make([][]byte, n), make([][]byte, n)
	for i, r := range recs {
		ids[i], seqs[i], prevs[i], hashes[i] = r.ID, links[i].seq, links[i].prev, links[i].hash
	}
	b.Queue(update, ids, seqs, prevs, hashes, key.ID, ids[0], ids[n-1])
}

// queueChainLinkRows is queueChainLinks with the links stored one record
// at a time by chainUpdateRowPathSQL, into the audit log of the schema on
// the search_path (set by the caller).
func queueChainLinkRows(b *pgx.Batch, key AuditKey, recs []*AuditRecord, links []chainLink) {
	for i, r := range recs {
		b.Queue(chainUpdateRowPathSQL, r.ID, links[i].seq, links[i].prev, links[i].hash, key.ID)
	}
}

// chainUpdateRowPathSQL stores the link of record $1 of the audit log of
// the schema on the search_path: its chain_seq $2, prev_hash $3, hash $4
// and key_id $5. The same text for every tenant.
const chainUpdateRowPathSQL = `UPDATE audit_log SET chain_seq = $2::bigint, prev_hash = $3::bytea, hash = $4::bytea, key_id = $5::text
	WHERE id = $1::bigint`

// chainSelectSQL reads up to $1 of the unchained records of schema's audit
// log, oldest first (through its partial index of unchained records).
func chainSelectSQL(schema string) string {
	return "SELECT " + chainColumns + " FROM " + pgx.Identifier{schema, "audit_log"}.Sanitize() + " WHERE chain_seq IS NULL ORDER BY id LIMIT $1"
}

// chainColumns are auditColumns, each cast to the type scanAudit reads, so
// that the result's row type is the same whatever a migration made of the
// columns' types (a length, a precision: a cast to a type without one
// exposes none, PostgreSQL source, parse_coerce.c, coerce_type_typmod).
// PostgreSQL refuses to run a prepared statement whose result's row type
// has changed since it was prepared ("cached plan must not change result
// type"), and the chain pass's SELECT may be prepared per tenant on the
// control lanes (laneStatement).
const chainColumns = `id::bigint, at::timestamptz, request_id::text, decision::text, tool::text, subject::text, email::text,
	provider::text, api_key_id::text, client_ip::text, user_agent::text, reason::text, args_digest::text, count::integer,
	coalesce(chain_seq, 0)::bigint, via::text`

// chainUpdateSQL stores the links of records of schema's audit log (see
// queueChainLinks for its arguments).
func chainUpdateSQL(schema string) string {
	return "UPDATE " + pgx.Identifier{schema, "audit_log"}.Sanitize() + ` a SET chain_seq = v.seq, key_id = $5, prev_hash = v.prev, hash = v.hash
		FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[]) AS v(id, seq, prev, hash)
		WHERE a.id = v.id AND a.id BETWEEN $6 AND $7`
}

// chainAudit is one pass of ChainAudit; take says whether it takes the
// tenant's records from the intake too.
func (db *DB) chainAudit(ctx context.Context, t *tenancy.Tenant, key AuditKey, batch int, take bool) (n int, err error) {
	table := pgx.Identifier{t.Schema, "audit_log"}.Sanitize()
	seed, err := db.lockSeed(ctx)
	if err != nil {
		return 0, err
	}
	conn, release, err := db.ctl.acquireTenant(ctx, t.ID, backgroundWork)
	if err != nil {
		return 0, err
	}
	// Released with its transaction rolled back if anything failed (a
	// connection still in a transaction is closed by the pool instead).
	defer release()
	defer func() {
		if err != nil && conn.Conn().PgConn().TxStatus() != 'I' {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_, _ = conn.Exec(rctx, "ROLLBACK")
		}
	}()
	if err := db.prepare(ctx, conn.Conn(), t.Schema, chainLockSQL, chainHeadSQL, chainHeadUpsertSQL); err != nil {
		return 0, err
	}

	var seq int64
	prev := []byte{}
	var recs []*AuditRecord
	var stale bool // the tenant's pending mark is old enough to be removed
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(chainLockSQL, t.ID, seed)
	b.Queue(lockWaitSQL, auditLockWaitSQL) // see backgroundLockWait
	b.Queue(chainHeadSQL, t.ID).QueryRow(func(row pgx.Row) error {
		if err := row.Scan(&seq, &prev); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return nil
	})
	b.Queue(chainSelectSQL(t.Schema), batch).Query(func(rows pgx.Rows) error {
		var err error
		recs, err = pgx.CollectRows(rows, scanAudit)
		return err
	})
	queueStaleAuditPending(b, t, &stale)
	moved := make([][]*AuditRecord, 1) // taken from the intake (audit_intake.go)
	if take {
		queueIntakeTake(b, []*tenancy.Tenant{t}, batch, moved)
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return 0, err
	}

	b = &pgx.Batch{}
	nRecs, nMoved := chainable(recs, moved[0], batch)
	links, seq, prev := linkByID(key, seq, prev, recs[:nRecs], moved[0][:nMoved])
	if nRecs > 0 {
		queueChainLinks(b, chainUpdateSQL(t.Schema), key, recs[:nRecs], links[0])
	}
	if len(moved[0]) > 0 {
		queueIntakeMove(b, intakeMoveSQL(t.Schema), t, key, moved[0], links[1])
	}
	if nRecs+nMoved > 0 {
		b.Queue(chainHeadUpsertSQL, t.ID, seq, prev)
	}
	if len(recs) < batch && stale { // nothing left: the tenant may leave the pending list
		queueClearAuditPending(b, t, table)
	}
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return 0, err
	}
	return nRecs + nMoved, nil
}
