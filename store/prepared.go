package store

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Tools' statements, prepared per tenant and connection.
//
// Planning a tool's statement cost PostgreSQL more than running it: a
// profile of list_todos at c=16 put parse, analysis and planning at ~37%
// of PostgreSQL's CPU per call. So the statements a tool sends through
// [DB.InTenantReadOnly] and [DB.InTenantWrite] are prepared on the
// connection that runs them, once they have been seen there before
// (Options.PrepareAfter uses), and run by name afterwards.
//
// A statement is prepared for one tenant schema: its key is (schema, SQL)
// and it is parsed with search_path set to that schema, so its names bind
// to that tenant's tables. PostgreSQL re-analyses a prepared statement
// whose search_path differs from the one it was prepared under, and
// re-plans it when a table it uses changes (PostgreSQL 15 source,
// plancache.c, RevalidateCachedQuery), so a tenant on another migration
// version, or a migration running while a connection holds the statement,
// gets a statement bound to its own tables, never another tenant's.
// Privileges are checked when the statement runs, as the role the
// prelude sets ([readOpenSQL], [writeOpenSQL]); preparing changes nothing
// in what a tenant role may read or write.
//
// Each connection keeps at most Options.PreparedStatements statements. A
// statement is prepared once it has been seen PrepareAfter times there;
// while the connection holds its bound, it takes the place of the
// prepared statement used least (uses since the last ageing, see
// ageEvery) only if it has been used more than that one, else it runs
// unprepared and keeps counting (an admission by frequency, as in
// TinyLFU: Einziger, Friedman and Manes, ACM TOS 2017). A least recently
// used order failed here: a connection serving more tenants than its
// bound (250–500 of 2,000 busy tenants with tenant affinity) evicted each
// statement before it came back, and spread calls paid a preparation (a
// transaction of four round trips) and a plan on top of every call (0.27×
// the throughput over 10 tenants on the store, against 0.56–0.70× with
// every statement prepared; bench/README.md). A statement dropped is
// DEALLOCATEd on the next preparation; statements seen but not prepared
// are only counted, in Gatehouse's memory (at most seenPerPrepared times
// the bound). A statement is never deallocated before the message that
// runs it by name is sent (a bound smaller than one message's statements
// runs the rest of them unprepared). A
// statement whose result columns change under it (a migration changing a
// column's type; PostgreSQL refuses with "cached plan must not change
// result type"), or whose parameters no longer fit (a parameter keeps the
// type it was prepared with; see staleStatement), is dropped with the
// tenant's other statements on the connection and the statement or write
// is run once more, unprepared. Behind a transaction pooler nothing is prepared: the next
// transaction may run on another backend.

// Defaults of Options.PreparedStatements and Options.PrepareAfter.
const (
	// DefaultPreparedStatements bounds each tenant-pool connection's
	// prepared statements, chosen by measurement (bench/tenants, list_todos
	// through InTenantReadOnly over 2,000 of 10,000 tenants, 8 + 8
	// connections in 8 lanes, bench/README.md): each backend met ~500 of
	// the tenants and list_todos' statement with its generic plan took
	// ~43 KB (pg_backend_memory_contexts), beside ~80 KB of catalog and
	// relation caches per tenant met. 128 left the spread calls at 0.30×
	// the rate over 10 tenants; 384 ran them at 0.47–0.64× (three runs)
	// with the backends at 56–57 MB (at most 60), under issue 17's 64 MB;
	// 512 at 0.55× and 61 MB (at most 67).
	DefaultPreparedStatements = 384
	// DefaultPrepareAfter: a statement is prepared on its second use on a
	// connection; one that is seen once (a rare tenant, a one-off filter
	// combination) costs no preparation and no slot.
	DefaultPrepareAfter = 2
)

// DefaultControlPreparedStatements bounds each control lane connection's
// prepared audit statements (Options.ControlPreparedStatements). A
// tenant's three (its group-committed INSERT, its chain pass's SELECT and
// UPDATE) cost PostgreSQL 57, 17 and 49 µs prepared, against 128, 82 and
// 175 µs planned at each run, and hold ~40 KB each with their generic
// plans (measured on 640 of 10,000 tenants). 256 is what issue 17's memory
// target allows (every connection ≤ 64 MB after one call in each of
// 12,600 tenants, bench/tenants): the largest control backend held 36 MB
// with 256, 69 MB with 384, 70 MB with 512 (34–45 MB with none). With 256,
// against none, in five invocations of bench/tenants: calls over 10
// tenants cost PostgreSQL 0.68–0.73× the CPU and ran at 1.05–1.22× the
// rate; calls spread over 2,000 tenants, of which each connection holds a
// fraction of the statements, at 0.88–1.16× (median 1.00×; bench/README.md).
const DefaultControlPreparedStatements = 256

// prepareRetryAfter is how many uses on a connection a statement whose
// preparation failed runs unprepared before it is prepared again.
const prepareRetryAfter = 64

// seenPerPrepared bounds the statements a connection counts without
// preparing them, as a multiple of its bound of prepared ones (the least
// recently seen is forgotten first).
const seenPerPrepared = 4

// ageEvery: after this many uses per prepared-statement slot on a
// connection, every statement's count of uses is halved, so that a
// statement used often long ago gives its place to one used often now.
const ageEvery = 8

// The keys of a connection's [tenantStatements] in its pgconn
// CustomData: a tenant-pool connection's (the tools' statements) and a
// control lane connection's (the audit statements, lanes.go).
const (
	tenantStatementsKey = "gatehouse.tenant-statements"
	laneStatementsKey   = "gatehouse.lane-statements"
)

// stmtKey is a statement of one tenant schema.
type stmtKey struct{ schema, sql string }

// stmtEntry is a statement seen on a connection: name is set once it is
// prepared; uses counts its uses until then, from -prepareRetryAfter
// after a preparation failed (the statement runs unprepared meanwhile,
// and a cause that has passed, such as a table a migration had not yet
// created, costs one failed preparation per that many uses at most).
type stmtEntry struct {
	key  stmtKey
	name string
	uses int
	// seen is the entry's element in tenantStatements.seen while it is
	// not prepared.
	seen *list.Element
}

// tenantStatements is one connection's statements. Only the connection's
// current holder touches it.
type tenantStatements struct {
	byKey map[stmtKey]*stmtEntry
	// prepared holds the entries with a name (at most the bound); seen
	// the others, most recently used first (at most seenPerPrepared times
	// the bound).
	prepared map[*stmtEntry]struct{}
	seen     list.List // of *stmtEntry
	// sinceAge counts uses since the counts were last halved.
	sinceAge int
	// stale are prepared names dropped and not yet deallocated: true for
	// one evicted (still good to use if its statement comes back), false
	// for one PostgreSQL refused (see planChanged).
	stale map[string]bool
	// pinned are the names handed out for the message being built (see
	// startMessage): that message runs them by name, so none of them is
	// deallocated before it is sent.
	pinned map[string]bool
	// bound is the most statements prepared on the connection (none when
	// zero).
	bound int
	// qualified: the statements name their tables with their schema
	// (the control lanes'), so they are prepared under the connection's
	// own search_path, the one they run under, rather than the tenant's;
	// and once bound are prepared, the others run unprepared (no
	// eviction, see cachedStatement).
	qualified bool
}

// statementsAt returns conn's statement cache under key, creating it
// with bound and qualified.
func statementsAt(conn *pgx.Conn, key string, bound int, qualified bool) *tenantStatements {
	data := conn.PgConn().CustomData()
	if s, ok := data[key].(*tenantStatements); ok {
		return s
	}
	s := &tenantStatements{byKey: map[stmtKey]*stmtEntry{}, prepared: map[*stmtEntry]struct{}{}, stale: map[string]bool{}, pinned: map[string]bool{},
		bound: bound, qualified: qualified}
	data[key] = s
	return s
}

// statementsOf returns the tools' statement cache of tenant-pool
// connection conn (bound: Options.PreparedStatements).
func (db *DB) statementsOf(conn *pgx.Conn) *tenantStatements {
	return statementsAt(conn, tenantStatementsKey, db.preparedCap, false)
}

// laneStatementsOf returns the audit statements' cache of control lane
// connection conn (bound: Options.ControlPreparedStatements).
func (db *DB) laneStatementsOf(conn *pgx.Conn) *tenantStatements {
	return statementsAt(conn, laneStatementsKey, db.lanePreparedCap, true)
}

// startMessage says that a new message to PostgreSQL is being built on
// tenant-pool connection conn: the names handed out for the previous one,
// sent by now, may be deallocated again.
func (db *DB) startMessage(conn *pgx.Conn) {
	if db.pooled || db.preparedCap <= 0 {
		return
	}
	clear(db.statementsOf(conn).pinned)
}

// errPinned: preparing a statement would first deallocate one that the
// message being built runs by name (a bound smaller than the message's
// statements); the statement runs unprepared this time.
var errPinned = errors.New("a statement the message runs is due to be deallocated")

// statementName is the prepared statement's name for key: the same on
// every connection, distinct per schema and text.
func statementName(key stmtKey) string {
	h := sha256.New()
	h.Write([]byte(key.schema))
	h.Write([]byte{0})
	h.Write([]byte(key.sql))
	return "gh_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// tenantSQL returns what to send for the statement sql with args in
// tenant schema on conn: the name of its prepared statement and its
// arguments, or sql and args as they are (not used often enough yet,
// preparing off or failed, or args holding a pgx option other than a
// QueryRewriter such as pgx.NamedArgs, which is applied here). inTx says
// conn is inside the tenant's transaction, its search_path already set (a
// write); otherwise the statement is prepared in a short transaction of
// its own. It never fails: a statement that cannot be prepared runs as it
// is, and PostgreSQL or pgx reports its error then.
func (db *DB) tenantSQL(ctx context.Context, conn *pgx.Conn, schema, sql string, args []any, inTx bool) (string, []any) {
	if db.pooled || db.preparedCap <= 0 {
		return sql, args
	}
	psql, pargs, ok := rewritten(ctx, conn, sql, args)
	if !ok {
		return sql, args
	}
	if name := db.tenantStatement(ctx, conn, schema, psql, inTx); name != psql {
		return name, pargs
	}
	return sql, args
}

// rewritten applies a leading pgx.QueryRewriter of args (pgx.NamedArgs),
// as pgx would before sending: the statement to prepare is the rewritten
// one. ok is false when args hold another pgx option (an exec mode,
// result formats), whose statements are left to pgx.
func rewritten(ctx context.Context, conn *pgx.Conn, sql string, args []any) (string, []any, bool) {
	if len(args) == 0 {
		return sql, args, true
	}
	switch a := args[0].(type) {
	case pgx.QueryRewriter:
		s, rest, err := a.RewriteQuery(ctx, conn, sql, args[1:])
		if err != nil || (len(rest) > 0 && isOption(rest[0])) {
			return sql, args, false
		}
		return s, rest, true
	case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
		return sql, args, false
	}
	return sql, args, true
}

func isOption(a any) bool {
	switch a.(type) {
	case pgx.QueryRewriter, pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
		return true
	}
	return false
}

// tenantStatement returns the prepared name of sql in schema on
// tenant-pool connection conn, or sql itself (see tenantSQL).
func (db *DB) tenantStatement(ctx context.Context, conn *pgx.Conn, schema, sql string, inTx bool) string {
	if db.pooled || db.preparedCap <= 0 {
		return sql
	}
	return db.cachedStatement(ctx, conn, db.statementsOf(conn), schema, sql, inTx)
}

// cachedStatement counts one use of sql in schema in s, conn's cache, and
// returns its prepared name or sql itself: the admission described at the
// top of this file.
func (db *DB) cachedStatement(ctx context.Context, conn *pgx.Conn, s *tenantStatements, schema, sql string, inTx bool) string {
	if db.pooled || s.bound <= 0 {
		return sql
	}
	return db.admit(ctx, conn, s, s.use(stmtKey{schema, sql}), inTx)
}

// use counts one use of key in s, creating its entry (and forgetting the
// least recently seen unprepared one beyond seenPerPrepared times the
// bound), and returns the entry.
func (s *tenantStatements) use(key stmtKey) *stmtEntry {
	s.age(s.bound)
	e, ok := s.byKey[key]
	if !ok {
		e = &stmtEntry{key: key}
		e.seen = s.seen.PushFront(e)
		s.byKey[key] = e
		for s.seen.Len() > seenPerPrepared*s.bound {
			old := s.seen.Remove(s.seen.Back()).(*stmtEntry)
			delete(s.byKey, old.key)
		}
	}
	e.uses++
	if e.name == "" {
		s.seen.MoveToFront(e.seen)
	}
	return e
}

// admit returns e's prepared name (pinned for the message being built),
// preparing it on conn first once it has been used db.prepareAfter times
// and s has room for it (or, on the tenant pool, it has been used more
// than the least used prepared one), or else e's text.
func (db *DB) admit(ctx context.Context, conn *pgx.Conn, s *tenantStatements, e *stmtEntry, inTx bool) string {
	schema, sql := e.key.schema, e.key.sql
	if e.name != "" {
		s.pinned[e.name] = true
		return e.name
	}
	if e.uses < db.prepareAfter {
		return sql
	}
	if len(s.prepared) >= s.bound {
		if s.qualified {
			// The control lanes' caches evict nothing: their statements
			// are used about evenly (every busy tenant's, once a flush or
			// a chain pass), so a statement prepared in place of another
			// was mostly dropped again before its next use, a preparation
			// and a deallocation for nothing (measured: bench/README.md).
			// The connection is replaced after ControlConnMaxTenants
			// tenants, or an hour, with an empty cache.
			return sql
		}
		victim := s.leastUsed()
		if victim == nil || victim.uses >= e.uses {
			// Not used more than any statement prepared here: it runs
			// unprepared and keeps counting.
			return sql
		}
		s.unprepare(victim, true)
	}
	name := statementName(e.key)
	if s.stale[name] {
		// Dropped and back before it was deallocated: still prepared
		// and good. The others dropped go now, as a preparation would
		// have them go, so that the bound holds.
		delete(s.stale, name)
		if err := deallocateStale(ctx, conn, s); err != nil {
			s.stale[name] = true
			return sql
		}
		s.setPrepared(e, name)
		return name
	}
	if err := db.prepareTenant(ctx, conn, schema, s, name, sql, inTx); errors.Is(err, errPinned) {
		// Prepared later, once the message that needs the other one is
		// sent: the bound holds.
		return sql
	} else if err != nil {
		if ctx.Err() == nil {
			db.log.Debug("preparing a tenant statement failed; it runs unprepared on this connection", "err", err)
		}
		e.uses = -prepareRetryAfter
		return sql
	}
	s.setPrepared(e, name)
	return name
}

// age halves every statement's count of uses once per ageEvery uses per
// slot of the bound (the counts of statements whose preparation failed,
// negative, are left to run up).
func (s *tenantStatements) age(bound int) {
	s.sinceAge++
	if s.sinceAge < ageEvery*bound {
		return
	}
	s.sinceAge = 0
	for _, e := range s.byKey {
		if e.uses > 0 {
			e.uses /= 2
		}
	}
}

// leastUsed returns the prepared statement with the fewest uses that the
// message being built does not run, or nil.
func (s *tenantStatements) leastUsed() *stmtEntry {
	var least *stmtEntry
	for e := range s.prepared {
		if !s.pinned[e.name] && (least == nil || e.uses < least.uses) {
			least = e
		}
	}
	return least
}

// setPrepared records e as prepared under name, pinned for the message
// being built.
func (s *tenantStatements) setPrepared(e *stmtEntry, name string) {
	s.seen.Remove(e.seen)
	e.seen, e.name = nil, name
	s.prepared[e] = struct{}{}
	s.pinned[name] = true
}

// unprepare drops e's prepared statement (DEALLOCATEd at the next
// preparation; good, says stale, if it is still good to run should its
// statement come back first) and forgets e.
func (s *tenantStatements) unprepare(e *stmtEntry, good bool) {
	delete(s.prepared, e)
	delete(s.byKey, e.key)
	s.stale[e.name] = good
}

// prepareTenant deallocates s's stale statements and prepares sql as name
// with search_path set to schema. It returns an error only when sql is not
// prepared; errPinned when a stale statement is pinned (the connection
// would hold more than its bound).
func (db *DB) prepareTenant(ctx context.Context, conn *pgx.Conn, schema string, s *tenantStatements, name, sql string, inTx bool) error {
	if err := deallocateStale(ctx, conn, s); err != nil {
		return err
	}
	if s.qualified {
		// Prepared under the connection's own search_path, the one the
		// statement runs under: prepared under the tenant's, it would be
		// analysed again at every run (plancache.c, RevalidateCachedQuery).
		// Parsing it locks its tables, so (on an idle connection: the
		// control lanes') it waits for a lock no longer than the lanes'
		// audit writes do (audit_busy.go).
		if inTx {
			_, err := conn.Prepare(ctx, name, sql)
			return err
		}
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, lockWaitSQL, auditLockWaitSQL); err != nil {
				return err
			}
			_, err := conn.Prepare(ctx, name, sql)
			return err
		})
	}
	if inTx {
		// In a savepoint: a statement that cannot be prepared must not
		// abort the write's transaction, or the write would fail with
		// "current transaction is aborted" instead of the statement's own
		// error when it runs unprepared.
		if _, err := conn.Exec(ctx, "SAVEPOINT gatehouse_prepare"); err != nil {
			return err
		}
		if _, err := conn.Prepare(ctx, name, sql); err != nil {
			_, _ = conn.Exec(ctx, "ROLLBACK TO SAVEPOINT gatehouse_prepare")
			return err
		}
		_, err := conn.Exec(ctx, "RELEASE SAVEPOINT gatehouse_prepare")
		return err
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, setSearchPathSQL, pgx.Identifier{schema}.Sanitize()); err != nil {
			return err
		}
		_, err := conn.Prepare(ctx, name, sql)
		return err
	})
}

// deallocateStale deallocates s's dropped statements but those the message
// being built runs by name; errPinned if there were such.
func deallocateStale(ctx context.Context, conn *pgx.Conn, s *tenantStatements) error {
	pinned := false
	for stale := range s.stale {
		if s.pinned[stale] {
			pinned = true
			continue
		}
		if err := conn.Deallocate(ctx, stale); err != nil {
			return err
		}
		delete(s.stale, stale)
	}
	if pinned {
		return errPinned
	}
	return nil
}

// forgetTenantStatements drops tenant-pool connection conn's prepared
// statements of schema (after PostgreSQL refused one whose result type
// changed): they are deallocated at the next preparation and run
// unprepared until seen again.
func forgetTenantStatements(conn *pgx.Conn, schema string) {
	forgetStatements(conn, tenantStatementsKey, schema)
}

// forgetStatements drops the prepared statements of schema in conn's cache
// under key, if it has one (see forgetTenantStatements).
func forgetStatements(conn *pgx.Conn, cache, schema string) {
	s, ok := conn.PgConn().CustomData()[cache].(*tenantStatements)
	if !ok {
		return
	}
	for key, e := range s.byKey {
		if key.schema != schema {
			continue
		}
		if e.name != "" {
			s.unprepare(e, false)
			continue
		}
		s.seen.Remove(e.seen)
		delete(s.byKey, key)
	}
}

// staleStatement reports whether err, met by a call that ran some of the
// tenant's statements by their prepared names, may be PostgreSQL refusing
// a prepared form rather than the statement itself, so that the call is
// worth running once more unprepared: the statement's result columns
// changed (planChanged), or re-analysing it against the tables as they
// are now failed (SQLSTATE class 42, syntax error or access rule
// violation) where the statement analysed afresh may not: a prepared
// statement's parameters keep the types they were given when it was
// prepared (PostgreSQL documentation, PREPARE), so a migration changing
// the type of a column compared with a parameter leaves it refused with
// "operator does not exist: text = date" for as long as it is kept.
// Insufficient privilege (42501) is left out: it is checked when a
// statement runs, prepared or not.
func staleStatement(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return planChanged(err) || (strings.HasPrefix(pe.Code, "42") && pe.Code != "42501")
}

// planChanged reports whether err is PostgreSQL refusing a prepared
// statement whose result columns changed since it was prepared (SQLSTATE
// 0A000, "cached plan must not change result type").
func planChanged(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "0A000" && strings.Contains(pe.Message, "cached plan must not change result type")
}
