package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"
)

// ErrNotFound is returned when a workspace row does not exist in the
// caller's tenant.
var ErrNotFound = errors.New("not found")

// Options configure [Open]. A nil *Options means the defaults; a zero
// field means its default (see [DefaultLimits]).
type Options struct {
	// TenantConns bounds the pool of tenant work: the transactions of tool
	// calls ([DB.WithTenant]). Zero: pool_max_conns of the connection
	// string if it has one, else the default.
	TenantConns int32
	// ControlConns bounds the control-plane pool: credential and tenant
	// look-ups, rate limits, audit writes and chaining, readiness,
	// provisioning, the query roles' set-up.
	ControlConns int32
	// QueryConns bounds the query tool's own logins open at once in this
	// process, over all tenants; TenantQueryConns those of one tenant.
	QueryConns, TenantQueryConns int
	// TransactionPooler says the connection string leads to a pooler in
	// transaction mode (PgBouncer): no server-side prepared statements, no
	// session state, and invalidations are polled rather than LISTENed to.
	TransactionPooler bool
	// ConnMaxUses closes a tenant-pool connection after that many
	// transactions (zero: DefaultConnMaxUses, never; negative: never).
	// ConnMaxTenants is what bounds the PostgreSQL memory a connection
	// gathers from the tenants it meets. Connections of both pools are
	// also closed after an hour, or 30 minutes idle (pgxpool's defaults;
	// pool_max_conn_lifetime and pool_max_conn_idle_time in the
	// connection string change them).
	ConnMaxUses int
	// ConnMaxTenants closes a tenant-pool connection once it has served
	// that many different tenants (zero: DefaultConnMaxTenants; negative:
	// never): the bound on the PostgreSQL memory a connection gathers
	// that does not cost warm connections when few tenants are busy.
	ConnMaxTenants int
	// ControlConnMaxTenants closes a control-pool connection once it has
	// served that many different tenants' schemas (zero:
	// DefaultControlConnMaxTenants; negative: never). The control pool
	// writes the group-committed audit records, chains them and runs the
	// anomaly detector in every active tenant's schema, so its backends
	// gather the caches and buffers of the tenants they meet (up to
	// 220 MB per connection after one call in each of 10,000 tenants).
	ControlConnMaxTenants int
	// ControlConnMaxUses closes a control-pool connection after that many
	// uses (zero or negative: never). The bound before
	// ControlConnMaxTenants was 1,000 uses, which also replaced the
	// connections of a server busy with a few tenants.
	ControlConnMaxUses int
	// ControlLanes is the number of lanes, of two connections each beyond
	// ControlConns, that do the control work in tenant schemas (audit
	// writes, chaining, the anomaly detector), each tenant's on a lane of
	// its own once many tenants are busy (lanes.go). Zero:
	// DefaultControlLanes.
	ControlLanes int
	// NoControlAffinity keeps every tenant's control work on the first
	// control lane, the other lanes taking it only while that one is taken
	// (so several tenants' audit work still runs at once, as on the control
	// pool), and never splits the group commit. Always so behind a
	// transaction pooler, where the pooler chooses the backend: there is no
	// backend's cache to keep warm.
	NoControlAffinity bool
	// AffinityConns are tenant-pool connections beyond TenantConns (zero:
	// DefaultAffinityConns; negative: none). mcp admits at most TenantConns calls
	// at once, so with every admitted call in flight AffinityConns
	// connections are still free, and a call usually finds one in its own
	// tenant's lane instead of taking whichever was returned last.
	AffinityConns int
	// TenantLanes splits the tenant pool into that many lanes for tenant
	// affinity (zero: DefaultTenantLanes of the pool's size; 1: none):
	// each tenant prefers the connections of its own lanes, so each
	// backend meets about 1/TenantLanes of the busy tenants. A call never
	// waits for its lane while another has a free connection (affinity.go).
	TenantLanes int
	// PreparedStatements bounds the tools' statements each tenant-pool
	// connection keeps prepared (zero: DefaultPreparedStatements;
	// negative: none), and PrepareAfter is how often a statement is seen
	// on a connection before it is prepared there (zero:
	// DefaultPrepareAfter). See prepared.go. Nothing is prepared behind a
	// transaction pooler.
	PreparedStatements, PrepareAfter int
	// ControlPreparedStatements bounds the audit statements each control
	// lane connection keeps prepared for the tenants it serves: a tenant's
	// group-committed INSERT and its chain pass's SELECT and UPDATE (zero:
	// DefaultControlPreparedStatements; negative: none). They are prepared
	// at their PrepareAfter-th use while there is room (nothing is evicted;
	// prepared.go), a chain pass's once that many passes have chained
	// records of the tenant on the connection (a pass that finds nothing
	// does not count: laneStatementIfUsed), and planned generically
	// (unless CustomPlans). Nothing is prepared behind a transaction
	// pooler.
	ControlPreparedStatements int
	// CustomPlans ignores the tools' GenericPlan marks: every prepared
	// statement is planned as the server's plan_cache_mode says (plans.go).
	CustomPlans bool
	// NoAuditIntake has the group commit write calls' records straight
	// into their tenants' audit logs, as before the audit intake
	// (audit_intake.go): for rolling back to a release without it (the
	// chainer still moves what the intake holds), and for comparison.
	NoAuditIntake bool
	Logger        *slog.Logger
}

// DefaultConnMaxUses is the default of Options.ConnMaxUses: never. A
// PostgreSQL backend keeps the catalog and relation caches of every tenant
// schema it has served (25–55 KB each, never given back); ConnMaxTenants
// bounds that directly, and tenant affinity keeps it small. Replacing
// connections after a number of transactions as well only threw warm
// caches away: measured with bench/tenants at 10,000 tenants, calls over
// 2,000 of them ran at 0.31× the rate over 10 with a bound of 1,000
// transactions and no affinity, 0.56–0.62× with affinity (same run).
const DefaultConnMaxUses = -1

// DefaultConnMaxTenants is the default of Options.ConnMaxTenants: 600. A
// tool-call backend holds ~90 KB per tenant it has served (its caches, its
// prepared statements and their generic plans, and the shared buffers it
// alone has read, which Private_Dirty counts), so 600 keep it under about
// 55 MB. Measured with bench/tenants after one call in each of 12,200
// tenants (16 connections, ~760 tenants each): 19 / 23 / 29 MB (min /
// median / max) with 600, 2 / 68 / 71 MB with the 1,000 before, which
// none had reached. With affinity, calls over 2,000 tenants do not reach
// it either: no tool-call backend was replaced in their runs, and their
// CPU per call was the same with 600 as with 1,000 (same invocation).
const DefaultConnMaxTenants = 600

// DefaultControlConnMaxTenants is the default of
// Options.ControlConnMaxTenants: 500. A control backend keeps 20–40 KB per
// tenant whose audit log it has written or chained (its caches and
// prepared statements), and /proc/<pid>/smaps counts as its Private_Dirty
// too the pages of the shared buffers that it alone has read (up to
// ~100 KB a tenant when either of a lane's connections took any work; see
// laneRole). Measured with bench/tenants after one call in each of 10,200
// tenants, the largest control backend's Private_Dirty was 27–82 MB with
// the 1,000 before (seven servers), 24–71 MB with 500 before the lanes'
// roles (four) and 21–33 MB with 500 and the roles (six; at most 21 MB of
// its own). It is the control lanes (lanes.go) that keep busy tenants'
// caches warm within it: each lane is meant for half of it
// (controlLaneTenants), and DefaultControlLanes are enough for 2,000 busy
// tenants.
const DefaultControlConnMaxTenants = 500

// DefaultControlLanes is the default of Options.ControlLanes for n cores
// (GOMAXPROCS): max(8, n/4), 16 connections up to 32 cores. Eight lanes
// keep 2,000 busy tenants warm (250 a lane, half of
// DefaultControlConnMaxTenants); with three lanes of 670 tenants each and
// a bound of 450, the lanes' connections were replaced, cold, during
// spreads (bench/README.md, "2026-12-01, morning"). While fewer than 250
// tenants are busy one lane does the work, and the other lanes'
// connections open only to take work while its two are taken (and close
// after 30 minutes idle).
func DefaultControlLanes(n int) int { return max(8, n/4) }

// DefaultAffinityConns is the default of Options.AffinityConns for
// tenantConns admitted calls: as many again, at most 16 (on 16 cores:
// 32 + 16 tool-call connections). Measured with 8 calls in flight over
// 2,000 of 10,000 tenants: with 8 spare connections in 8 lanes each
// backend kept 30 MB and the calls ran at 0.62× the rate over 10 tenants;
// with none, lanes could not help (102 MB, 0.29×).
func DefaultAffinityConns(tenantConns int32) int { return min(int(tenantConns), 16) }

// DefaultTenantLanes is the default of Options.TenantLanes for a tenant
// pool of conns connections (TenantConns + AffinityConns): lanes of two
// connections each.
func DefaultTenantLanes(conns int32) int { return max(1, int(conns)/2) }

// DefaultLimits are the defaults of Options' connection bounds for n cores
// (GOMAXPROCS): tenant pool max(8, 2n), control pool max(4, n), control
// lanes max(8, n/4) of two connections, query logins max(4, n) in all and
// 2 per tenant; the tenant pool also has DefaultAffinityConns spare
// connections. Two cores: 8 + 8 + 4 + 16 + 4 (+1 for LISTEN) = 41
// connections; sixteen: 32 + 16 + 16 + 16 + 16 + 1 = 97, within
// PostgreSQL's default max_connections of 100 less its 3 reserved slots
// for one replica (the lanes beyond the first open only while many
// tenants are busy).
func DefaultLimits(n int) Options {
	return Options{TenantConns: int32(max(8, 2*n)), ControlConns: int32(max(4, n)), ControlLanes: DefaultControlLanes(n),
		QueryConns: max(4, n), TenantQueryConns: 2}
}

// DB is Gatehouse's database.
//
// It holds two pools (see the package documentation, "Connections"):
// work, for tenant transactions, and pool, for everything else.
type DB struct {
	pool *pgxpool.Pool // control plane
	ctl  *controlLanes // control work in tenant schemas, with tenant affinity
	work *tenantPool   // tenant work (WithTenant), with tenant affinity
	log  *slog.Logger
	// hotMode runs the fixed, fully qualified statements of every request
	// (rate limits): prepared once per connection where allowed.
	hotMode pgx.QueryExecMode
	// pooled: behind a transaction pooler (Options.TransactionPooler).
	pooled bool
	// queryLogins remembers the query roles whose login is enabled
	// (role → password); querySetup runs one set-up per tenant at a time.
	queryLogins sync.Map
	querySetup  singleflight.Group
	// queryAll and queryTenant bound the query tool's logins.
	queryAll        *semaphore.Weighted
	queryTenantMax  int64
	queryMu         sync.Mutex
	queryTenant     map[string]*tenantSem
	secrets         sync.Map     // name → []byte, see Secret
	auditMarks      sync.Map     // tenant id → *atomic.Int64: when this process last marked it (audit_pending.go)
	auditBusy       sync.Map     // tenant id → int64: until when its audit log counts as locked (audit_busy.go)
	intakeSkipUntil atomic.Int64 // unix ns until which the group commit skips the audit intake (audit_intake.go)
	limits          Options      // the bounds in force
	// preparedCap and prepareAfter: Options.PreparedStatements and
	// Options.PrepareAfter in force (prepared.go).
	preparedCap, prepareAfter int
	// lanePreparedCap: Options.ControlPreparedStatements in force.
	lanePreparedCap int
	// customPlans: Options.CustomPlans.
	customPlans bool
	// noIntake: Options.NoAuditIntake.
	noIntake bool
}

// Open connects to the database at connString and checks that it answers.
func Open(ctx context.Context, connString string, opts *Options) (*DB, error) {
	if opts == nil {
		opts = &Options{}
	}
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "gatehouse"
	}
	o := *opts
	if o.TenantConns <= 0 && strings.Contains(connString, "pool_max_conns") {
		o.TenantConns = cfg.MaxConns // the URL's pool size sizes the tenant-work pool
	}
	lim := withDefaults(o)
	ccfg := cfg.Copy()
	ccfg.MaxConns = lim.ControlConns
	limitControl(ccfg, lim.ControlConnMaxUses, lim.ControlConnMaxTenants)
	pool, err := pgxpool.NewWithConfig(ctx, ccfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database: cannot connect to %s@%s/%s: %w", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	ctl, err := newControlLanes(ctx, ccfg, lim.ControlLanes, lim.ControlConnMaxTenants, !lim.NoControlAffinity)
	if err != nil {
		pool.Close()
		return nil, err
	}
	work, err := newTenantPool(ctx, cfg, lim.TenantConns+int32(lim.AffinityConns), lim.TenantLanes, lim.ConnMaxUses, lim.ConnMaxTenants)
	if err != nil {
		ctl.pool.Close()
		pool.Close()
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db := &DB{pool: pool, ctl: ctl, work: work, log: log, hotMode: pgx.QueryExecModeCacheStatement, pooled: opts.TransactionPooler,
		queryAll: semaphore.NewWeighted(int64(lim.QueryConns)), queryTenantMax: int64(lim.TenantQueryConns),
		queryTenant: map[string]*tenantSem{}, limits: lim, preparedCap: lim.PreparedStatements, prepareAfter: lim.PrepareAfter,
		lanePreparedCap: lim.ControlPreparedStatements,
		customPlans:     lim.CustomPlans, noIntake: lim.NoAuditIntake}
	if opts.TransactionPooler {
		db.hotMode = pgx.QueryExecModeExec
	}
	return db, nil
}

func withDefaults(o Options) Options {
	d := DefaultLimits(runtime.GOMAXPROCS(0))
	if o.TenantConns <= 0 {
		o.TenantConns = d.TenantConns
	}
	if o.ControlConns <= 0 {
		o.ControlConns = d.ControlConns
	}
	if o.QueryConns <= 0 {
		o.QueryConns = d.QueryConns
	}
	if o.TenantQueryConns <= 0 {
		o.TenantQueryConns = d.TenantQueryConns
	}
	o.TenantQueryConns = min(o.TenantQueryConns, o.QueryConns)
	if o.ControlLanes <= 0 {
		o.ControlLanes = d.ControlLanes
	}
	if o.TransactionPooler {
		o.NoControlAffinity = true
	}
	if o.ConnMaxUses == 0 {
		o.ConnMaxUses = DefaultConnMaxUses
	}
	if o.ControlConnMaxTenants == 0 {
		o.ControlConnMaxTenants = DefaultControlConnMaxTenants
	}
	if o.ConnMaxTenants == 0 {
		o.ConnMaxTenants = DefaultConnMaxTenants
	}
	switch {
	case o.AffinityConns == 0 && o.TransactionPooler:
		// The pooler chooses the server connection: spare client
		// connections would bring no affinity (docs/deploy.md, Scaling out).
		o.AffinityConns = 0
	case o.AffinityConns == 0:
		o.AffinityConns = DefaultAffinityConns(o.TenantConns)
	case o.AffinityConns < 0:
		o.AffinityConns = 0
	}
	pool := o.TenantConns + int32(o.AffinityConns)
	if o.TenantLanes <= 0 {
		o.TenantLanes = DefaultTenantLanes(pool)
	}
	o.TenantLanes = min(o.TenantLanes, int(pool))
	switch {
	case o.PreparedStatements == 0:
		o.PreparedStatements = DefaultPreparedStatements
	case o.PreparedStatements < 0:
		o.PreparedStatements = 0
	}
	if o.PrepareAfter <= 0 {
		o.PrepareAfter = DefaultPrepareAfter
	}
	switch {
	case o.ControlPreparedStatements == 0:
		o.ControlPreparedStatements = DefaultControlPreparedStatements
	case o.ControlPreparedStatements < 0:
		o.ControlPreparedStatements = 0
	}
	return o
}

// Limits returns the connection bounds in force (defaults filled in).
func (db *DB) Limits() Options { return db.limits }

// Close closes every connection.
func (db *DB) Close() { db.work.Close(); db.ctl.pool.Close(); db.pool.Close() }

// Ping checks that the database answers, over the control pool.
func (db *DB) Ping(ctx context.Context) error { return db.pool.Ping(ctx) }

// ControlBusy reports whether every control-pool connection is in use, so
// that a Ping that timed out says "busy", not "unreachable".
func (db *DB) ControlBusy() bool {
	st := db.pool.Stat()
	return st.AcquiredConns() >= st.MaxConns()
}

// Pool exposes the control-plane pool to tests and benchmarks in this module.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// TenantPoolSize is the number of connections the tenant-work pool may open.
func (db *DB) TenantPoolSize() int32 { return db.work.Size() }

// TenantBackendPIDs opens every tenant-work connection and returns their
// backends' process ids, for benchmarks and tests that read the backends'
// memory. Run it while no tenant work runs.
func (db *DB) TenantBackendPIDs(ctx context.Context) ([]int, error) { return db.work.backendPIDs(ctx) }

// ControlLaneBackendPIDs opens every control lane's connections (see
// Options.ControlLanes) and returns their backends' process ids, for
// benchmarks and tests that read the backends' memory. Run it while no
// audit work runs.
func (db *DB) ControlLaneBackendPIDs(ctx context.Context) ([]int, error) {
	return db.ctl.pool.backendPIDs(ctx)
}

// ControlLanesInUse is how many control lanes the audit work is split over
// now (1 while few tenants are busy; see Options.ControlLanes).
func (db *DB) ControlLanesInUse() int { return db.ctl.inUse() }

// EachTenantConn takes every tenant-work connection at once (opening those
// not yet open) and calls fn with each, for tests that inspect what a
// connection kept. Only while no tenant work runs.
func (db *DB) EachTenantConn(ctx context.Context, fn func(*pgxpool.Conn) error) error {
	return db.work.each(ctx, fn)
}

// CheckConnectionBudget logs the connections this process may open (both
// pools, the query logins, the invalidation listener) against the
// server's max_connections less its reserved slots, and warns when one
// process alone could exhaust them. (Replicas multiply the sum.)
func (db *DB) CheckConnectionBudget(ctx context.Context) {
	l := db.limits
	mine := int(l.TenantConns) + l.AffinityConns + int(l.ControlConns) + controlLaneConns*l.ControlLanes + l.QueryConns + 1
	var maxConns, reserved int
	err := db.pool.QueryRow(ctx, "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int").Scan(&maxConns, &reserved)
	if err != nil {
		db.log.Warn("cannot read max_connections", "error", err)
		return
	}
	attrs := []any{"tenant_pool", l.TenantConns, "affinity_conns", l.AffinityConns, "tenant_lanes", l.TenantLanes, "control_pool", l.ControlConns, "control_lanes", l.ControlLanes, "query_logins", l.QueryConns,
		"query_logins_per_tenant", l.TenantQueryConns, "this_process_at_most", mine, "max_connections", maxConns, "reserved", reserved}
	if mine > maxConns-reserved {
		db.log.Warn("this process alone may open more connections than the database allows: lower GATEHOUSE_DB_TENANT_CONNS, GATEHOUSE_DB_CONTROL_CONNS, GATEHOUSE_DB_CONTROL_LANES or GATEHOUSE_QUERY_CONNS, or raise max_connections", attrs...)
		return
	}
	db.log.Info("database connections", attrs...)
}

// limitUses makes the pool close each connection when it comes back from
// its max-th use (pgxpool's AfterRelease hook: false destroys it).
func limitUses(cfg *pgxpool.Config, max int) {
	var uses sync.Map // *pgx.Conn → *atomic.Int64
	cfg.AfterRelease = func(c *pgx.Conn) bool {
		v, _ := uses.LoadOrStore(c, new(atomic.Int64))
		return v.(*atomic.Int64).Add(1) < int64(max)
	}
	cfg.BeforeClose = func(c *pgx.Conn) { uses.Delete(c) }
}

// limitControl makes the control pool close a connection when it comes
// back having served maxTenants different tenants (see [metTenants]), or
// from its maxUses-th use; a bound that is not positive is off.
func limitControl(cfg *pgxpool.Config, maxUses, maxTenants int) {
	if maxUses > 0 {
		limitUses(cfg, maxUses)
	}
	if maxTenants <= 0 {
		return
	}
	byUses := cfg.AfterRelease
	cfg.AfterRelease = func(c *pgx.Conn) bool {
		if set, _ := c.PgConn().CustomData()[metTenantsKey].(map[string]struct{}); len(set) >= maxTenants {
			return false
		}
		return byUses == nil || byUses(c)
	}
}

// metTenantsKey holds, in a control-pool connection's custom data, the
// ids of the tenants whose schemas it has served (map[string]struct{}).
const metTenantsKey = "gatehouse.tenants"

// metTenants notes that conn, a control-pool connection held by the
// caller, has served (or is about to serve) the schemas of the tenants
// ids, for Options.ControlConnMaxTenants. The paths that touch tenant
// schemas on the control pool at the rate of calls note them: the audit
// writes (group commit, per-tenant fall-backs, WithTenantControl), the
// chainer and the anomaly detector; the rare ones (migrations,
// verification, provisioning) are bounded by the connections' lifetime.
func metTenants(conn *pgx.Conn, ids ...string) {
	data := conn.PgConn().CustomData()
	set, _ := data[metTenantsKey].(map[string]struct{})
	if set == nil {
		set = map[string]struct{}{}
		data[metTenantsKey] = set
	}
	for _, id := range ids {
		set[id] = struct{}{}
	}
}
