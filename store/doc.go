// Package store is Gatehouse's Postgres: the pgx pool, migrations, tenant
// provisioning, [DB.WithTenant] transactions, the repositories behind
// identity's and tenancy's interfaces, the workspace tables, and the
// embedded-cluster launcher used when DATABASE_URL is not set.
//
// # Tenant isolation
//
// Each tenant has an opaque schema (t_<hex>) and an opaque NOLOGIN role
// (gatehouse_t_<hex>) that has USAGE on that schema only and exactly the table
// privileges its migrations grant. Tool calls run through [DB.WithTenant]: one
// transaction that first runs set_config('search_path', schema, true) and
// set_config('role', role, true), so the settings end with the transaction
// and never leak to the next user of a pooled connection (no session-level SET).
// Statements in such a transaction are checked by Postgres against the
// tenant role: other schemas, including the control schema, are out of reach.
// The limit of this: Postgres checks SET ROLE, RESET ROLE and
// set_config('role', …) against the session user, so SQL that can say them
// leaves the tenant role (and can even become another tenant's role). Only
// Gatehouse's own fixed SQL runs in WithTenant; user-written SQL needs a
// session whose session user is the tenant role.
//
// # Migrations
//
// The control schema "gatehouse" records its version in
// gatehouse.schema_migrations under a transaction-scoped advisory lock.
// A tenant's version is gatehouse.tenants.schema_version, advanced in the same
// transaction as the tenant's DDL under that row's lock, so tenants migrate in
// parallel and a crash leaves no half-migrated schema. (tern was the listed
// choice; its single global advisory lock id would serialise every tenant's
// migration and its RESET ALL between steps drops the tenant search_path.)
//
// Queries use pgx's QueryExecModeExec: no server-side prepared statements,
// so nothing goes stale when search_path changes between tenants at different
// migration versions, and it works through PgBouncer in transaction mode.
//
// store imports identity and tenancy for their types; it must not import mcp.
package store
