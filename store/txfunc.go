package store

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// beginTxFunc runs fn in a transaction begun with opts on a connection
// of pool, as pgx.BeginTxFunc does, except at its end: its COMMIT is sent
// with commitContext. pgx stops reading when ctx ends and closes the
// connection, but PostgreSQL runs a COMMIT it has received to its end
// (a deferred trigger waiting for a lock, a slow WAL flush), so the
// caller would be told the transaction failed while it commits, and a
// caller that records the failure (mcp's resource reads, the step-up
// challenge's record, aggregated refusals) would leave two records of
// one request. Here the end of ctx asks PostgreSQL to cancel the COMMIT
// and its answer decides: nil means committed, an error means not (or,
// only if PostgreSQL gave no answer within groupRollbackTimeout, that the
// outcome is unknown).
//
// No COMMIT is sent once ctx has ended before it; fn's error or that of
// ctx rolls the transaction back and is returned.
func beginTxFunc(ctx context.Context, pool *pgxpool.Pool, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return connTxFunc(ctx, c.Conn(), opts, fn)
}

// beginFunc is beginTxFunc with the default transaction options.
func beginFunc(ctx context.Context, pool *pgxpool.Pool, fn func(pgx.Tx) error) error {
	return beginTxFunc(ctx, pool, pgx.TxOptions{}, fn)
}

// connTxFunc is beginTxFunc on a connection already held.
func connTxFunc(ctx context.Context, conn *pgx.Conn, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	tx, err := conn.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil || ctx.Err() != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), groupRollbackTimeout)
		defer cancel()
		_ = tx.Rollback(rctx)
		if err == nil {
			err = ctx.Err() // no COMMIT for a caller whose time has run out
		}
		return err
	}
	cctx, stop := commitContext(ctx, conn)
	err = tx.Commit(cctx)
	// A failed Commit has ended the transaction (pgx closes it, and the
	// connection if PostgreSQL did not roll it back): nothing to roll back.
	if cause := stop(); err != nil {
		return cancelled(cause, err)
	}
	return nil
}
