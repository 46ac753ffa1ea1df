package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Audit records carry text that callers chose (user agents, request ids,
// tool names, reasons quoting their input) or that identity providers chose
// (subjects, emails). PostgreSQL refuses some of it (NUL, invalid UTF-8), an
// operator's terminal would interpret some of it (escape sequences), and
// some of it is simply too large to keep. Every record is therefore cleaned
// before it is written: each text field becomes valid UTF-8 without NUL or
// control characters, cut (on a character boundary) to a bound. A record is
// never refused for its content. Argument digests are computed by the
// caller over the original bytes, before any of this.

// Bounds of the audit record's text fields, in bytes.
const (
	auditShortMax  = 128  // ids, tool names, providers, IP addresses
	auditSubjMax   = 320  // subjects and emails (RFC 5321 paths are at most 256)
	auditAgentMax  = 256  // user agents
	auditReasonMax = 1024 // reasons
)

// CleanText makes s safe to store and show: invalid UTF-8 (including
// overlong encodings and encoded surrogates) and control characters (NUL
// among them, but not tab) become U+FFFD, and the result is cut to at most
// limit bytes on a character boundary, ending in "…" when it was cut.
func CleanText(s string, limit int) string {
	clean := true
	for i, r := range s {
		if r == utf8.RuneError || (unicode.IsControl(r) && r != '\t') {
			if r == utf8.RuneError {
				if _, size := utf8.DecodeRuneInString(s[i:]); size == 3 {
					continue // a real U+FFFD
				}
			}
			clean = false
			break
		}
	}
	if !clean {
		var b strings.Builder
		for i, r := range s {
			if r == utf8.RuneError {
				if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
					b.WriteRune(utf8.RuneError)
					continue
				}
			}
			if unicode.IsControl(r) && r != '\t' {
				r = utf8.RuneError
			}
			b.WriteRune(r)
			if b.Len() > limit+utf8.UTFMax { // enough to cut from
				break
			}
		}
		s = b.String()
	}
	if len(s) <= limit {
		return s
	}
	const ellipsis = "…"
	cut := limit - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:max(cut, 0)] + ellipsis
}

// clean makes every text field of r safe to store (see [CleanText]).
func (r *AuditRecord) clean() {
	r.RequestID = CleanText(r.RequestID, auditShortMax)
	r.Decision = CleanText(r.Decision, auditShortMax)
	r.Tool = CleanText(r.Tool, auditShortMax)
	r.Subject = CleanText(r.Subject, auditSubjMax)
	r.Email = CleanText(r.Email, auditSubjMax)
	r.Provider = CleanText(r.Provider, auditShortMax)
	r.APIKeyID = CleanText(r.APIKeyID, auditShortMax)
	r.ClientIP = CleanText(r.ClientIP, auditShortMax)
	r.UserAgent = CleanText(r.UserAgent, auditAgentMax)
	r.Reason = CleanText(r.Reason, auditReasonMax)
	r.ArgsDigest = CleanText(r.ArgsDigest, auditShortMax)
	r.Via = CleanText(r.Via, auditShortMax)
	// The column is an integer: a count beyond it would fail the whole
	// batch and then its own record.
	r.Count = min(max(r.Count, 1), math.MaxInt32)
}

// reduced is r in a form the audit table cannot refuse: a known decision,
// printable ASCII in short fields, and a reason saying why it was reduced.
// It is written when r itself could not be (see [DB.InsertAuditRecords]).
func (r *AuditRecord) reduced(cause error) *AuditRecord {
	ascii := func(s string, n int) string {
		s = strings.Map(func(r rune) rune {
			if r < 0x20 || r > 0x7e {
				return '?'
			}
			return r
		}, s)
		if len(s) > n {
			s = s[:n]
		}
		return s
	}
	d := r.Decision
	switch d {
	case Allowed, Denied, RateLimited, Failed:
	default:
		d = Failed
	}
	why := "record reduced: the full record could not be stored"
	var pgErr interface{ SQLState() string }
	if errors.As(cause, &pgErr) {
		why += " (SQLSTATE " + pgErr.SQLState() + ")"
	}
	return &AuditRecord{
		RequestID: ascii(r.RequestID, 64), Decision: d, Tool: ascii(r.Tool, 64), Subject: ascii(r.Subject, 128),
		Provider: ascii(r.Provider, 32), APIKeyID: ascii(r.APIKeyID, 64), ClientIP: ascii(r.ClientIP, 64),
		Reason: why + "; " + ascii(r.Decision, 16) + " " + ascii(r.Reason, 256), ArgsDigest: ascii(r.ArgsDigest, 64),
		Count: max(r.Count, 1),
	}
}

// InsertAuditRecords writes records to t's audit log as
// [DB.WriteAuditEntries] does: all in one batch, and when that fails, one
// by one, each that still fails in its reduced form (see reduced), so one
// bad record never takes the others with it. It returns how many could not
// be stored in any form (with the last error): only a database that cannot
// be written at all loses them. Records are updated with their ids and
// times, and (when reduced) with what was stored; a record not stored has
// id 0 (and no time), whatever an attempt rolled back had returned.
func (db *DB) InsertAuditRecords(ctx context.Context, t *tenancy.Tenant, recs []*AuditRecord) (lost int, err error) {
	entries := make([]AuditEntry, len(recs))
	for i, r := range recs {
		entries[i] = AuditEntry{Tenant: t, Rec: r}
	}
	errs, _ := db.writeAuditEntries(ctx, entries, false)
	for i, e := range errs {
		if e != nil {
			lost++
			err = e
			recs[i].ID, recs[i].At = 0, time.Time{}
		}
	}
	return lost, err
}

// WriteAuditEntries writes entries, calls' records, into the audit intake
// (audit_intake.go): one INSERT, one round trip, one commit, whatever
// their tenants, on a control lane's connection. Each record gets its ID
// and At. When that INSERT fails for a reason other than the database
// being out of reach, the records go the way that follows, straight into
// their tenants' audit logs; when the intake is locked by another session,
// every flush goes that way for intakeSkip.
//
// That way writes them in one batch ([DB.InsertAuditBatch]) per control
// lane their tenants are on (one while few tenants are busy; see
// Options.ControlLanes), the lanes' batches in parallel, each a
// transaction of its own.
// When a batch fails while the database can be reached, each of its
// records is written alone ([DB.InsertAuditRecord], in its reduced form if
// need be), so one bad record never takes the others with it; when it
// cannot be reached, every entry of the batch fails at once, without a try
// per record. errs[i] is entry i's error, nil when it was stored; retried
// joins the errors of the parts that went that way, and of the batches
// whose records were then written one by one (worth a warning), each
// saying how many of entries its part held.
//
// On that way, a tenant whose audit log is locked by another session has
// its records fail with [ErrAuditLogBusy] after at most auditLockWait, and
// for a moment after at once, while the others' are written; after that
// moment one of its records comes back with [ErrAuditProbe], unwritten,
// and the caller must write it with
// [DB.ProbeAuditRecord] (see audit_busy.go).
func (db *DB) WriteAuditEntries(ctx context.Context, entries []AuditEntry) (errs []error, retried error) {
	if len(entries) > 0 && db.intakeOpen() {
		ids := make([]string, len(entries))
		for i, e := range entries {
			ids[i] = e.Tenant.ID
		}
		// One statement for the whole flush, on the first lane's call
		// connection (another's while it is taken): splitting it by lane,
		// as the way below does for the tenants' own tables, cost a commit
		// per lane for nothing, and one connection keeps the catalog
		// entries of every tenant's id sequence (writeIntake). The tenants
		// are noted for the lanes' count, as that way notes them.
		db.ctl.lanes(ids)
		err := db.writeIntake(ctx, entries, 0)
		switch {
		case err == nil:
			return make([]error, len(entries)), nil
		case lockTimedOut(err):
			// The lock waited for may be the intake's, or a tenant's id
			// sequence (held by its deletion): only the first stops the
			// next flushes from trying the intake.
			if db.intakeLocked(ctx) {
				db.skipIntake()
			}
		case Unavailable(err) || ctx.Err() != nil:
			errs = make([]error, len(entries))
			for i := range errs {
				errs[i] = err
			}
			return errs, nil
		}
		retried = fmt.Errorf("%d records written into their audit logs instead of the intake: %w", len(entries), err)
	}
	errs, r := db.writeAuditEntries(ctx, entries, true)
	return errs, errors.Join(retried, r)
}

// writeAuditEntries is WriteAuditEntries; calls says whether the records
// are calls', whose lock waits are bounded (else they wait, within ctx).
func (db *DB) writeAuditEntries(ctx context.Context, entries []AuditEntry, calls bool) (errs []error, retried error) {
	errs = make([]error, len(entries))
	if len(entries) == 0 {
		return errs, nil
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.Tenant.ID
	}
	lanes := db.ctl.lanes(ids)
	// The parts, in the order of their lanes' first entries.
	var parts [][]int // indexes into entries
	partOf := map[int]int{}
	for i, ln := range lanes {
		j, ok := partOf[ln]
		if !ok {
			j = len(parts)
			partOf[ln] = j
			parts = append(parts, nil)
		}
		parts[j] = append(parts[j], i)
	}
	retries := make([]error, len(parts))
	write := func(j int) {
		part := make([]AuditEntry, len(parts[j]))
		for k, i := range parts[j] {
			part[k] = entries[i]
		}
		perr, r := db.writeAuditPart(ctx, part, lanes[parts[j][0]], calls)
		for k, i := range parts[j] {
			errs[i] = perr[k]
		}
		if r != nil {
			r = fmt.Errorf("%d of %d records written one by one: %w", len(part), len(entries), r)
		}
		retries[j] = r
	}
	var wg sync.WaitGroup
	for j := 1; j < len(parts); j++ {
		wg.Go(func() { write(j) })
	}
	write(0)
	wg.Wait()
	return errs, errors.Join(retries...)
}

// writeAuditPart is writeAuditEntries for entries bound for one lane.
// With calls set, the records of a tenant whose audit log was found locked
// a moment ago fail at once with ErrAuditLogBusy and are not sent, and when
// the batch runs into such a lock, the tenant whose statement waited is
// marked so, its records fail, and the batch is sent again without them
// (audit_busy.go). Any other failure has the records written one by one.
func (db *DB) writeAuditPart(ctx context.Context, entries []AuditEntry, lane int, calls bool) (errs []error, retried error) {
	errs = make([]error, len(entries))
	send := make([]AuditEntry, 0, len(entries))
	sent := make([]int, 0, len(entries)) // send[k] is entries[sent[k]]
	for i, e := range entries {
		if calls {
			errs[i] = db.auditBatchGate(e.Tenant)
		}
		if errs[i] == nil {
			send, sent = append(send, e), append(sent, i)
		}
	}
	var err error
	for len(send) > 0 {
		err = db.insertAuditBatch(ctx, send, lane, calls)
		var locked *auditLockError
		if !errors.As(err, &locked) || ctx.Err() != nil {
			break
		}
		busy := db.markAuditBusy(locked.t)
		keep, kept := send[:0], sent[:0]
		for k, e := range send {
			if e.Tenant.ID == locked.t.ID {
				errs[sent[k]] = busy
			} else {
				keep, kept = append(keep, e), append(kept, sent[k])
			}
		}
		send, sent = keep, kept
		err = nil
	}
	switch {
	case err == nil:
		return errs, nil
	case Unavailable(err) || ctx.Err() != nil:
		for _, i := range sent {
			errs[i] = err
		}
		return errs, nil
	}
	for k, e := range send {
		e.Rec.ID = 0
		_, errs[sent[k]] = db.insertAuditRecord(ctx, e.Tenant, e.Rec, calls)
	}
	return errs, err
}

// InsertAuditRecord writes one record to t's audit log in a transaction of
// its own, in its reduced form if it cannot be written as it is (reduced
// reports that). An error means neither form could be written. It is a
// call's record: its lock waits are bounded, and while t's audit log is
// locked by another session it fails with [ErrAuditLogBusy] (see
// audit_busy.go).
func (db *DB) InsertAuditRecord(ctx context.Context, t *tenancy.Tenant, r *AuditRecord) (reduced bool, err error) {
	return db.insertAuditRecord(ctx, t, r, true)
}

// insertAuditRecord is InsertAuditRecord; calls says whether r is a
// call's record, whose lock waits are bounded (else it waits, within ctx).
func (db *DB) insertAuditRecord(ctx context.Context, t *tenancy.Tenant, r *AuditRecord, calls bool) (reduced bool, err error) {
	if calls {
		if err := db.auditBusyErr(t); err != nil {
			return false, err
		}
	}
	return db.writeAuditRecordAlone(ctx, t, r, calls)
}

// writeAuditRecordAlone is insertAuditRecord once t's mark (if any) lets
// the write go ahead; with calls set it settles the mark by the outcome.
func (db *DB) writeAuditRecordAlone(ctx context.Context, t *tenancy.Tenant, r *AuditRecord, calls bool) (reduced bool, err error) {
	lockWait := ""
	if calls {
		lockWait = auditLockWaitSQL
	}
	write := func(r *AuditRecord) error {
		err := db.withTenantMode(ctx, true, t, "BEGIN", lockWait, func(tx pgx.Tx) error { return InsertAudit(ctx, tx, r) })
		if calls {
			err = db.auditBusyAfter(t, err)
		}
		return err
	}
	err = write(r)
	if err == nil {
		return false, nil
	}
	if errors.Is(err, ErrAuditLogBusy) {
		return false, err
	}
	red := r.reduced(err)
	if e := write(red); e != nil {
		return false, fmt.Errorf("storing an audit record: %w (reduced form: %w)", err, e)
	}
	*r = *red
	return true, nil
}
