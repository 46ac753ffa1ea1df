package main

import (
	"testing"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// pgBouncer starts PgBouncer in transaction mode in front of the test
// database conn (storetest.PgBouncer) and returns a connection string
// through it.
func pgBouncer(t testing.TB, conn string) string {
	t.Helper()
	pooled, _ := storetest.PgBouncer(t, conn)
	return pooled
}
