package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNotFound is returned when a workspace row does not exist in the
// caller's tenant.
var ErrNotFound = errors.New("not found")

// Options configure [Open]. A nil *Options means the defaults.
type Options struct {
	// MaxConns bounds the pool (default: pgxpool's, max(4, GOMAXPROCS)).
	MaxConns int32
	// TransactionPooler says the connection string leads to a pooler in
	// transaction mode (PgBouncer): no server-side prepared statements, no
	// session state, and invalidations are polled rather than LISTENed to.
	TransactionPooler bool
	Logger            *slog.Logger
}

// DB is Gatehouse's database.
type DB struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	// hotMode runs the fixed, fully qualified statements of every request
	// (rate limits): prepared once per connection where allowed.
	hotMode pgx.QueryExecMode
	// pooled: behind a transaction pooler (Options.TransactionPooler).
	pooled bool
	// queryLogins remembers the query roles whose login is enabled.
	queryLogins sync.Map
	secrets     sync.Map // name → []byte, see Secret
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
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database: cannot connect to %s@%s/%s: %w", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db := &DB{pool: pool, log: log, hotMode: pgx.QueryExecModeCacheStatement, pooled: opts.TransactionPooler}
	if opts.TransactionPooler {
		db.hotMode = pgx.QueryExecModeExec
	}
	return db, nil
}

// Close closes every connection.
func (db *DB) Close() { db.pool.Close() }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.pool.Ping(ctx) }

// Pool exposes the pool to tests and benchmarks in this module.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }
