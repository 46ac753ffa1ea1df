package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// benchConcurrency is how many calls are in flight at once.
const benchConcurrency = 8

// BenchmarkPgBouncer measures what running a replica through PgBouncer in
// transaction mode costs: two `gatehouse serve` processes on one test
// database, one connected directly, one through PgBouncer, driven in turn
// in the same run with the same tools, key and tenant. Rate limits are off
// so that nothing is refused.
//
// Besides calls/s, each sub-benchmark reports the CPU time per call of the
// replica under test (server-us/op), of the whole PostgreSQL cluster
// (pg-us/op), of the PgBouncer process (pgbouncer-us/op; only the pooled
// replica's invalidation polling when the direct replica is measured) and
// of this test process, the load generator (client-us/op). They share the
// machine's cores: on a saturated machine the throughput follows their sum.
//
// The binary is built by the test (see binary); PgBouncer is found by
// testdeps.PgBouncer (`make test-deps` gets it where it can). With -count,
// the repeats of one sub-benchmark run back to back on the same servers.
//
//	go test ./cmd/gatehouse -run '^$' -bench BenchmarkPgBouncer -benchtime 3s -count 3
func BenchmarkPgBouncer(b *testing.B) {
	if testing.Short() {
		b.Skip("runs two servers and PgBouncer")
	}
	direct := storetest.ConnString(b)
	pooled, bouncer := storetest.PgBouncer(b, direct)
	dir := storetest.TempDir(b)
	env := []string{"GATEHOUSE_TENANT_RATE=off", "GATEHOUSE_PRINCIPAL_RATE=off"}
	d := runBinaryOn(b, dir+"/direct", append(env, "DATABASE_URL="+direct, "GATEHOUSE_PGBOUNCER=false")...)
	p := runBinaryOn(b, dir+"/pgbouncer", append(env, "DATABASE_URL="+pooled, "GATEHOUSE_PGBOUNCER=true")...)
	if !strings.Contains(p.logs.String(), "PgBouncer (transaction mode)") {
		b.Fatalf("the pooled replica is not in PgBouncer mode:\n%s", p.logs.String())
	}
	key := strings.TrimSpace(d.cli(b, "apikey", "create", "--tenant", "acme.com", "--role", "admin"))
	postmaster := postmasterPID(b, direct)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 4 * benchConcurrency, MaxIdleConnsPerHost: 2 * benchConcurrency,
	}}

	var seq atomic.Int64
	args := map[string]func() map[string]any{
		"add_todo":   func() map[string]any { return map[string]any{"title": fmt.Sprintf("benchmark todo %d", seq.Add(1))} },
		"list_todos": func() map[string]any { return map[string]any{"limit": 20} },
		"whoami":     func() map[string]any { return nil },
	}
	tools := []string{"add_todo", "list_todos", "whoami"}
	type replica struct {
		name string
		s    *server
	}
	replicas := []replica{{"direct", d}, {"pgbouncer", p}}

	// Warm both replicas up (connection pools, caches, PgBouncer's server
	// connections) and give list_todos a full page to read.
	for _, tool := range tools {
		for _, r := range replicas {
			if err := driveCalls(client, r.s.base, key, tool, args[tool], 300); err != nil {
				b.Fatalf("warm-up of %s/%s: %v", r.name, tool, err)
			}
		}
	}

	// Each tool on one replica, then on the other, the order alternating
	// from tool to tool so that neither always runs second (after the
	// other's writes, with autovacuum catching up, on a machine that drifts).
	for i, tool := range tools {
		order := replicas
		if i%2 == 1 {
			order = []replica{replicas[1], replicas[0]}
		}
		for _, r := range order {
			b.Run(r.name+"/"+tool, func(b *testing.B) {
				server0, pg0, bouncer0 := cpuTime(r.s.cmd.Process.Pid, false), cpuTime(postmaster, true), cpuTime(bouncer, false)
				client0 := cpuTime(os.Getpid(), false)
				b.ResetTimer()
				err := driveCalls(client, r.s.base, key, tool, args[tool], b.N)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				perCall := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
				b.ReportMetric(perCall(cpuTime(r.s.cmd.Process.Pid, false)-server0), "server-us/op")
				b.ReportMetric(perCall(cpuTime(postmaster, true)-pg0), "pg-us/op")
				b.ReportMetric(perCall(cpuTime(bouncer, false)-bouncer0), "pgbouncer-us/op")
				b.ReportMetric(perCall(cpuTime(os.Getpid(), false)-client0), "client-us/op")
			})
		}
	}
	d.stop(b)
	p.stop(b)
}

// driveCalls makes n calls of tool with benchConcurrency calls in flight,
// and returns the first error: a failed request, a status other than 200,
// or a tool error.
func driveCalls(client *http.Client, base, key, tool string, args func() map[string]any, n int) error {
	var (
		next     atomic.Int64
		once     sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		once.Do(func() { firstErr = err })
		next.Store(int64(n)) // the other workers stop after their call
	}
	for range benchConcurrency {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				r, err := callTool(client, base, key, tool, args())
				switch {
				case err != nil:
					fail(fmt.Errorf("%s: %w", tool, err))
				case r.status != http.StatusOK:
					fail(fmt.Errorf("%s: status %d: %s", tool, r.status, r.text))
				case r.isError:
					fail(fmt.Errorf("%s: tool error: %s", tool, r.text))
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// postmasterPID is the process id of the PostgreSQL server behind conn: the
// parent of the backend serving a connection.
func postmasterPID(tb testing.TB, conn string) int {
	tb.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close(ctx)
	var backend int
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		tb.Fatal(err)
	}
	f := procStat(backend)
	if f == nil {
		tb.Fatalf("cannot read /proc/%d/stat", backend)
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// cpuTime is a process's user+system CPU time from /proc; with children,
// also that of its live children and of those it has reaped (a postmaster
// and its backends).
func cpuTime(pid int, children bool) time.Duration {
	f := procStat(pid)
	if f == nil {
		return 0
	}
	ticks := func(f []string, fields ...int) (n int64) {
		for _, i := range fields {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			n += v
		}
		return n
	}
	total := ticks(f, 11, 12) // utime, stime
	if children {
		total += ticks(f, 13, 14) // cutime, cstime
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			child, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if cf := procStat(child); cf != nil && cf[1] == strconv.Itoa(pid) {
				total += ticks(cf, 11, 12)
			}
		}
	}
	return time.Duration(total) * time.Second / 100 // USER_HZ is 100 on Linux
}

// procStat returns the fields of /proc/<pid>/stat after the command name
// (state is 0, ppid 1, utime 11), or nil.
func procStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return nil
	}
	if f := strings.Fields(string(b[i+2:])); len(f) > 14 {
		return f
	}
	return nil
}
