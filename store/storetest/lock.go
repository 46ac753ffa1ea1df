package storetest

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// LockTable has another session hold schema.table of db in ACCESS
// EXCLUSIVE mode (as a migration's ALTER TABLE, VACUUM FULL or LOCK TABLE
// does) until release is called or the test ends. release may be called
// from any goroutine, more than once; it returns the first call's error.
func LockTable(tb testing.TB, db *store.DB, schema, table string) (release func() error) {
	tb.Helper()
	ctx := context.Background()
	holder, err := db.Pool().Begin(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var once sync.Once
	var rerr error
	release = func() error {
		once.Do(func() { rerr = holder.Rollback(context.Background()) })
		return rerr
	}
	tb.Cleanup(func() { _ = release() })
	if _, err := holder.Exec(ctx, "LOCK TABLE "+pgx.Identifier{schema, table}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		tb.Fatal(err)
	}
	return release
}
