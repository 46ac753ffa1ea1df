package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

const selectTenant = `SELECT id, key, kind, schema_name, coalesce(role_name, ''), coalesce(query_role, ''), status, schema_version, created_at,
	rate_per_minute, rate_burst FROM gatehouse.tenants`

func scanTenant(row pgx.Row) (*tenancy.Tenant, error) {
	var t tenancy.Tenant
	var perMinute *float64
	var burst *int
	err := row.Scan(&t.ID, &t.Key, &t.Kind, &t.Schema, &t.DBRole, &t.QueryRole, &t.Status, &t.SchemaVersion, &t.CreatedAt, &perMinute, &burst)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, tenancy.ErrTenantNotFound
	}
	if err != nil {
		return nil, err
	}
	if perMinute != nil && burst != nil {
		t.RateLimit = &tenancy.Rate{PerMinute: *perMinute, Burst: *burst}
	}
	return &t, nil
}

// FindTenantByKey returns the tenant with the given (normalised) key.
func (db *DB) FindTenantByKey(ctx context.Context, key string) (*tenancy.Tenant, error) {
	return scanTenant(db.pool.QueryRow(ctx, selectTenant+" WHERE key = $1", key))
}

// FindTenantByID returns the tenant with the given id.
func (db *DB) FindTenantByID(ctx context.Context, id string) (*tenancy.Tenant, error) {
	return scanTenant(db.pool.QueryRow(ctx, selectTenant+" WHERE id = $1", id))
}

// FindTenantsByID returns those of the tenants with the given ids that
// exist, in any order, in one statement (tenancy.Service refreshes the
// tenants in use with it).
func (db *DB) FindTenantsByID(ctx context.Context, ids []string) ([]*tenancy.Tenant, error) {
	rows, _ := db.pool.Query(ctx, selectTenant+" WHERE id = ANY($1::uuid[])", ids)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*tenancy.Tenant, error) { return scanTenant(r) })
}

// FindTenants returns every tenant, oldest first.
func (db *DB) FindTenants(ctx context.Context) ([]*tenancy.Tenant, error) {
	rows, _ := db.pool.Query(ctx, selectTenant+" ORDER BY created_at, key")
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*tenancy.Tenant, error) { return scanTenant(r) })
}

// EnsureTenant returns the tenant with the given normalised key, provisioning
// it (schema, role, migrations) if it does not exist. created reports whether
// this call provisioned it. Concurrent calls for one key provision it once.
func (db *DB) EnsureTenant(ctx context.Context, key string, kind tenancy.Kind) (t *tenancy.Tenant, created bool, err error) {
	t, err = db.FindTenantByKey(ctx, key)
	if !errors.Is(err, tenancy.ErrTenantNotFound) {
		return t, false, err
	}
	seed, err := db.lockSeed(ctx)
	if err != nil {
		return nil, false, err
	}
	err = beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		t, created, err = ensureTenant(ctx, tx, seed, key, kind)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("provisioning tenant %s: %w", key, err)
	}
	if created {
		db.log.Info("tenant provisioned", "tenant", t.Key, "tenant_id", t.ID, "kind", t.Kind)
	}
	return t, created, nil
}

func ensureTenant(ctx context.Context, tx pgx.Tx, lockSeed int64, key string, kind tenancy.Kind) (*tenancy.Tenant, bool, error) {
	// Serialise provisioning of this key; other keys proceed in parallel.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('gatehouse.tenant:' || $1, $2))", key, lockSeed); err != nil {
		return nil, false, err
	}
	t, err := scanTenant(tx.QueryRow(ctx, selectTenant+" WHERE key = $1", key))
	if !errors.Is(err, tenancy.ErrTenantNotFound) {
		return t, false, err
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	t = &tenancy.Tenant{Key: key, Kind: kind, Schema: "t_" + h, Status: tenancy.Active}
	if _, err := tx.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{t.Schema}.Sanitize()); err != nil {
		return nil, false, err
	}
	if canCreateRoles(ctx, tx) {
		t.DBRole, t.QueryRole = "gatehouse_t_"+h, "gatehouse_q_"+h
		schema := pgx.Identifier{t.Schema}.Sanitize()
		for _, role := range []string{t.DBRole, t.QueryRole} {
			r := pgx.Identifier{role}.Sanitize()
			// NOINHERIT and a member of nothing: the role can use its own
			// schema and nothing else. We are made a member so that SET ROLE
			// (tenant role) works for us without superuser rights.
			if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE ROLE %[1]s NOLOGIN NOINHERIT; GRANT %[1]s TO CURRENT_USER; GRANT USAGE ON SCHEMA %[2]s TO %[1]s", r, schema)); err != nil {
				return nil, false, err
			}
		}
	}
	err = tx.QueryRow(ctx, `INSERT INTO gatehouse.tenants (id, key, kind, schema_name, role_name, query_role)
		VALUES ($1, $2, $3, $4, nullif($5, ''), nullif($6, '')) RETURNING created_at`,
		uuidString(b), t.Key, t.Kind, t.Schema, t.DBRole, t.QueryRole).Scan(&t.CreatedAt)
	if err != nil {
		return nil, false, err
	}
	t.ID = uuidString(b)
	if err := migrateTenantTx(ctx, tx, t, migrationLockWait); err != nil {
		return nil, false, err
	}
	return t, true, nil
}

func uuidString(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// WithTenant runs fn in one transaction confined to t: search_path is t's
// schema and the current role is t's role, both transaction-local. fn's
// error (or a commit failure) rolls the transaction back and is returned.
//
// BEGIN and both set_config calls travel in one message (one round trip);
// the names are Gatehouse's own, checked against the opaque-name pattern and
// quoted as literals all the same.
//
// It takes a connection from the tenant-work pool; called while the same
// call holds one (a context from [DB.InTenant]) it fails with
// ErrNestedConnection.
func (db *DB) WithTenant(ctx context.Context, t *tenancy.Tenant, fn func(pgx.Tx) error) error {
	if holdsTenantConn(ctx) {
		return ErrNestedConnection
	}
	return db.withTenantMode(ctx, false, t, "BEGIN", "", fn)
}

// WithTenantControl is [DB.WithTenant] on the tenant's control lane (see
// Options.ControlLanes), for the little tenant-confined work that is the
// control plane's (audit records written alone, aggregated records of
// refused requests): it never queues behind tool calls. fn must not wait
// for another connection.
func (db *DB) WithTenantControl(ctx context.Context, t *tenancy.Tenant, fn func(pgx.Tx) error) error {
	return db.withTenantMode(ctx, true, t, "BEGIN", "", fn)
}

// withTenantMode runs fn in a tenant transaction opened by beginStmt on a
// connection of the tenant's control lane when control is set, else of
// the tenant-work pool (both with tenant affinity). lockWait, when not
// empty, is the transaction's lock_timeout (e.g. "200ms").
func (db *DB) withTenantMode(ctx context.Context, control bool, t *tenancy.Tenant, beginStmt, lockWait string, fn func(pgx.Tx) error) error {
	if !opaqueName.MatchString(t.Schema) || (t.DBRole != "" && !opaqueName.MatchString(t.DBRole)) {
		return fmt.Errorf("tenant %s: refusing unexpected schema or role name", t.Key)
	}
	begin := beginStmt + "; "
	if beginStmt == "BEGIN" {
		// A transaction that may write audit records marks the tenant as
		// having unchained ones (see markAuditPending); a READ ONLY one
		// writes none.
		if err := db.markAuditPending(ctx, t); err != nil {
			return err
		}
	}
	begin += fmt.Sprintf("SELECT set_config('search_path', %s, true)", quoteLiteral(pgx.Identifier{t.Schema}.Sanitize()))
	if t.DBRole != "" { // else: a database whose account cannot create roles: schema isolation only
		begin += fmt.Sprintf(", set_config('role', %s, true)", quoteLiteral(t.DBRole))
	}
	if lockWait != "" {
		begin += fmt.Sprintf(", set_config('lock_timeout', %s, true)", quoteLiteral(lockWait))
	}
	acquire := db.work.Acquire
	if control {
		acquire = func(ctx context.Context, id string) (*pgxpool.Conn, func(), error) {
			return db.ctl.acquireTenant(ctx, id, callWork)
		}
	}
	c, release, err := acquire(ctx, t.ID)
	if err != nil {
		return err
	}
	defer release()
	return connTxFunc(ctx, c.Conn(), pgx.TxOptions{BeginQuery: begin}, fn)
}

// opaqueName matches the schema and role names Gatehouse generates.
var opaqueName = regexp.MustCompile(`^(gatehouse_[tq]|t)_[0-9a-f]{32}$`)

// canCreateRoles reports whether the database account may create roles.
func canCreateRoles(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) bool {
	var ok bool
	_ = q.QueryRow(ctx, "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user").Scan(&ok)
	return ok
}

// CanCreateRoles reports whether tenants get their own database roles here
// (else they are isolated by schema alone and the query tool is off).
func (db *DB) CanCreateRoles(ctx context.Context) bool { return canCreateRoles(ctx, db.pool) }

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// updateTenant runs one UPDATE of a tenant row ($1 is its id) and tells
// every replica to reload the tenant.
func (db *DB) updateTenant(ctx context.Context, tenantID, sql string, args ...any) error {
	return beginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, sql, append([]any{tenantID}, args...)...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return tenancy.ErrTenantNotFound
		}
		return db.notify(ctx, tx, Invalidation{Kind: InvalidateTenant, ID: tenantID})
	})
}
