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
	conn, err := db.queryConn(ctx, t)
	if err != nil {
		return nil, err
	}
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

// queryConn connects as the tenant's query role, enabling its login first.
func (db *DB) queryConn(ctx context.Context, t *tenancy.Tenant) (*pgx.Conn, error) {
	if t.QueryRole == "" {
		if err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error { return grantQueryRole(ctx, tx, t) }); err != nil {
			return nil, err
		}
		if t.QueryRole == "" {
			return nil, fmt.Errorf("%w: the database account cannot create roles", ErrQueryUnavailable)
		}
	}
	password, err := db.queryPassword(ctx, t.QueryRole)
	if err != nil {
		return nil, err
	}
	if _, ok := db.queryLogins.Load(t.QueryRole); !ok {
		if err := db.enableQueryLogin(ctx, t, password); err != nil {
			return nil, err
		}
		db.queryLogins.Store(t.QueryRole, true)
	}
	cfg := db.pool.Config().ConnConfig.Copy()
	cfg.User, cfg.Password = t.QueryRole, password
	cfg.RuntimeParams["application_name"] = "gatehouse-query"
	if !db.pooled { // PgBouncer refuses startup parameters it does not track; the role's own setting applies
		cfg.RuntimeParams["search_path"] = pgx.Identifier{t.Schema}.Sanitize()
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		db.queryLogins.Delete(t.QueryRole) // maybe the role's login was reset: try again next time
		return nil, fmt.Errorf("%w: cannot log in as the tenant's query role (%w)", ErrQueryUnavailable, err)
	}
	// The confinement is the session user: a pooler that logs everyone in
	// as one user (PgBouncer's forced user) must not run tenant SQL.
	var who string
	if err := conn.QueryRow(cctx, "SELECT session_user").Scan(&who); err != nil || who != t.QueryRole {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("%w: the connection runs as %q, not as the tenant's query role (a pooler that forces one user cannot carry it)", ErrQueryUnavailable, who)
	}
	return conn, nil
}

// enableQueryLogin lets the query role log in, with bounds on what its
// sessions may cost. Idempotent.
func (db *DB) enableQueryLogin(ctx context.Context, t *tenancy.Tenant, password string) error {
	r := pgx.Identifier{t.QueryRole}.Sanitize()
	_, err := db.pool.Exec(ctx, fmt.Sprintf(`ALTER ROLE %[1]s WITH LOGIN NOINHERIT CONNECTION LIMIT 4 PASSWORD %[2]s;
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

// queryPassword derives a query role's password from the instance secret:
// nothing stores it, every replica derives the same.
func (db *DB) queryPassword(ctx context.Context, role string) (string, error) {
	secret, err := db.Secret(ctx, "query-roles")
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(role))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)), nil
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
