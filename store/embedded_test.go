package store_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestEmbeddedLifecycle: created on first start, joined by a second process
// while running, left running while another client uses it, stopped by the
// last one, and reused with its data on the next start.
func TestEmbeddedLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second cluster")
	}
	ctx := context.Background()
	dir := filepath.Join(storetest.TempDir(t), "data")
	first, err := store.StartEmbedded(ctx, store.EmbeddedOptions{DataDir: dir, NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	exec := func(e *store.Embedded, sql string) {
		t.Helper()
		conn, err := pgx.Connect(ctx, e.ConnString(""))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	exec(first, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")

	second, err := store.StartEmbedded(ctx, store.EmbeddedOptions{DataDir: dir})
	if err != nil {
		t.Fatalf("joining a running cluster: %v", err)
	}
	// While another process has a client connected, second must not stop it.
	held, err := pgx.Connect(ctx, first.ConnString("")+" application_name=another-process")
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := held.Ping(ctx); err != nil {
		t.Fatalf("cluster stopped under a connected client: %v", err)
	}
	held.Close(ctx)
	// Its backend exits a moment after the client leaves (seen under load:
	// Stop counted it and left the cluster running); wait until it is gone.
	for range 100 {
		conn, err := pgx.Connect(ctx, first.ConnString(""))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'another-process'").Scan(&n)
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := first.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(ctx, first.ConnString("")); err == nil {
		t.Fatal("cluster still accepts connections after the last Stop")
	}

	again, err := store.StartEmbedded(ctx, store.EmbeddedOptions{DataDir: dir, NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Stop(ctx)
	conn, err := pgx.Connect(ctx, again.ConnString(""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var x int
	if err := conn.QueryRow(ctx, "SELECT x FROM kept").Scan(&x); err != nil || x != 42 {
		t.Fatalf("data after restart: %d, %v", x, err)
	}
	// No TCP listener: the cluster is reachable on its unix socket only.
	var listen string
	if err := conn.QueryRow(ctx, "SHOW listen_addresses").Scan(&listen); err != nil || listen != "" {
		t.Errorf("listen_addresses = %q, %v; want empty (unix socket only)", listen, err)
	}
}

func TestEmbeddedUnreachableDataDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs the server as another user")
	}
	parent, err := os.MkdirTemp("", "gatehouse-private-") // 0700, root-owned
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	_, err = store.StartEmbedded(context.Background(), store.EmbeddedOptions{DataDir: filepath.Join(parent, "data")})
	if err == nil || !strings.Contains(err.Error(), "not traversable") || !strings.Contains(err.Error(), "GATEHOUSE_DATA_DIR") {
		t.Fatalf("error = %v; want one naming the untraversable directory and GATEHOUSE_DATA_DIR", err)
	}
}
