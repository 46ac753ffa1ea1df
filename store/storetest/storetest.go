// Package storetest gives tests a real Postgres: one embedded cluster per
// test binary (started on first use from the machine's binaries, fsync off,
// and stopped by [Main]) and
// a fresh database per test, created from a template that already has the
// control schema.
//
// Use it from a package's TestMain:
//
//	func TestMain(m *testing.M) { storetest.Main(m) }
package storetest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
)

const template = "gatehouse_template"

var (
	cluster    *store.Embedded
	clusterDir string
	startOnce  sync.Once
	startErr   error
	tmplOnce   sync.Once
	tmplErr    error
	createMu   sync.Mutex // CREATE DATABASE ... TEMPLATE needs the template idle
	seq        atomic.Int64
	mainCalled bool
)

// Main runs the tests and stops the cluster, which the first test that
// asks for a database starts: a test process that needs none (a fuzzing
// worker of a pure fuzz target, say) starts no PostgreSQL.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	mainCalled = true
	code := m.Run()
	if cluster != nil {
		if err := cluster.Stop(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "storetest:", err)
		}
	}
	if clusterDir != "" {
		os.RemoveAll(clusterDir)
	}
	return code
}

// start starts the cluster, once.
func start() error {
	startOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gatehouse-test-")
		if err != nil {
			startErr = err
			return
		}
		clusterDir = dir
		// The postgres user (when we are root) must be able to traverse it.
		if err := os.Chmod(dir, 0o755); err != nil {
			startErr = err
			return
		}
		cluster, startErr = store.StartEmbedded(context.Background(), store.EmbeddedOptions{
			DataDir:  dir,
			NoFsync:  true,
			Settings: map[string]string{"max_connections": "300"},
		})
	})
	return startErr
}

// ConnString returns the connection string of a new, migrated, empty
// database, dropped when the test ends.
func ConnString(tb testing.TB) string {
	tb.Helper()
	if !mainCalled {
		tb.Fatal("storetest: no cluster; call storetest.Main from TestMain")
	}
	if err := start(); err != nil {
		tb.Fatalf("storetest: starting PostgreSQL: %v", err)
	}
	ctx := context.Background()
	tmplOnce.Do(func() { tmplErr = makeTemplate(ctx) })
	if tmplErr != nil {
		tb.Fatalf("storetest: template: %v", tmplErr)
	}
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), seq.Add(1))
	admin := connect(tb, "postgres")
	createMu.Lock()
	_, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, template))
	createMu.Unlock()
	if err != nil {
		tb.Fatalf("storetest: create database: %v", err)
	}
	tb.Cleanup(func() {
		if _, err := admin.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("storetest: drop database: %v", err)
		}
		admin.Close(ctx)
	})
	return cluster.ConnString(name)
}

// MustOpenDB opens a new, migrated, empty database, closed and dropped when
// the test ends. Its tools' statements are prepared on their first use
// (store.Options.PrepareAfter 1), so every test through it runs them
// prepared, as a busy server does.
func MustOpenDB(tb testing.TB) *store.DB {
	tb.Helper()
	db, err := store.Open(context.Background(), ConnString(tb), &store.Options{Logger: Logger(tb), PrepareAfter: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(db.Close) // registered after the drop, so it runs before it
	return db
}

// Logger returns a logger writing to the test log; lines logged after the
// test ends (by background goroutines) are dropped. A fuzz target's log
// cannot be written while it runs its inputs, so for a *testing.F it
// discards.
func Logger(tb testing.TB) *slog.Logger {
	if _, fuzz := tb.(*testing.F); fuzz {
		return slog.New(slog.DiscardHandler)
	}
	w := &tbWriter{tb: tb}
	tb.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct {
	tb   testing.TB
	done atomic.Bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func connect(tb testing.TB, db string) *pgx.Conn {
	tb.Helper()
	if err := start(); err != nil {
		tb.Fatalf("storetest: starting PostgreSQL: %v", err)
	}
	conn, err := pgx.Connect(context.Background(), cluster.ConnString(db))
	if err != nil {
		tb.Fatalf("storetest: %v", err)
	}
	return conn
}

func makeTemplate(ctx context.Context) error {
	admin, err := pgx.Connect(ctx, cluster.ConnString("postgres"))
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+template); err != nil {
		return err
	}
	db, err := store.Open(ctx, cluster.ConnString(template), nil)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.MigrateControl(ctx)
}

// TempDir returns a new directory, removed when the test ends, that the
// postgres OS user can traverse (os.MkdirTemp makes it 0700, which blocks
// the server when tests run as root).
func TempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "gatehouse-test-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// RestrictedConnString returns the connection string of a new, empty
// database owned by a new login role that may not create roles (as on some
// managed PostgreSQL plans), connecting as that role. Migrations have not
// run: the caller's code runs them as that role.
func RestrictedConnString(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	n := seq.Add(1)
	role, name := fmt.Sprintf("app_%d_%d", os.Getpid(), n), fmt.Sprintf("restricted_%d_%d", os.Getpid(), n)
	admin := connect(tb, "postgres")
	defer admin.Close(ctx)
	for _, sql := range []string{
		"CREATE ROLE " + role + " LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB",
		"CREATE DATABASE " + name + " OWNER " + role,
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			tb.Fatalf("storetest: %v", err)
		}
	}
	tb.Cleanup(func() {
		a := connect(tb, "postgres")
		defer a.Close(ctx)
		if _, err := a.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("storetest: drop database: %v", err)
		}
	})
	return strings.Replace(cluster.ConnString(name), "user=postgres", "user="+role, 1)
}
