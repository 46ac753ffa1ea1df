package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/semaphore"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// ErrNestedConnection refuses a tenant transaction or a query login asked
// for while the same call already holds a tenant connection: with every
// connection of a pool held by calls waiting for a second one, none would
// ever be returned (see the package documentation, "Connections").
var ErrNestedConnection = errors.New("store: a second tenant connection was asked for while one is held (deadlock hazard)")

// BusyError reports that a bound on concurrent use was reached and stayed
// reached for the short time a caller may wait: retry in a moment.
type BusyError struct {
	What  string // what is bounded, for the caller to read
	Scope string // whose bound: "tenant" (this process), "tenant_all_servers", "server"
	Limit int
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("%s: all %d are in use", e.What, e.Limit)
}

// queryWait is how long a query waits for a free login slot before it is
// refused with a BusyError.
const queryWait = 2 * time.Second

type holdKey struct{}

// holdsTenantConn reports whether ctx belongs to a call that holds a
// tenant connection (inside [DB.InTenant]).
func holdsTenantConn(ctx context.Context) bool { return ctx.Value(holdKey{}) != nil }

// InTenant is [DB.WithTenant] for calls that run more code inside the
// transaction: fn gets a context marked as holding a tenant connection, and
// [DB.WithTenant] or [DB.Query] called with it fail at once with
// ErrNestedConnection instead of waiting for a second connection. Control
// work (look-ups, rate limits) may still be done with it: that pool's
// users never wait for a tenant connection.
func (db *DB) InTenant(ctx context.Context, t *tenancy.Tenant, fn func(ctx context.Context, tx pgx.Tx) error) error {
	return db.WithTenant(ctx, t, func(tx pgx.Tx) error {
		return fn(context.WithValue(ctx, holdKey{}, true), tx)
	})
}

// BackgroundLockWait bounds the lock waits of [DB.InTenantBackground]'s
// transactions.
const BackgroundLockWait = time.Second

// InTenantBackground is [DB.InTenant] for background work that visits
// tenants one after another (the embedding worker): its transaction waits
// at most BackgroundLockWait for a lock, then fails (PostgreSQL's
// lock_not_available, 55P03), so that one tenant's table locked by a
// migration or maintenance (ALTER TABLE, VACUUM FULL, LOCK TABLE) costs the
// others' turns a second, not as long as the lock lasts.
func (db *DB) InTenantBackground(ctx context.Context, t *tenancy.Tenant, fn func(ctx context.Context, tx pgx.Tx) error) error {
	if holdsTenantConn(ctx) {
		return ErrNestedConnection
	}
	return db.withTenantMode(ctx, false, t, "BEGIN", BackgroundLockWait.String(), func(tx pgx.Tx) error {
		return fn(context.WithValue(ctx, holdKey{}, true), tx)
	})
}

type tenantSem struct {
	sem   *semaphore.Weighted
	users int // holders and waiters; the entry goes when it drops to 0
}

// acquireQueryLogin takes one of the tenant's query login slots, then one
// of the process's (always in that order). It waits at most queryWait.
func (db *DB) acquireQueryLogin(ctx context.Context, tenantID string) (release func(), err error) {
	db.queryMu.Lock()
	ts := db.queryTenant[tenantID]
	if ts == nil {
		ts = &tenantSem{sem: semaphore.NewWeighted(db.queryTenantMax)}
		db.queryTenant[tenantID] = ts
	}
	ts.users++
	db.queryMu.Unlock()
	done := func() {
		db.queryMu.Lock()
		if ts.users--; ts.users == 0 {
			delete(db.queryTenant, tenantID)
		}
		db.queryMu.Unlock()
	}
	wctx, cancel := context.WithTimeout(ctx, queryWait)
	defer cancel()
	if err := ts.sem.Acquire(wctx, 1); err != nil {
		done()
		return nil, busyOr(ctx, &BusyError{What: "your organisation's concurrent queries", Scope: "tenant", Limit: int(db.queryTenantMax)})
	}
	if err := db.queryAll.Acquire(wctx, 1); err != nil {
		ts.sem.Release(1)
		done()
		return nil, busyOr(ctx, &BusyError{What: "this server's concurrent queries", Scope: "server", Limit: db.limits.QueryConns})
	}
	return func() { db.queryAll.Release(1); ts.sem.Release(1); done() }, nil
}

// busyOr is the caller's own context error if it ended, else busy.
func busyOr(ctx context.Context, busy error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return busy
}
