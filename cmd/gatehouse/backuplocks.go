package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// backupLocksEvery is how often the lock table is compared with the
// catalog again (tenants provisioned meanwhile add relations).
const backupLocksEvery = 10 * time.Minute

// watchBackupLocks compares max_locks_per_transaction with what pg_dump of
// the database needs (store.BackupLocks) now and every backupLocksEvery
// until ctx ends. While it falls short, a warning is logged (at the first
// check, and whenever it starts falling short) and /readyz carries a
// "backup" detail saying what to set; readiness itself never depends on
// it. A check that cannot run is logged and leaves the note as it was.
func watchBackupLocks(ctx context.Context, check func(context.Context) (store.BackupLocks, error), notes *readyNotes, log *slog.Logger, every time.Duration) {
	short := false
	for {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		b, err := check(cctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Warn("cannot compare max_locks_per_transaction with the catalog", "error", err)
		case !b.OK():
			notes.set("backup", b.String())
			if !short {
				log.Warn("backups: "+b.String(), "relations", b.Relations, "max_locks_per_transaction", b.Setting,
					"needed", b.Needed, "connections", b.Connections)
			}
			short = true
		default:
			notes.clear("backup")
			if short {
				log.Info("backups: " + b.String())
			}
			short = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}
