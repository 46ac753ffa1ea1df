package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres is returned by [StartEmbedded] when no PostgreSQL server
// binaries can be found on this machine.
var ErrNoPostgres = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin; " +
	"install PostgreSQL (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@16) " +
	"or set DATABASE_URL to an existing server")

// EmbeddedDatabase is the database Gatehouse creates in its embedded cluster.
const EmbeddedDatabase = "gatehouse"

// EmbeddedOptions configure [StartEmbedded].
type EmbeddedOptions struct {
	// DataDir holds the cluster (DataDir/pgdata) and its log. Created if missing.
	DataDir string
	// NoFsync turns off fsync, synchronous_commit and full_page_writes.
	// For tests only: a crash can lose or corrupt data.
	NoFsync bool
	// Settings are extra server settings passed at start (name → value).
	Settings map[string]string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// Embedded is a private PostgreSQL cluster run from the machine's binaries.
// It listens on a unix socket only (no TCP), in a short directory under /tmp
// whose permissions admit only the cluster's OS user (and root).
//
// Several Gatehouse processes may share one data directory: the first to
// start the cluster starts it, the others connect to it, and whoever leaves it
// unused stops it ([Embedded.Stop]).
type Embedded struct {
	binDir    string
	dataDir   string
	pgdata    string
	socketDir string
	cred      *syscall.Credential // non-nil when we run the server as another user
	log       *slog.Logger
	opts      EmbeddedOptions
}

// StartEmbedded starts (or joins, when already running) the cluster in
// opts.DataDir, creating it on first use, and makes sure the
// [EmbeddedDatabase] database exists.
func StartEmbedded(ctx context.Context, opts EmbeddedOptions) (*Embedded, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("embedded postgres: data dir: %w", err)
	}
	binDir, err := findPostgresBinaries()
	if err != nil {
		return nil, err
	}
	e := &Embedded{
		binDir:  binDir,
		dataDir: dataDir,
		pgdata:  filepath.Join(dataDir, "pgdata"),
		log:     log,
		opts:    opts,
	}
	sum := sha256.Sum256([]byte(e.pgdata))
	// A unix socket path must stay under 107 bytes: keep it short and stable.
	e.socketDir = "/tmp/gatehouse-" + hex.EncodeToString(sum[:6])
	if os.Geteuid() == 0 {
		if e.cred, err = postgresCredential(); err != nil {
			return nil, err
		}
	}
	if err := e.prepareDirs(); err != nil {
		return nil, err
	}
	if err := e.initdb(ctx, opts.NoFsync); err != nil {
		return nil, err
	}
	started, err := e.start(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := e.ensureDatabase(ctx); err != nil {
		return nil, err
	}
	if _, set := opts.Settings["max_locks_per_transaction"]; !set {
		if err := e.sizeLockTable(ctx, started); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// ConnString returns a libpq connection string for database db (empty means
// [EmbeddedDatabase]) over the cluster's unix socket. Its application_name
// names this process, so [Embedded.Stop] can tell its own (closing)
// connections from other processes'.
func (e *Embedded) ConnString(db string) string {
	if db == "" {
		db = EmbeddedDatabase
	}
	return fmt.Sprintf("host=%s port=5432 user=postgres dbname=%s sslmode=disable application_name=%s", e.socketDir, db, e.appName())
}

func (e *Embedded) appName() string { return "gatehouse-" + strconv.Itoa(os.Getpid()) }

// DataDir returns the absolute data directory.
func (e *Embedded) DataDir() string { return e.dataDir }

// SocketPath is the path of the cluster's unix socket (for tools that
// reach it without libpq, such as bench/load's round-trip counter).
func (e *Embedded) SocketPath() string { return filepath.Join(e.socketDir, ".s.PGSQL.5432") }

// Stop stops the cluster unless another process still has a connection open
// to it (another Gatehouse process sharing the data directory); that process
// stops it when it leaves. Close your own pools before calling Stop.
func (e *Embedded) Stop(ctx context.Context) error {
	others, err := e.otherClients(ctx)
	if err == nil && others > 0 {
		e.log.Info("embedded postgres left running: another process is using it", "clients", others)
		return nil
	}
	out, err := e.run(ctx, "pg_ctl", "stop", "-D", e.pgdata, "-m", "fast", "-w", "-t", "60")
	if err != nil {
		return fmt.Errorf("embedded postgres: stop: %w: %s", err, out)
	}
	_ = os.Remove(e.socketDir) // empty once the server is down
	e.log.Info("embedded postgres stopped", "data_dir", e.dataDir)
	return nil
}

// Restart stops the cluster in mode ("fast", or "immediate": no shutdown
// checkpoint, as after a crash) and starts it again with the same
// settings, returning once it accepts connections. For outage tests.
func (e *Embedded) Restart(ctx context.Context, mode string) error {
	out, err := e.run(ctx, "pg_ctl", "restart", "-D", e.pgdata, "-m", mode, "-w", "-t", "60", "-l", filepath.Join(e.dataDir, "postgres.log"))
	if err != nil {
		return fmt.Errorf("embedded postgres: restart: %w: %s", err, out)
	}
	return nil
}

// Halt stops the cluster at once (immediate mode: as after a crash),
// whoever is connected; Resume starts it again. For outage tests.
func (e *Embedded) Halt(ctx context.Context) error {
	out, err := e.run(ctx, "pg_ctl", "stop", "-D", e.pgdata, "-m", "immediate", "-w", "-t", "60")
	if err != nil {
		return fmt.Errorf("embedded postgres: halt: %w: %s", err, out)
	}
	return nil
}

// Resume starts a cluster stopped by Halt, with its original settings.
func (e *Embedded) Resume(ctx context.Context) error {
	_, err := e.start(ctx, e.opts)
	return err
}

func (e *Embedded) otherClients(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.ConnString("postgres"))
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	// Our own pool's backends may still be exiting after we closed it: they
	// carry our application_name and do not count.
	err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> $1`, e.appName()).Scan(&n)
	return n, err
}

// findPostgresBinaries returns the directory holding initdb, pg_ctl and
// postgres: the one pg_ctl on PATH resolves to, else the newest
// /usr/lib/postgresql/N/bin.
func findPostgresBinaries() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() {
				return false
			}
		}
		return true
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// postgresCredential returns the identity the server runs under when we are
// root: PostgreSQL refuses to run as root.
func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("embedded postgres: running as root needs a 'postgres' OS user to run the server as " +
			"(PostgreSQL refuses to run as root): create one (useradd --system postgres), run Gatehouse as a non-root user, " +
			"or set DATABASE_URL")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (e *Embedded) prepareDirs() error {
	if err := os.MkdirAll(filepath.Dir(e.dataDir), 0o755); err != nil {
		return fmt.Errorf("embedded postgres: %w", err)
	}
	if e.cred != nil {
		// The server's user must be able to reach the data directory.
		for dir := filepath.Dir(e.dataDir); ; dir = filepath.Dir(dir) {
			st, err := os.Stat(dir)
			if err != nil {
				return fmt.Errorf("embedded postgres: %w", err)
			}
			if !traversable(st, e.cred) {
				return fmt.Errorf("embedded postgres: the postgres user cannot reach %s because %s is not traversable by it; "+
					"set GATEHOUSE_DATA_DIR to a directory it can reach (for example under /var/lib or /tmp) or run: chmod o+x %s",
					e.dataDir, dir, dir)
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	for _, d := range []string{e.dataDir, e.socketDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("embedded postgres: %w", err)
		}
		if e.cred != nil {
			if err := os.Chown(d, int(e.cred.Uid), int(e.cred.Gid)); err != nil {
				return fmt.Errorf("embedded postgres: %w", err)
			}
		}
	}
	return nil
}

func traversable(st fs.FileInfo, cred *syscall.Credential) bool {
	mode := st.Mode().Perm()
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	switch {
	case sys.Uid == cred.Uid:
		return mode&0o100 != 0
	case sys.Gid == cred.Gid:
		return mode&0o010 != 0
	default:
		return mode&0o001 != 0
	}
}

func (e *Embedded) initdb(ctx context.Context, noFsync bool) error {
	version, err := os.ReadFile(filepath.Join(e.pgdata, "PG_VERSION"))
	if err == nil {
		have := strings.TrimSpace(string(version))
		if want := strconv.Itoa(pgMajor(e.binDir)); pgMajor(e.binDir) > 0 && have != want {
			return fmt.Errorf("embedded postgres: %s holds a PostgreSQL %s cluster but the binaries in %s are version %s; "+
				"use matching binaries or move the data directory away", e.pgdata, have, e.binDir, want)
		}
		return nil
	}
	e.log.Info("creating embedded postgres cluster", "data_dir", e.pgdata)
	args := []string{"-D", e.pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-instructions"}
	if noFsync {
		args = append(args, "--no-sync")
	}
	if out, err := e.run(ctx, "initdb", args...); err != nil {
		return fmt.Errorf("embedded postgres: initdb: %w: %s", err, out)
	}
	return nil
}

// start starts the server, or joins it when it runs already (started false).
func (e *Embedded) start(ctx context.Context, opts EmbeddedOptions) (started bool, err error) {
	if _, err := e.run(ctx, "pg_ctl", "status", "-D", e.pgdata); err == nil {
		if _, err := os.Stat(filepath.Join(e.socketDir, ".s.PGSQL.5432")); err == nil {
			e.log.Info("joined running embedded postgres", "data_dir", e.dataDir)
			return false, nil
		}
		return false, fmt.Errorf("embedded postgres: a server is already running on %s but not on the socket in %s; stop it with: pg_ctl stop -D %s",
			e.pgdata, e.socketDir, e.pgdata)
	}
	settings := map[string]string{
		"listen_addresses":        "''",
		"unix_socket_directories": "'" + e.socketDir + "'",
		"unix_socket_permissions": "0700",
		"port":                    "5432",
	}
	if opts.NoFsync {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	} else {
		// Sized for many tenants (EmbeddedSizing), unless the operator set
		// the setting with ALTER SYSTEM. Test clusters (NoFsync) keep
		// PostgreSQL's defaults: small and quick to start.
		auto, _ := os.ReadFile(filepath.Join(e.pgdata, "postgresql.auto.conf"))
		for k, v := range EmbeddedSizing(MachineMemory()) {
			if !setIn(string(auto), k) {
				settings[k] = v
			}
		}
		keepFileLimit()
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var o strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&o, " -c %s=%s", k, settings[k])
	}
	logFile := e.logFile()
	out, err := e.run(ctx, "pg_ctl", "start", "-D", e.pgdata, "-l", logFile, "-w", "-t", "60", "-o", strings.TrimSpace(o.String()))
	if err != nil {
		return false, fmt.Errorf("embedded postgres: start: %w: %s%s", err, out, logTail(logFile))
	}
	e.log.Info("embedded postgres started", "data_dir", e.dataDir, "socket_dir", e.socketDir)
	return true, nil
}

// EmbeddedSizing returns the server settings the embedded cluster starts
// with (besides max_locks_per_transaction, see sizeLockTable) on a machine
// with mem bytes of memory (0: unknown). Both bound what a spread of calls
// over many tenants costs; measured with bench/tenants at 10,000 tenants,
// calls over 2,000 of them (bench/README.md, "why calls spread over many
// tenants are slower"):
//
//   - shared_buffers: a quarter of the memory (PostgreSQL's documented
//     starting point, "Resource Consumption"), at least PostgreSQL's
//     default of 128 MB and at most 2 GB, since Gatehouse and the OS page
//     cache share the machine. Each tenant a call touches keeps a few pages
//     of its own (a table's and its indexes' first pages, read by every
//     plan); at the default 128 MB (16,384 pages) calls over 2,000 tenants
//     read 4–5 pages a call back from the OS page cache.
//   - max_files_per_process: 16,384 instead of 1,000. A backend keeps one
//     file open per relation it uses; one serving hundreds of tenants
//     closed and reopened table and index files in every call (open and
//     close were ~8% of its time). PostgreSQL itself lowers it to the
//     descriptors the process may open (keepFileLimit passes ours on).
func EmbeddedSizing(mem uint64) map[string]string {
	const mb = 1 << 20
	buffers := min(max(mem/4, 128*mb), 2048*mb)
	return map[string]string{
		"shared_buffers":        fmt.Sprintf("%dMB", buffers/mb),
		"max_files_per_process": "16384",
	}
}

// setIn reports whether the postgresql.auto.conf text conf sets name
// (ALTER SYSTEM SET name = …), which a command-line setting would
// override.
func setIn(conf, name string) bool {
	for line := range strings.Lines(conf) {
		k, _, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return true
		}
	}
	return false
}

// MachineMemory returns the memory this process may use, in bytes: the
// machine's (MemTotal in /proc/meminfo), or its cgroup's limit when lower
// (memory.max, cgroup v2). 0 when unknown (not Linux).
func MachineMemory() uint64 {
	var total uint64
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				total = kb << 10
			}
		}
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if limit, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && limit > 0 && (total == 0 || limit < total) {
			total = limit
		}
	}
	return total
}

// keepFileLimit makes the programs this process starts (the server)
// inherit its open-file limit. Go raises its own soft RLIMIT_NOFILE to the
// hard limit at start but gives children the original soft limit (often
// 1,024 under systemd), which would cap max_files_per_process; setting
// the limit explicitly tells Go to leave it to children
// (syscall.Setrlimit's documentation).
func keepFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

func (e *Embedded) logFile() string { return filepath.Join(e.dataDir, "postgres.log") }

func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\nserver log (" + path + "):\n" + string(b)
}

// sizeLockTable keeps max_locks_per_transaction large enough for pg_dump
// of the database (see [LocksNeeded]) with room to grow: for twice the
// relations there are now, in steps of 64, never lowered. A raise is
// written with ALTER SYSTEM (postgresql.auto.conf) and takes a restart,
// done now when this process started the server (under a second) and
// left to the next start when it joined a running one.
func (e *Embedded) sizeLockTable(ctx context.Context, started bool) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.ConnString(""))
	if err != nil {
		return fmt.Errorf("embedded postgres: connect: %w", err)
	}
	defer conn.Close(ctx)
	b, err := backupLocks(ctx, conn)
	if err != nil {
		return fmt.Errorf("embedded postgres: %w", err)
	}
	want := EmbeddedLocks(b.Relations, b.Connections)
	if want <= b.Setting {
		return nil
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER SYSTEM SET max_locks_per_transaction = %d", want)); err != nil {
		return fmt.Errorf("embedded postgres: raising max_locks_per_transaction: %w", err)
	}
	attrs := []any{"relations", b.Relations, "was", b.Setting, "now", want}
	if !started {
		e.log.Warn("embedded postgres: max_locks_per_transaction raised for backups; takes effect when the cluster next starts (another process runs it now)", attrs...)
		return nil
	}
	conn.Close(ctx)
	if out, err := e.run(ctx, "pg_ctl", "restart", "-D", e.pgdata, "-l", e.logFile(), "-m", "fast", "-w", "-t", "60"); err != nil {
		return fmt.Errorf("embedded postgres: restart: %w: %s%s", err, out, logTail(e.logFile()))
	}
	e.log.Info("embedded postgres: max_locks_per_transaction raised so that pg_dump can lock every table (restarted)", attrs...)
	return nil
}

// EmbeddedLocks is the max_locks_per_transaction the embedded cluster
// sets for a database of relations lockable relations: [LocksNeeded] for
// twice as many, rounded up to a multiple of 64. Each step of 64 costs
// about 3 MB of shared memory at 100 connections (measured: 149 MB in
// all at 64, 195 MB at 1,024).
func EmbeddedLocks(relations, connections int) int {
	return (LocksNeeded(2*relations, connections) + 63) / 64 * 64
}

func (e *Embedded) ensureDatabase(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.ConnString("postgres"))
	if err != nil {
		return fmt.Errorf("embedded postgres: connect: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", EmbeddedDatabase).Scan(&exists); err != nil {
		return fmt.Errorf("embedded postgres: %w", err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{EmbeddedDatabase}.Sanitize())
	var pgErr interface{ SQLState() string }
	if errors.As(err, &pgErr) && pgErr.SQLState() == "42P04" { // created concurrently by another process
		err = nil
	}
	if err != nil {
		return fmt.Errorf("embedded postgres: create database: %w", err)
	}
	return nil
}

// Run executes one of the cluster's client or server programs (pg_dump,
// pg_restore, psql, ...: the binaries next to its initdb) as the cluster's
// OS user (postgres, when we are root), with its working directory in the
// data directory, and returns their combined output. Files it names must be
// writable by that user.
func (e *Embedded) Run(ctx context.Context, name string, args ...string) (string, error) {
	return e.run(ctx, name, args...)
}

// run executes one of the cluster's binaries, as the postgres user when we
// are root, and returns its combined output.
func (e *Embedded) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.binDir, name), args...)
	cmd.Dir = e.dataDir
	cmd.Env = []string{"PATH=" + e.binDir + ":/usr/bin:/bin", "LC_ALL=C", "TZ=UTC"}
	if e.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: e.cred}
		cmd.Env = append(cmd.Env, "HOME="+e.dataDir, "USER=postgres")
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}
