package store

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// The query tool runs SQL a caller wrote, so it cannot run in WithTenant:
// inside such a transaction RESET ROLE returns to our own user. It runs on
// a connection of its own whose session user IS the tenant's query role:
//
//   - that role may SELECT the tenant's workspace tables and nothing else
//     (not the audit log, no other schema) and is a member of no role, so
//     SET ROLE, RESET ROLE and set_config('role', …) have nowhere to go;
//   - it logs in with a password derived from an instance secret, installed
//     as a SCRAM verifier (the password itself never reaches the server);
//   - the statement runs as DECLARE … CURSOR FOR <statement> in a READ ONLY
//     transaction: Postgres's own parser admits exactly one SELECT, VALUES
//     or TABLE query there, and FETCH reads only as many rows as we take;
//   - a statement timeout, a row and a byte limit, and role settings
//     (temp_file_limit, connection limit) bound what one query may cost.

// ErrQueryUnavailable means this database cannot confine user queries (no
// query role: the account cannot create roles, or cannot log in as one).
var ErrQueryUnavailable = errors.New("the query tool is not available on this database")

// QueryError is Postgres's refusal of a query, for the caller to read.
type QueryError struct{ Msg string }

func (e *QueryError) Error() string { return e.Msg }

// QueryLimits bound one query.
type QueryLimits struct {
	Timeout  time.Duration
	MaxRows  int
	MaxBytes int
}

// QueryResult is a query's result: rows as JSON values, column by column.
type QueryResult struct {
	Columns   []string
	Rows      [][]json.RawMessage
	Truncated string // why fewer rows than the query has were returned, if so
}

// Query runs one read-only statement for tenant t (see above).
func (db *DB) Query(ctx context.Context, t *tenancy.Tenant, sql string, lim QueryLimits) (*QueryResult, error) {
	sql = strings.TrimRight(strings.TrimSpace(sql), "; \t\r\n")
	if sql == "" {
		return nil, &QueryError{"the query is empty"}
	}
	conn, release, err := db.queryConn(ctx, t)
	if err != nil {
		return nil, err
	}
	defer release()
	defer conn.Close(context.WithoutCancel(ctx))
	res := &QueryResult{}
	err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL statement_timeout = %d", lim.Timeout.Milliseconds())); err != nil {
			return err
		}
		desc, err := tx.Conn().Prepare(ctx, "", sql) // the columns' names; nothing runs yet
		if err != nil {
			return err
		}
		for _, f := range desc.Fields {
			res.Columns = append(res.Columns, f.Name)
		}
		if _, err := tx.Exec(ctx, "DECLARE q NO SCROLL CURSOR FOR SELECT row_to_json(s)::text FROM ("+sql+"\n) s"); err != nil {
			return &wrapped{err} // PostgreSQL parsed the statement alone, but not as a query
		}
		rows, err := tx.Query(ctx, fmt.Sprintf("FETCH FORWARD %d FROM q", lim.MaxRows+1))
		if err != nil {
			return err
		}
		defer rows.Close()
		size := 0
		for rows.Next() {
			if len(res.Rows) == lim.MaxRows {
				res.Truncated = fmt.Sprintf("the result has more than %d rows", lim.MaxRows)
				break
			}
			var obj string
			if err := rows.Scan(&obj); err != nil {
				return err
			}
			if size += len(obj); size > lim.MaxBytes {
				res.Truncated = fmt.Sprintf("the result is larger than %d bytes", lim.MaxBytes)
				break
			}
			res.Rows = append(res.Rows, rowValues(obj, len(res.Columns)))
		}
		return rows.Err()
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		var w *wrapped
		return nil, queryRefusal(pgErr, errors.As(err, &w), sql, lim)
	}
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	return res, nil
}

// rowValues splits a row_to_json object into its values in column order
// (by position, so duplicate column names survive).
func rowValues(obj string, n int) []json.RawMessage {
	vals := make([]json.RawMessage, 0, n)
	dec := json.NewDecoder(strings.NewReader(obj))
	if _, err := dec.Token(); err != nil { // {
		return vals
	}
	for dec.More() {
		if _, err := dec.Token(); err != nil { // key
			break
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			break
		}
		vals = append(vals, v)
	}
	return vals
}

// roleLimit reports whether err is PostgreSQL refusing a login over its
// role's CONNECTION LIMIT (SQLSTATE 53300, "too many connections for
// role").
func roleLimit(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "53300" && strings.Contains(pgErr.Message, "for role")
}

// queryLogin is a tenant's query role and its password, once its login is
// enabled.
type queryLogin struct{ role, password string }

// queryConn connects as the tenant's query role, enabling its login first.
// The caller holds no pool connection meanwhile (see "Connections" in the
// package documentation); the set-up runs on the control pool and the login
// takes a slot of the tenant's and of the process's query logins, released
// by release.
func (db *DB) queryConn(ctx context.Context, t *tenancy.Tenant) (conn *pgx.Conn, release func(), err error) {
	if holdsTenantConn(ctx) {
		return nil, nil, ErrNestedConnection
	}
	login, err := db.prepareQueryLogin(ctx, t)
	if err != nil {
		return nil, nil, err
	}
	release, err = db.acquireQueryLogin(ctx, t.ID)
	if err != nil {
		return nil, nil, err
	}
	cfg := db.pool.Config().ConnConfig.Copy()
	cfg.User, cfg.Password = login.role, login.password
	cfg.RuntimeParams["application_name"] = "gatehouse-query"
	if !db.pooled { // PgBouncer refuses startup parameters it does not track; the role's own setting applies
		cfg.RuntimeParams["search_path"] = pgx.Identifier{t.Schema}.Sanitize()
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err = pgx.ConnectConfig(cctx, cfg)
	// A login closed a moment ago (here or on another replica) still
	// counts against the role's CONNECTION LIMIT until its backend has
	// exited, which PostgreSQL does after the client has gone: a refusal
	// is tried again for a little while before it is believed.
	for wait := 10 * time.Millisecond; err != nil && roleLimit(err) && wait <= 160*time.Millisecond; wait *= 2 {
		select {
		case <-cctx.Done():
		case <-time.After(wait):
			conn, err = pgx.ConnectConfig(cctx, cfg)
			continue
		}
		break
	}
	if err != nil {
		release()
		if roleLimit(err) {
			// The role's own CONNECTION LIMIT: its logins on every replica.
			return nil, nil, &BusyError{What: "your organisation's concurrent queries on all servers", Scope: "tenant_all_servers", Limit: 4}
		}
		if Unavailable(err) {
			return nil, nil, fmt.Errorf("query login: %w", err)
		}
		db.queryLogins.Delete(t.ID) // maybe the role's login was reset: set it up again next time
		return nil, nil, fmt.Errorf("%w: cannot log in as the tenant's query role (%w)", ErrQueryUnavailable, err)
	}
	// The confinement is the session user: a pooler that logs everyone in
	// as one user (PgBouncer's forced user) must not run tenant SQL.
	var who string
	if err := conn.QueryRow(cctx, "SELECT session_user").Scan(&who); err != nil || who != login.role {
		conn.Close(context.WithoutCancel(ctx))
		release()
		return nil, nil, fmt.Errorf("%w: the connection runs as %q, not as the tenant's query role (a pooler that forces one user cannot carry it)", ErrQueryUnavailable, who)
	}
	return conn, release, nil
}

// prepareQueryLogin creates the tenant's query role if it has none and
// enables its login, once per process and tenant (concurrent first calls
// share one set-up) and one process at a time per tenant (an advisory
// lock: concurrent GRANT and ALTER ROLE on one role fail with "tuple
// concurrently updated").
func (db *DB) prepareQueryLogin(ctx context.Context, t *tenancy.Tenant) (queryLogin, error) {
	if l, ok := db.queryLogins.Load(t.ID); ok {
		return l.(queryLogin), nil
	}
	v, err, _ := db.querySetup.Do(t.ID, func() (any, error) {
		// Not the caller's cancellation: the set-up serves every waiter.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		// Both secrets are read before the transaction: no code holds a
		// connection while it waits for another from the same pool.
		seed, err := db.lockSeed(sctx)
		if err != nil {
			return nil, err
		}
		secret, err := db.Secret(sctx, "query-roles")
		if err != nil {
			return nil, err
		}
		tc := *t // the cached tenant is shared: never written
		var login queryLogin
		err = beginFunc(sctx, db.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(sctx, "SELECT pg_advisory_xact_lock(hashtextextended('gatehouse.query-role:' || $1, $2))", tc.ID, seed); err != nil {
				return err
			}
			var role *string
			if err := tx.QueryRow(sctx, "SELECT query_role FROM gatehouse.tenants WHERE id = $1", tc.ID).Scan(&role); err != nil {
				return err
			}
			if role != nil {
				tc.QueryRole = *role
			}
			if err := grantQueryRole(sctx, tx, &tc); err != nil {
				return err
			}
			if tc.QueryRole == "" {
				return fmt.Errorf("%w: the database account cannot create roles", ErrQueryUnavailable)
			}
			password := queryPassword(secret, tc.QueryRole)
			login = queryLogin{role: tc.QueryRole, password: password}
			return enableQueryLogin(sctx, tx, &tc, password)
		})
		if err != nil {
			return nil, err
		}
		db.queryLogins.Store(t.ID, login)
		return login, nil
	})
	if err != nil {
		return queryLogin{}, err
	}
	return v.(queryLogin), nil
}

// enableQueryLogin lets the query role log in, with bounds on what its
// sessions may cost. Idempotent.
func enableQueryLogin(ctx context.Context, tx pgx.Tx, t *tenancy.Tenant, password string) error {
	r := pgx.Identifier{t.QueryRole}.Sanitize()
	_, err := tx.Exec(ctx, fmt.Sprintf(`ALTER ROLE %[1]s WITH LOGIN NOINHERIT CONNECTION LIMIT 4 PASSWORD %[2]s;
		ALTER ROLE %[1]s SET statement_timeout = '30s';
		ALTER ROLE %[1]s SET idle_in_transaction_session_timeout = '30s';
		ALTER ROLE %[1]s SET default_transaction_read_only = on;
		ALTER ROLE %[1]s SET temp_file_limit = '64MB';
		ALTER ROLE %[1]s SET search_path = %[3]s`, r, quoteLiteral(scramVerifier(password)), quoteLiteral(pgx.Identifier{t.Schema}.Sanitize())))
	if err != nil {
		return fmt.Errorf("enabling the query role's login: %w", err)
	}
	return nil
}

// queryPassword derives a query role's password from the instance secret
// "query-roles": nothing stores it, every replica derives the same.
func queryPassword(secret []byte, role string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(role))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// scramVerifier is the SCRAM-SHA-256 verifier of password (RFC 5802/7677,
// in PostgreSQL's format), so the server never sees the password itself.
func scramVerifier(password string) string {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	const iterations = 4096
	salted, _ := pbkdf2.Key(sha256.New, password, salt, iterations, 32)
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	enc := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, enc(salt), enc(stored[:]), enc(mac(salted, "Server Key")))
}
