package main

import (
	"context"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// database is the opened database and how to let go of it.
type database struct {
	*store.DB
	embedded *store.Embedded // nil with DATABASE_URL
}

// openDatabase opens DATABASE_URL, or the embedded cluster in DataDir
// (starting it unless another Gatehouse process already has), and brings the
// control schema up to date. announce (serve) says in the log that the
// embedded database is in use; CLI commands say nothing about it.
func openDatabase(ctx context.Context, cfg *Config, log *slog.Logger, announce bool) (*database, error) {
	d := &database{}
	conn := cfg.DatabaseURL
	if conn == "" {
		e, err := store.StartEmbedded(ctx, store.EmbeddedOptions{DataDir: cfg.DataDir, Logger: log})
		if err != nil {
			return nil, err
		}
		d.embedded = e
		conn = e.ConnString("")
		if announce {
			log.Warn("Using the embedded PostgreSQL in "+e.DataDir()+": fine for trying Gatehouse on this machine; for production set DATABASE_URL", "data_dir", e.DataDir())
		}
	}
	pooled := d.embedded == nil && behindPgBouncer(cfg.PgBouncer, conn)
	if pooled {
		log.Info("PgBouncer (transaction mode): no prepared statements, invalidations polled every 200ms", "GATEHOUSE_PGBOUNCER", cfg.PgBouncer)
	}
	opts := cfg.DB
	opts.Logger, opts.TransactionPooler = log, pooled
	db, err := store.Open(ctx, conn, &opts)
	if err != nil {
		d.close(ctx, log)
		return nil, err
	}
	d.DB = db
	if err := db.MigrateControl(ctx); err != nil {
		d.close(ctx, log)
		return nil, err
	}
	return d, nil
}

// behindPgBouncer decides whether the connection string leads to a
// transaction pooler: as configured, or, for auto, by PgBouncer's usual
// ports (6432; 6543 on Supabase) and host names.
func behindPgBouncer(setting, conn string) bool {
	switch setting {
	case "true":
		return true
	case "false":
		return false
	}
	cfg, err := pgconn.ParseConfig(conn)
	if err != nil {
		return false
	}
	host := strings.ToLower(cfg.Host)
	return cfg.Port == 6432 || cfg.Port == 6543 || strings.Contains(host, "pgbouncer") || strings.Contains(host, "pooler")
}

func (d *database) close(ctx context.Context, log *slog.Logger) {
	if d.DB != nil {
		d.DB.Close()
	}
	if d.embedded != nil {
		if err := d.embedded.Stop(context.WithoutCancel(ctx)); err != nil {
			log.Error("stopping embedded postgres", "error", err)
		}
	}
}
