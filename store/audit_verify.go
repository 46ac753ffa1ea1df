package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// AuditReport is the outcome of verifying a tenant's audit chain.
type AuditReport struct {
	Verified int // chained records whose links check out
	Pending  int // records not chained yet (the chainer runs every second), in the log or the audit intake
	// Refused are records of the tenant's calls that its audit log refused
	// in their full and their reduced form, kept in the audit intake
	// (gatehouse.audit_intake, with the reason in its refused column) and
	// not chained: the log's own constraints, or the log gone.
	Refused int
	Problem string // empty when the chain is intact; else the first problem found
	Seq     int64  // chain position of the first bad record, if any
	ID      int64  // its id
	// UnknownKey is set when the chain could not be checked here: record
	// Seq was chained with this key (its fingerprint), which was not given.
	// Tampering cannot be told apart from a missing key.
	UnknownKey string
	// Keys are the stretches of the chain each key chained, in chain
	// order: more than one after a rotation of GATEHOUSE_AUDIT_KEY.
	Keys []AuditKeySpan
}

// AuditKeySpan is a stretch of the chain chained with one key.
type AuditKeySpan struct {
	KeyID string `json:"key_id"` // the key's fingerprint (AuditKey.ID)
	First int64  `json:"first"`  // chain positions
	Last  int64  `json:"last"`
}

// OK reports whether the chain is intact.
func (r *AuditReport) OK() bool { return r.Problem == "" }

// VerifyAudit walks a tenant's audit chain in order and reports the first
// record that was edited, deleted, inserted or reordered, and records cut
// off its end (against the head kept in the control schema).
//
// keys are the chain's keys, newest first (GATEHOUSE_AUDIT_KEY while
// rotating it): each record is checked with the key it names. The chain
// may only move to newer keys: a record chained with an older key after
// one chained with a newer key is refused, so a leaked retired key cannot
// be used to write records after the rotation.
func (db *DB) VerifyAudit(ctx context.Context, t *tenancy.Tenant, keys ...AuditKey) (*AuditReport, error) {
	table := pgx.Identifier{t.Schema, "audit_log"}.Sanitize()
	rep := &AuditReport{}
	rank := map[string]int{} // key id → position in keys (0: newest)
	for i, k := range keys {
		if _, dup := rank[k.ID]; !dup {
			rank[k.ID] = i
		}
	}
	err := beginTxFunc(ctx, db.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		// Pending: unchained in the audit log, or still in the intake
		// (audit_intake.go).
		var inIntake int
		if err := tx.QueryRow(ctx, intakeCountsSQL, t.ID).Scan(&inIntake, &rep.Refused); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE chain_seq IS NULL").Scan(&rep.Pending); err != nil {
			return err
		}
		rep.Pending += inIntake
		rows, err := tx.Query(ctx, "SELECT "+auditColumns+", coalesce(key_id, ''), coalesce(prev_hash, ''), coalesce(hash, '') FROM "+table+
			" WHERE chain_seq IS NOT NULL ORDER BY chain_seq")
		if err != nil {
			return err
		}
		defer rows.Close()
		var want int64 = 1
		prev := []byte{}
		for rows.Next() {
			var r AuditRecord
			var keyID string
			var prevHash, hash []byte
			if err := rows.Scan(&r.ID, &r.At, &r.RequestID, &r.Decision, &r.Tool, &r.Subject, &r.Email, &r.Provider, &r.APIKeyID,
				&r.ClientIP, &r.UserAgent, &r.Reason, &r.ArgsDigest, &r.Count, &r.ChainSeq, &r.Via, &keyID, &prevHash, &hash); err != nil {
				return err
			}
			bad := func(format string, args ...any) {
				rep.Problem, rep.Seq, rep.ID = fmt.Sprintf(format, args...), r.ChainSeq, r.ID
			}
			at, known := rank[keyID]
			var last *AuditKeySpan
			if n := len(rep.Keys); n > 0 {
				last = &rep.Keys[n-1]
			}
			switch {
			case r.ChainSeq != want:
				bad("records %d to %d of the chain are missing (deleted)", want, r.ChainSeq-1)
			case !known:
				bad("unverifiable here: record %d (id %d) is chained with key %s, which is not configured (tampering cannot be told apart from a missing key); "+
					"verify with that GATEHOUSE_AUDIT_KEY too (comma-separated, newest first)", r.ChainSeq, r.ID, keyID)
				rep.UnknownKey = keyID
			case last != nil && last.KeyID != keyID && at > rank[last.KeyID]:
				bad("record %d (id %d) was chained with the older key %s after records chained with the newer key %s: it was written with a retired key", r.ChainSeq, r.ID, keyID, last.KeyID)
			case !bytes.Equal(prevHash, prev):
				bad("record %d (id %d) does not follow record %d: records were reordered or inserted", r.ChainSeq, r.ID, r.ChainSeq-1)
			case !bytes.Equal(keys[at].link(prev, r.ChainSeq, &r), hash):
				bad("record %d (id %d) was altered: its contents do not match its hash", r.ChainSeq, r.ID)
			}
			if !rep.OK() {
				return nil
			}
			if last == nil || last.KeyID != keyID {
				rep.Keys = append(rep.Keys, AuditKeySpan{KeyID: keyID, First: r.ChainSeq})
			}
			rep.Keys[len(rep.Keys)-1].Last = r.ChainSeq
			rep.Verified++
			prev, want = hash, want+1
		}
		if err := rows.Err(); err != nil {
			return err
		}
		var headSeq int64
		var headHash []byte
		err = tx.QueryRow(ctx, "SELECT chain_seq, hash FROM gatehouse.audit_heads WHERE tenant_id = $1", t.ID).Scan(&headSeq, &headHash)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if want > 1 {
				rep.Problem = "the chain's head record in the control schema is missing"
			}
			return nil
		case err != nil:
			return err
		case headSeq > want-1:
			rep.Problem, rep.Seq = fmt.Sprintf("records %d to %d were removed from the end of the chain", want, headSeq), want
		case headSeq < want-1 || !bytes.Equal(headHash, prev):
			rep.Problem, rep.Seq = fmt.Sprintf("the chain does not end at its recorded head (record %d)", headSeq), headSeq
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("verifying the audit log of %s: %w", t.Key, err)
	}
	return rep, nil
}

// AuditFilter selects audit records, newest first.
type AuditFilter struct {
	Since, Until time.Time // zero: unbounded
	Actor        string    // subject or email (case-insensitive)
	Tool         string
	Decision     string
	BeforeID     int64 // page after this id (0: from the newest)
	Limit        int
}

// where is the query selecting the records f's time range, actor, tool
// and decision choose (not f.Limit or f.BeforeID), and its arguments: one
// place for the filter rules, shared by the paged and the streamed reads.
func (f AuditFilter) where() (string, pgx.NamedArgs) {
	args := pgx.NamedArgs{}
	q := "SELECT " + auditColumns + " FROM audit_log WHERE true"
	add := func(cond, name string, v any) { q += " AND " + cond; args[name] = v }
	if !f.Since.IsZero() {
		add("at >= @since", "since", f.Since)
	}
	if !f.Until.IsZero() {
		add("at < @until", "until", f.Until)
	}
	if f.Actor != "" {
		add("(subject = @actor OR lower(email) = lower(@actor))", "actor", f.Actor)
	}
	if f.Tool != "" {
		add("tool = @tool", "tool", f.Tool)
	}
	if f.Decision != "" {
		add("decision = @decision", "decision", f.Decision)
	}
	return q, args
}

// FindAudit returns up to f.Limit records of the tenant of tx and whether
// more follow.
func FindAudit(ctx context.Context, tx pgx.Tx, f AuditFilter) ([]*AuditRecord, bool, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	q, args := f.where()
	args["limit"] = f.Limit + 1
	if f.BeforeID > 0 {
		q += " AND id < @before"
		args["before"] = f.BeforeID
	}
	rows, _ := tx.Query(ctx, q+" ORDER BY id DESC LIMIT @limit", args)
	recs, err := pgx.CollectRows(rows, scanAudit)
	if err != nil || len(recs) <= f.Limit {
		return recs, false, err
	}
	return recs[:f.Limit], true, nil
}

// AuthFailure is an aggregate of failed authentications from one address
// for one reason in one minute.
type AuthFailure struct {
	Window      time.Time
	ClientIP    string
	Reason      string
	UserAgent   string
	Count       int64
	First, Last time.Time
}

// RecordAuthFailures adds aggregates to the control-plane record. Their
// text is cleaned first (see [CleanText]); when the batch fails, each is
// written alone, so one that cannot be stored never takes the others with
// it, and one that still fails is stored with its reason and user agent
// reduced to printable ASCII.
func (db *DB) RecordAuthFailures(ctx context.Context, fs []AuthFailure) error {
	const q = `INSERT INTO gatehouse.auth_failures (window_start, client_ip, reason, count, first_at, last_at, user_agent)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (window_start, client_ip, reason) DO UPDATE SET count = auth_failures.count + excluded.count,
				first_at = least(auth_failures.first_at, excluded.first_at), last_at = greatest(auth_failures.last_at, excluded.last_at)`
	batch := &pgx.Batch{}
	for i := range fs {
		f := &fs[i]
		f.ClientIP, f.Reason, f.UserAgent = CleanText(f.ClientIP, auditShortMax), CleanText(f.Reason, auditReasonMax), CleanText(f.UserAgent, auditAgentMax)
		batch.Queue(q, f.Window, f.ClientIP, f.Reason, f.Count, f.First, f.Last, f.UserAgent)
	}
	err := db.pool.SendBatch(ctx, batch).Close()
	if err == nil {
		return nil
	}
	var errs []error
	for _, f := range fs {
		if _, e := db.pool.Exec(ctx, q, f.Window, f.ClientIP, f.Reason, f.Count, f.First, f.Last, f.UserAgent); e == nil {
			continue
		}
		red := (&AuditRecord{ClientIP: f.ClientIP, Reason: f.Reason, UserAgent: f.UserAgent}).reduced(err)
		if _, e := db.pool.Exec(ctx, q, f.Window, red.ClientIP, red.Reason, f.Count, f.First, f.Last, red.UserAgent); e != nil {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d failed-authentication records not stored: %w", len(errs), len(fs), errors.Join(errs...))
	}
	return nil
}
