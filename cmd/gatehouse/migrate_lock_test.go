package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestMigrateRetriesTenantsHeldByLocks: `gatehouse migrate` meets a tenant
// whose todos another session is reading (as a dump or a long query
// does): its migration gives up after a bounded wait instead of queuing
// every statement on the table behind it, says so, tries again after a
// pause, and succeeds once the reader is gone.
func TestMigrateRetriesTenantsHeldByLocks(t *testing.T) {
	ctx := context.Background()
	url := storetest.ConnString(t)
	db, err := store.Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tn, _, err := db.EnsureTenant(ctx, "held.example", tenancy.Organization)
	if err != nil {
		t.Fatal(err)
	}
	storetest.BackToSchema2(t, db, tn)
	reader, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Exec(ctx, "SELECT count(*) FROM "+pgx.Identifier{tn.Schema, "todos"}.Sanitize()); err != nil {
		_ = reader.Rollback(ctx)
		t.Fatal(err)
	}
	// Gone during the pause after the first try (the transaction is used
	// by that goroutine alone from here).
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		time.Sleep(3 * time.Second)
		_ = reader.Rollback(context.Background())
	}()
	defer func() { <-gone }()
	code, stdout, stderr := gh(t, map[string]string{"DATABASE_URL": url}, "migrate")
	if code != 0 || !strings.Contains(stderr, "1 tenant schema(s) held up by locks; trying them again in 5s") || !strings.Contains(stdout, "up to date") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s\nwant a retry, then success", code, stdout, stderr)
	}
	if after, err := db.FindTenantByID(ctx, tn.ID); err != nil || after.SchemaVersion != store.TenantSchemaVersion() {
		t.Fatalf("tenant after migrate: %+v, %v", after, err)
	}
}
