package storetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse-mcp/gatehouse/internal/testdeps"
)

// PgBouncer starts PgBouncer (testdeps.PgBouncer: skips the test where it
// is missing, fails it under CI=true) in transaction mode in front of the
// test database conn (a connection string such as [ConnString]'s), and
// returns a connection string through it and the PgBouncer process's id
// (for benchmarks that read its CPU time). It is stopped when tb ends;
// its log is printed if tb failed.
func PgBouncer(tb testing.TB, conn string) (pooled string, pid int) {
	tb.Helper()
	bin := testdeps.Need(tb, testdeps.PgBouncer)
	cfg, err := pgconn.ParseConfig(conn)
	if err != nil {
		tb.Fatal(err)
	}
	dir := TempDir(tb)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	ini := fmt.Sprintf(`[databases]
%[1]s = host=%[2]s port=%[3]d dbname=%[1]s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %[4]s
unix_socket_dir =
auth_type = trust
auth_file = %[5]s/userlist.txt
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
admin_users = postgres
`, cfg.Database, cfg.Host, cfg.Port, port, dir)
	for name, body := range map[string]string{"pgbouncer.ini": ini, "userlist.txt": `"postgres" ""` + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if os.Geteuid() == 0 { // PgBouncer refuses to run as root
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_, _ = cmd.Process.Wait()
		if tb.Failed() {
			tb.Logf("pgbouncer log:\n%s", logs.String())
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("pgbouncer did not start:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", addr, cfg.Database), cmd.Process.Pid
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
