package store

import (
	"context"

	"github.com/jackc/pgx/v5"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// GCRA implements tenancy.LimitStore with one statement (see migration
// 0003: an unlogged table and synchronous_commit off).
func (db *DB) GCRA(ctx context.Context, keys []string, intervals []time.Duration, bursts []int) (tenancy.GCRAResult, error) {
	ms := make([]float64, len(intervals))
	for i, d := range intervals {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	var r tenancy.GCRAResult
	var retryMS float64
	// A prepared statement (parsed and planned once per connection) unless
	// a pooler in transaction mode forbids them: this runs on every request.
	err := db.pool.QueryRow(ctx, "SELECT allowed, retry_after_ms, remaining, over FROM gatehouse.gcra($1, $2, $3)",
		db.hotMode, keys, ms, bursts).Scan(&r.Allowed, &retryMS, &r.Remaining, &r.Over)
	r.RetryAfter = time.Duration(retryMS * float64(time.Millisecond))
	return r, err
}

// ForgetRateLimits deletes counters that are fully replenished (their
// timestamp is in the past), so the table holds only active keys.
func (db *DB) ForgetRateLimits(ctx context.Context) (int64, error) {
	tag, err := db.pool.Exec(ctx, "DELETE FROM gatehouse.rate_limits WHERE tat < extract(epoch FROM now()) * 1000 - 60000")
	return tag.RowsAffected(), err
}

// SetTenantRateLimit sets (or, with nil, clears) a tenant's override of the
// default tenant limit, and tells every replica.
func (db *DB) SetTenantRateLimit(ctx context.Context, tenantID string, r *tenancy.Rate) error {
	var perMinute *float64
	var burst *int
	if r != nil {
		perMinute, burst = &r.PerMinute, &r.Burst
	}
	return db.updateTenant(ctx, tenantID, "UPDATE gatehouse.tenants SET rate_per_minute = $2, rate_burst = $3 WHERE id = $1", perMinute, burst)
}

// GCRAState reads the GCRA timestamps of keys (epoch milliseconds) without
// charging anything; unused keys are absent.
func (db *DB) GCRAState(ctx context.Context, keys []string) (map[string]float64, error) {
	rows, _ := db.pool.Query(ctx, "SELECT key, tat FROM gatehouse.rate_limits WHERE key = ANY($1)", keys)
	out := map[string]float64{}
	var k string
	var tat float64
	_, err := pgx.ForEachRow(rows, []any{&k, &tat}, func() error { out[k] = tat; return nil })
	return out, err
}

// GCRALease implements tenancy.LeaseStore with one statement (migration
// 0014): for each key, up to wants[i] requests charged at once.
func (db *DB) GCRALease(ctx context.Context, keys []string, intervals []time.Duration, bursts, wants []int) (tenancy.LeaseResult, error) {
	ms := make([]float64, len(intervals))
	for i, d := range intervals {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	var r tenancy.LeaseResult
	var retryMS []float64
	err := db.pool.QueryRow(ctx, "SELECT granted, retry_after_ms, remaining FROM gatehouse.gcra_lease($1, $2, $3, $4)",
		db.hotMode, keys, ms, bursts, wants).Scan(&r.Granted, &retryMS, &r.Remaining)
	r.RetryAfter = make([]time.Duration, len(retryMS))
	for i, v := range retryMS {
		r.RetryAfter[i] = time.Duration(v * float64(time.Millisecond))
	}
	return r, err
}

// GCRAReturn implements tenancy.LeaseStore: unused leased requests go
// back, all keys in one statement.
func (db *DB) GCRAReturn(ctx context.Context, keys []string, intervals []time.Duration, counts []int) error {
	ms := make([]float64, len(intervals))
	for i, d := range intervals {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	_, err := db.pool.Exec(ctx, "SELECT gatehouse.gcra_return($1, $2, $3)", db.hotMode, keys, ms, counts)
	return err
}
