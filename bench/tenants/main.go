// Command tenants measures what the number of tenants costs one PostgreSQL
// (issue 17): provisioning at 10 tenants and at N, applying one tenant
// migration to every schema, the audit chainer's pass after a start, the
// lock table a backup needs, and the tenant pool's backend memory and
// throughput when calls spread over few or many tenants. It prints a
// Markdown table.
//
// It runs its own embedded PostgreSQL (fsync on, as gatehouse serve runs it)
// in -data, which it keeps: a second run with the same -data starts from the
// tenants already there (provisioning only tops up to -n).
//
//	go run ./bench/tenants -n 2000 -data /tmp/gh-tenants
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/migrations"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func main() {
	n := flag.Int("n", 2000, "tenants")
	data := flag.String("data", "", "data directory of the embedded PostgreSQL (kept; default: a new one under /tmp)")
	parallel := flag.Int("parallel", 4, "tenants provisioned or migrated at once")
	spread := flag.Int("spread", 2000, "tenants the 'many' throughput run spreads its calls over")
	duration := flag.Duration("duration", 10*time.Second, "each throughput run")
	conc := flag.Int("concurrency", 8, "calls in flight in the throughput runs")
	migrate := flag.Bool("migrate", true, "apply one tenant migration (ALTER TABLE todos ADD COLUMN ... DEFAULT false) to every schema")
	dump := flag.Bool("dump", false, "also time pg_dump --format=custom of the database")
	maxUses := flag.Int("max-uses", 0, "transactions after which a tenant-pool connection is replaced (store.Options.ConnMaxUses; 0: the default, -1: never)")
	flag.Parse()
	if *data == "" {
		d, err := os.MkdirTemp("", "gatehouse-tenants-")
		if err != nil {
			log.Fatal(err)
		}
		_ = os.Chmod(d, 0o755)
		*data = d
	}
	if err := run(*n, *data, *parallel, *spread, *duration, *conc, *migrate, *dump, *maxUses); err != nil {
		log.Fatal(err)
	}
}

type result struct{ what, value string }

func run(n int, data string, parallel, spread int, duration time.Duration, conc int, migrate, dump bool, maxUses int) error {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e, err := store.StartEmbedded(ctx, store.EmbeddedOptions{DataDir: data, Logger: logger})
	if err != nil {
		return err
	}
	defer func() { _ = e.Stop(context.Background()) }()
	db, err := store.Open(ctx, e.ConnString(""), &store.Options{ControlConns: int32(parallel), TenantConns: int32(conc), ConnMaxUses: maxUses, Logger: logger})
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.MigrateControl(ctx); err != nil {
		return err
	}
	var out []result
	add := func(what, format string, args ...any) {
		r := result{what, fmt.Sprintf(format, args...)}
		out = append(out, r)
		fmt.Fprintf(os.Stderr, "%s: %s\n", r.what, r.value)
	}
	// A second database of 10 tenants in the same cluster: provisioning
	// there and in the large database, one after the other, compares a
	// small catalog with a large one at the same moment on this noisy
	// machine (roles, cluster-wide, are shared by both).
	smallDB, err := openSmall(ctx, e, logger)
	if err != nil {
		return err
	}
	defer smallDB.Close()
	if c := count(ctx, smallDB); c < 10 {
		if err := provision(ctx, smallDB, c, 10, 1); err != nil {
			return err
		}
	}
	have := count(ctx, db)
	t0 := time.Now()
	if err := provision(ctx, db, have, n, parallel); err != nil {
		return err
	}
	if n > have {
		d := time.Since(t0)
		add(fmt.Sprintf("provision %d tenants, %d at a time", n-have, parallel), "%v (%.0f tenants/s)", d.Round(time.Millisecond), float64(n-have)/d.Seconds())
	}
	small, large := sample(ctx, smallDB, db, 20)
	add("EnsureTenant, one at a time, in a database of 10 tenants", "%.1f ms", ms(small))
	add(fmt.Sprintf("EnsureTenant, one at a time, in a database of %d tenants (interleaved with the above)", count(ctx, db)), "%.1f ms (%.2f× the cost at 10)", ms(large), float64(large)/float64(max(small, 1)))
	var rels int
	_ = db.Pool().QueryRow(ctx, "SELECT count(*) FROM pg_class").Scan(&rels)
	add("relations in pg_class", "%d", rels)

	if migrate {
		// One migration more than the schemas have (a rerun on the same
		// data directory adds another).
		var v int
		_ = db.Pool().QueryRow(ctx, "SELECT coalesce(max(schema_version), 0) FROM gatehouse.tenants").Scan(&v)
		for i := len(migrations.Tenant()); i <= v; i++ {
			migrations.AddTenantForBenchmark(fmt.Sprint("bench_flag_", i),
				fmt.Sprintf("ALTER TABLE todos ADD COLUMN IF NOT EXISTS bench_flag_%d boolean NOT NULL DEFAULT false", i))
		}
		st, _ := db.MigrationStatus(ctx)
		t0 = time.Now()
		last := time.Now()
		err := db.MigrateTenants(ctx, parallel, func(done, total int) {
			if time.Since(last) > 5*time.Second || done == total {
				fmt.Fprintf(os.Stderr, "migrated %d/%d\n", done, total)
				last = time.Now()
			}
		})
		if err != nil {
			return err
		}
		d := time.Since(t0)
		add(fmt.Sprintf("one tenant migration on %d schemas, %d at a time", st.TenantsBehind, parallel), "%v (%.0f schemas/s, %.1f ms each)",
			d.Round(time.Millisecond), float64(st.TenantsBehind)/d.Seconds(), ms(d)/float64(max(st.TenantsBehind, 1))*float64(parallel))
	}

	t0 = time.Now()
	pending, err := db.TenantsWithUnchainedAudit(ctx)
	if err != nil {
		return err
	}
	add("chainer's pass after a start (tenants marked pending)", "%v (%d tenants)", time.Since(t0).Round(time.Microsecond), len(pending))

	t0 = time.Now()
	b, err := db.BackupLocks(ctx)
	if err != nil {
		return err
	}
	add("backup lock check", "%v: %s", time.Since(t0).Round(time.Millisecond), b)
	if dump {
		file := filepath.Join(data, "bench.dump")
		t0 = time.Now()
		if out, err := e.Run(ctx, "pg_dump", "--format=custom", "--file", file, e.ConnString("")); err != nil {
			add("pg_dump", "failed: %v: %.300s", err, out)
		} else {
			st, _ := os.Stat(file)
			add("pg_dump --format=custom", "%v, %d MB", time.Since(t0).Round(time.Millisecond), st.Size()>>20)
			_ = os.Remove(file)
		}
	}

	tenants, err := db.FindTenants(ctx)
	if err != nil {
		return err
	}
	mem0 := backendMemory(ctx, db)
	add("tenant pool backends, private memory before", "%s", mem0)
	few := throughput(ctx, db, tenants[:10], duration, conc)
	many := throughput(ctx, db, tenants[:min(spread, len(tenants))], duration, conc)
	warm := throughput(ctx, db, tenants[:min(spread, len(tenants))], duration, conc)
	few2 := throughput(ctx, db, tenants[:10], duration, conc)
	add("list_todos transactions/s, calls over 10 tenants (before / after the runs below)", "%.0f / %.0f", few, few2)
	few = (few + few2) / 2
	add(fmt.Sprintf("list_todos transactions/s, calls over %d tenants, first run (each backend meets each tenant)", min(spread, len(tenants))), "%.0f (%.2f× the 10-tenant runs)", many, many/few)
	add(fmt.Sprintf("list_todos transactions/s, calls over %d tenants, second run (caches warm)", min(spread, len(tenants))), "%.0f (%.2f×)", warm, warm/few)
	add(fmt.Sprintf("tenant pool backends, private memory after calls over %d tenants", min(spread, len(tenants))), "%s", backendMemory(ctx, db))
	if len(tenants) > spread {
		throughput(ctx, db, tenants, duration, conc)
		add(fmt.Sprintf("tenant pool backends, private memory after calls over all %d", len(tenants)), "%s", backendMemory(ctx, db))
	}

	fmt.Printf("\n| measure (N = %d, ConnMaxUses %d) | value |\n|---|---|\n", n, db.Limits().ConnMaxUses)
	for _, r := range out {
		fmt.Printf("| %s | %s |\n", r.what, r.value)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func count(ctx context.Context, db *store.DB) int {
	var n int
	_ = db.Pool().QueryRow(ctx, "SELECT count(*) FROM gatehouse.tenants").Scan(&n)
	return n
}

// provision brings the tenants numbered [from, to) into being, parallel at a time.
func provision(ctx context.Context, db *store.DB, from, to, parallel int) error {
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range parallel {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(to); i = next.Add(1) - 1 {
				if _, _, err := db.EnsureTenant(ctx, fmt.Sprintf("t%06d.bench.example", i), tenancy.Organization); err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
					return
				}
				if i%500 == 0 {
					fmt.Fprintf(os.Stderr, "provisioned %d\n", i)
				}
			}
		})
	}
	wg.Wait()
	return first
}

// sample provisions k tenants one at a time in each of a and b,
// alternating, and returns the mean time of each.
func sample(ctx context.Context, a, b *store.DB, k int) (time.Duration, time.Duration) {
	var ta, tb time.Duration
	stamp := time.Now().UnixNano()
	one := func(db *store.DB, i int) time.Duration {
		t0 := time.Now()
		if _, _, err := db.EnsureTenant(ctx, fmt.Sprintf("s-%d-%d.sample.example", stamp, i), tenancy.Organization); err != nil {
			log.Fatal(err)
		}
		return time.Since(t0)
	}
	for i := range k {
		ta += one(a, i)
		tb += one(b, i)
	}
	return ta / time.Duration(k), tb / time.Duration(k)
}

// openSmall opens (creating it on first use) the database "small" of the
// cluster, with the control schema.
func openSmall(ctx context.Context, e *store.Embedded, logger *slog.Logger) (*store.DB, error) {
	admin, err := pgx.Connect(ctx, e.ConnString("postgres"))
	if err != nil {
		return nil, err
	}
	var exists bool
	_ = admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'small')").Scan(&exists)
	if !exists {
		_, err = admin.Exec(ctx, "CREATE DATABASE small")
	}
	admin.Close(ctx)
	if err != nil {
		return nil, err
	}
	db, err := store.Open(ctx, e.ConnString("small"), &store.Options{ControlConns: 2, TenantConns: 2, Logger: logger})
	if err != nil {
		return nil, err
	}
	if err := db.MigrateControl(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// throughput runs conc callers, each a list_todos transaction in the next
// tenant of ts, for d, and returns transactions per second.
func throughput(ctx context.Context, db *store.DB, ts []*tenancy.Tenant, d time.Duration, conc int) float64 {
	var calls, next atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				t := ts[int(next.Add(1))%len(ts)]
				err := db.WithTenant(ctx, t, func(tx pgx.Tx) error {
					_, _, err := store.ListTodos(ctx, tx, store.TodoFilter{Limit: 20})
					return err
				})
				if err != nil {
					log.Fatal(err)
				}
				calls.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(calls.Load()) / d.Seconds()
}

// backendMemory reads Private_Dirty of each tenant-pool backend
// (/proc/<pid>/smaps_rollup; the server runs on this machine) and
// returns min / median / max.
func backendMemory(ctx context.Context, db *store.DB) string {
	var kbs []int
	var conns []interface{ Release() }
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range db.TenantPool().Config().MaxConns {
		c, err := db.TenantPool().Acquire(ctx)
		if err != nil {
			return err.Error()
		}
		conns = append(conns, c)
		var pid int
		if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			return err.Error()
		}
		if kb, err := privateDirty(pid); err == nil {
			kbs = append(kbs, kb)
		}
	}
	if len(kbs) == 0 {
		return "unreadable (/proc/<pid>/smaps_rollup of the postgres user's processes)"
	}
	slices.Sort(kbs)
	mb := func(kb int) float64 { return float64(kb) / 1024 }
	return fmt.Sprintf("%.1f / %.1f / %.1f MB (min / median / max of %d)", mb(kbs[0]), mb(kbs[len(kbs)/2]), mb(kbs[len(kbs)-1]), len(kbs))
}

func privateDirty(pid int) (int, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "Private_Dirty:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
		}
	}
	return 0, fmt.Errorf("no Private_Dirty in smaps_rollup of %d", pid)
}
