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

// TestEmbeddedSizing: the settings the embedded cluster starts with for
// many tenants, a quarter of the memory for shared_buffers within
// [128 MB, 2 GB] and 16,384 files per backend.
func TestEmbeddedSizing(t *testing.T) {
	for _, c := range []struct {
		mem  uint64
		want string
	}{
		{0, "128MB"},         // unknown
		{256 << 20, "128MB"}, // never below PostgreSQL's default
		{1 << 30, "256MB"},   // a quarter
		{6 << 30, "1536MB"},  // a quarter
		{64 << 30, "2048MB"}, // at most 2 GB
		{1 << 40, "2048MB"},  // at most 2 GB
		{600 << 20, "150MB"}, // in whole MB
		{513 << 20, "128MB"}, // rounded down to whole MB
	} {
		got := store.EmbeddedSizing(c.mem)
		if got["shared_buffers"] != c.want || got["max_files_per_process"] != "16384" {
			t.Errorf("EmbeddedSizing(%d MB) = %v, want shared_buffers %s, max_files_per_process 16384", c.mem>>20, got, c.want)
		}
	}
}

// TestEmbeddedSized: a cluster started for real use (fsync on) runs with
// EmbeddedSizing's settings; one the operator changed with ALTER SYSTEM
// keeps the operator's value, and EmbeddedOptions.Settings win over both.
// Test clusters (NoFsync) keep PostgreSQL's defaults.
func TestEmbeddedSized(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own clusters")
	}
	ctx := context.Background()
	want := store.EmbeddedSizing(store.MachineMemory())
	// ask returns what sql, one text value, gives on e's cluster.
	ask := func(e *store.Embedded, sql string, args ...any) string {
		t.Helper()
		conn, err := pgx.Connect(ctx, e.ConnString(""))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var v string
		if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	show := func(e *store.Embedded, name string) string {
		t.Helper()
		return ask(e, "SELECT current_setting($1)", name)
	}
	// PostgreSQL shows shared_buffers in its largest whole unit (2GB).
	mb := func(e *store.Embedded) string {
		t.Helper()
		return ask(e, "SELECT (pg_size_bytes(current_setting('shared_buffers')) / 1048576)::text || 'MB'")
	}
	dir := filepath.Join(storetest.TempDir(t), "data")
	e, err := store.StartEmbedded(ctx, store.EmbeddedOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := mb(e); got != want["shared_buffers"] {
		t.Errorf("shared_buffers = %s, want %s", got, want["shared_buffers"])
	}
	if got := show(e, "max_files_per_process"); got != want["max_files_per_process"] {
		t.Errorf("max_files_per_process = %s, want %s", got, want["max_files_per_process"])
	}
	// The operator's own setting (ALTER SYSTEM) is kept at the next start.
	conn, err := pgx.Connect(ctx, e.ConnString(""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET shared_buffers = '200MB'"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	e, err = store.StartEmbedded(ctx, store.EmbeddedOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := mb(e); got != "200MB" {
		t.Errorf("after ALTER SYSTEM SET shared_buffers = '200MB' and a restart: %s, want the operator's 200MB", got)
	}
	if got := show(e, "max_files_per_process"); got != want["max_files_per_process"] {
		t.Errorf("max_files_per_process = %s after the operator set only shared_buffers, want %s", got, want["max_files_per_process"])
	}
	if err := e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// Settings passed by the caller win.
	e, err = store.StartEmbedded(ctx, store.EmbeddedOptions{DataDir: dir, Settings: map[string]string{"max_files_per_process": "2000"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := show(e, "max_files_per_process"); got != "2000" {
		t.Errorf("max_files_per_process = %s with Settings 2000", got)
	}
	if err := e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// A test cluster keeps the defaults.
	e, err = store.StartEmbedded(ctx, store.EmbeddedOptions{DataDir: filepath.Join(storetest.TempDir(t), "test"), NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop(ctx)
	if got := mb(e); got != "128MB" {
		t.Errorf("test cluster (NoFsync): shared_buffers = %s, want PostgreSQL's default 128MB", got)
	}
}
