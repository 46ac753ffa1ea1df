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
// Each connection keeps at most Options.PreparedStatements statements,
// least recently used first out (DEALLOCATEd on the next preparation);
// statements seen fewer than PrepareAfter times are only counted; a
// statement is never deallocated before the message that runs it by name
// is sent (a bound smaller than one message's statements runs the rest of
// them unprepared). A
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
	// prepared statements: list_todos' statement with its generic plan
	// took ~41 KB of a backend's memory (pg_backend_memory_contexts, 300
	// tenants' statements prepared in one session, PostgreSQL 15), so 128
	// cost at most ~5 MB per connection, beside the ~34 KB of caches per
	// tenant the connection has served; issue 17 bounds a connection at
	// 64 MB.
	DefaultPreparedStatements = 128
	// DefaultPrepareAfter: a statement is prepared on its second use on a
	// connection; one that is seen once (a rare tenant, a one-off filter
	// combination) costs no preparation and no slot.
	DefaultPrepareAfter = 2
)

// prepareRetryAfter is how many uses on a connection a statement whose
// preparation failed runs unprepared before it is prepared again.
const prepareRetryAfter = 64

// tenantStatementsKey keys a connection's [tenantStatements] in its
// pgconn CustomData.
const tenantStatementsKey = "gatehouse.tenant-statements"

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
}

// tenantStatements is one connection's statements, most recently used
// first. Only the connection's current holder touches it.
type tenantStatements struct {
	lru   list.List // of *stmtEntry
	byKey map[stmtKey]*list.Element
	// stale are prepared names dropped and not yet deallocated: true for
	// one evicted (still good to use if its statement comes back), false
	// for one PostgreSQL refused (see planChanged).
	stale map[string]bool
	// pinned are the names handed out for the message being built (see
	// startMessage): that message runs them by name, so none of them is
	// deallocated before it is sent.
	pinned map[string]bool
}

// statementsOf returns conn's statement cache, creating it.
func statementsOf(conn *pgx.Conn) *tenantStatements {
	data := conn.PgConn().CustomData()
	if s, ok := data[tenantStatementsKey].(*tenantStatements); ok {
		return s
	}
	s := &tenantStatements{byKey: map[stmtKey]*list.Element{}, stale: map[string]bool{}, pinned: map[string]bool{}}
	data[tenantStatementsKey] = s
	return s
}

// startMessage says that a new message to PostgreSQL is being built on
// conn: the names handed out for the previous one, sent by now, may be
// deallocated again.
func (db *DB) startMessage(conn *pgx.Conn) {
	if db.pooled || db.preparedCap <= 0 {
		return
	}
	clear(statementsOf(conn).pinned)
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

// tenantStatement returns the prepared name of sql in schema on conn, or
// sql itself (see tenantSQL).
func (db *DB) tenantStatement(ctx context.Context, conn *pgx.Conn, schema, sql string, inTx bool) string {
	if db.pooled || db.preparedCap <= 0 {
		return sql
	}
	s := statementsOf(conn)
	key := stmtKey{schema, sql}
	el, ok := s.byKey[key]
	if !ok {
		e := &stmtEntry{key: key}
		el = s.lru.PushFront(e)
		s.byKey[key] = el
		for s.lru.Len() > db.preparedCap {
			old := s.lru.Back()
			oe := old.Value.(*stmtEntry)
			s.lru.Remove(old)
			delete(s.byKey, oe.key)
			if oe.name != "" {
				s.stale[oe.name] = true
			}
		}
	} else {
		s.lru.MoveToFront(el)
	}
	e := el.Value.(*stmtEntry)
	if e.name != "" {
		s.pinned[e.name] = true
		return e.name
	}
	e.uses++
	if e.uses < db.prepareAfter {
		return sql
	}
	name := statementName(key)
	if s.stale[name] {
		// Evicted and back before it was deallocated: still prepared and
		// good.
		delete(s.stale, name)
		e.name = name
		s.pinned[name] = true
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
	e.name = name
	s.pinned[name] = true
	return name
}

// prepareTenant deallocates s's stale statements and prepares sql as name
// with search_path set to schema. It returns an error only when sql is not
// prepared; errPinned when a stale statement is pinned (the connection
// would hold more than its bound).
func (db *DB) prepareTenant(ctx context.Context, conn *pgx.Conn, schema string, s *tenantStatements, name, sql string, inTx bool) error {
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

// forgetTenantStatements drops conn's prepared statements of schema (after
// PostgreSQL refused one whose result type changed): they are deallocated
// at the next preparation and run unprepared until seen again.
func forgetTenantStatements(conn *pgx.Conn, schema string) {
	s := statementsOf(conn)
	for el := s.lru.Front(); el != nil; {
		next := el.Next()
		e := el.Value.(*stmtEntry)
		if e.key.schema == schema {
			s.lru.Remove(el)
			delete(s.byKey, e.key)
			if e.name != "" {
				s.stale[e.name] = false
			}
		}
		el = next
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
