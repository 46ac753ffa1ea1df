package main

import (
	"context"
	"log/slog"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// database is the opened database and how to let go of it.
type database struct {
	*store.DB
	embedded *store.Embedded // nil with DATABASE_URL
}

// openDatabase opens DATABASE_URL, or the embedded cluster in DataDir
// (starting it unless another Gatehouse process already has), and brings the
// control schema up to date.
func openDatabase(ctx context.Context, cfg *Config, log *slog.Logger) (*database, error) {
	d := &database{}
	conn := cfg.DatabaseURL
	if conn == "" {
		e, err := store.StartEmbedded(ctx, store.EmbeddedOptions{DataDir: cfg.DataDir, Logger: log})
		if err != nil {
			return nil, err
		}
		d.embedded = e
		conn = e.ConnString("")
		log.Warn("using the EMBEDDED PostgreSQL (development default): set DATABASE_URL for production", "data_dir", e.DataDir())
	}
	db, err := store.Open(ctx, conn, &store.Options{Logger: log})
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
