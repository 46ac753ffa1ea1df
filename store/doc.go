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
// # Connections
//
// Three sets of connections, so that control-plane work never queues
// behind tenant work:
//
//   - the tenant-work pool serves [DB.WithTenant] and [DB.InTenant], the
//     transactions of tool calls;
//   - the control lanes ([Options].ControlLanes, lanes.go) serve the control
//     plane's work in tenant schemas at the rate of calls: group-committed
//     and aggregated audit records, chaining, the anomaly detector;
//   - the control pool serves everything else: credential and tenant
//     look-ups, rate-limit leases, readiness, provisioning, secrets, the
//     query roles' set-up.
//
// The database's share of a call is kept small (DESIGN §8c): a call that
// changes data runs [DB.InTenantWrite], whose opening statements travel
// with the tool's first statement and whose audit record travels with
// COMMIT (two round trips), or with the tool's last statement when the
// tool marks it [Final] (add_todo, create_project: one round trip); a read runs [DB.InTenantReadOnly], each of
// its statements one round trip with no BEGIN or COMMIT (the tenant's
// settings travel with it in one implicit transaction); audit records of
// calls that change nothing are written together into the audit intake,
// one table for every tenant, by [DB.WriteAuditEntries] (one statement,
// one round trip, one commit per control lane), and moved into their
// tenants' audit logs already chained by the chain passes
// (audit_intake.go); rate limits are leased ([DB.GCRALease]).
// Gatehouse's own fixed statements on these paths are prepared once per
// connection, and the tools' statements per tenant as they recur
// (prepared.go), as are the control lanes' audit statements of each
// tenant (its chain pass's SELECT, UPDATE and INSERT of the records moved
// from the intake, and the INSERT of the group commit's way straight into
// its log: [Options].ControlPreparedStatements), not behind a transaction pooler:
// planning them per call
// cost more than running them. Those whose plan does not depend on their
// arguments are marked [GenericPlan] and planned once per tenant and
// connection (plans.go), not at each of their first five executions.
//
// A PostgreSQL backend keeps the catalog caches of every tenant schema it
// has served (25–55 KB each, never given back), so the tenant-work pool
// has tenant affinity (affinity.go): its connections are split into lanes,
// each tenant takes a connection from its own lanes first (rendezvous
// hashing of its id) and any free one when they are busy, so a call never
// waits while a connection is free; [Options].AffinityConns spare
// connections beyond the calls mcp admits keep a tenant's own lane free
// most of the time. A tenant-work connection is replaced once it has
// served [Options].ConnMaxTenants different tenants (and, if set, after
// ConnMaxUses transactions). The control lanes have tenant affinity too:
// while few tenants are busy they all share one lane (a group commit is one
// transaction); once more are busy than a lane serves warm (half of
// [Options].ControlConnMaxTenants, at most 500: 250 by default), or new
// tenants arrive at a rate that will make them so (see controlLanes.note),
// each tenant's audit work keeps to its own lane among several, of two
// connections each, one for the group commit's part and one for the
// chainer and the anomaly detector (laneRole; so a group commit is one
// transaction per lane, in parallel); the tenants met by any control work in their schemas count
// (the chainer's, the anomaly detector's), not only the group commit's.
// Without affinity (behind a transaction pooler, which chooses the
// backends; [Options].NoControlAffinity) every tenant's work goes to the
// first lane and the others take it while that one is busy, so several
// tenants' audit work still runs at once. A control connection is
// replaced once it has served
// [Options].ControlConnMaxTenants different tenants (see metTenants; and,
// if set, after ControlConnMaxUses uses). Before a tenant transaction, a tenant not
// marked by this process in the last minute is marked in
// gatehouse.audit_pending on the control pool (see audit_pending.go), so
// the audit chainer after a start asks only those tenants; the chainer's
// moves from the audit intake, readers' settles and the anomaly
// detector's ALERT records mark their tenants in the transaction that
// writes the records instead.
//
// The query tool's sessions are logins of their own (see query.go), bounded
// per tenant and per process ([Options].TenantQueryConns, QueryConns) and
// by each query role's CONNECTION LIMIT; a query over a bound waits briefly
// and is then refused with a [BusyError].
//
// The rule that keeps this deadlock-free: no code path holds a connection
// while it waits for another from the same pool. When every connection of a
// pool is held by callers that each wait for a second one, none is ever
// returned (seen: four first query calls at once, each holding a tenant
// connection while its set-up waited for another, hung until their time
// limit). So:
//
//   - a function that opens a transaction reads what it needs from other
//     statements (secrets, lock seeds) before it begins, and calls only
//     (ctx, tx, …) helpers inside;
//   - a tool call holds at most one tenant connection; code inside it may
//     use the control pool (whose users never wait for a tenant connection,
//     so the order tenant → control cannot cycle), never a second tenant
//     connection: [DB.InTenant] marks its context, and WithTenant or Query
//     called with it fail at once with [ErrNestedConnection];
//   - the query tool runs outside any tenant transaction (its audit record
//     is written after it), so it holds nothing while it waits for a login.
//
// Errors of a database that cannot be reached right now (refused or lost
// connections, restarts, no free slot) satisfy [Unavailable]: callers answer
// them as temporary.
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
// Queries use pgx's QueryExecModeExec: no server-side prepared statements
// unless named below, so it works through PgBouncer in transaction mode.
// Gatehouse's fixed hot-path statements are prepared once per connection
// (DB.prepare), and the tools' own statements in reads and writes are
// prepared per tenant schema and connection once they recur, in a bounded
// cache (prepared.go: why a tenant at another migration version, or one
// migrating, never runs a statement bound to other tables), and so are the
// control lanes' audit statements, which name each tenant's table with its
// schema (laneStatement; a chain pass's counted only when it found records
// to chain, laneStatementIfUsed). None behind a transaction pooler.
//
// store imports identity and tenancy for their types; it must not import mcp.
package store
