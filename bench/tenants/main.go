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
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse-mcp/gatehouse/migrations"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

var (
	rounds       = flag.Int("rounds", 3, "alternating runs over 10 and over -spread tenants, per configuration")
	restore      = flag.Bool("restore", false, "with -dump: restore the dump (and the roles) into a fresh cluster as docs/operations.md says, then verify every tenant's audit chain there")
	serveBin     = flag.String("serve", "", "also measure `gatehouse serve` (these binaries, comma-separated, one after the other) on the cluster: -serve-tool calls (list_todos by default) over HTTP, one API key per tenant, then its RSS")
	serveMigrate = flag.Bool("serve-migrate", false, "with -serve: instead of the throughput runs, apply one tenant migration to every schema while the server serves calls over -spread tenants (a rolling deploy), and count failed calls")
	pgSettings   = flag.String("pg-settings", "", "server settings for the embedded cluster (name=value,name=value), e.g. shared_buffers=128MB,max_files_per_process=1000 for PostgreSQL's defaults instead of store.EmbeddedSizing's")
	serveAll     = flag.Bool("serve-all", true, "with -serve: keys for every tenant, and after the throughput runs one call in each tenant and the memory it leaves (false: keys for the -spread tenants only, throughput only)")
	warmPasses   = flag.Int("warm-passes", 2, "with -serve: passes over the -spread tenants (each called once a pass) after the first run over them and before the counted rounds, so that the rounds measure warm caches: each backend loads a tenant's catalog entries and prepares its statements the first and second time it serves the tenant, and a tenant meets several backends (its lane's and, while they are busy, others'); each pass's rate is reported")
	serveEnv     = flag.String("serve-env", "", "settings added to the serve's environment (space-separated NAME=value)")
	statements   = flag.Bool("statements", false, "with -serve: print the statements that took most of PostgreSQL's time in each run, per call (needs -pg-settings shared_preload_libraries=pg_stat_statements,pg_stat_statements.max=50000: each tenant adds statements of its own, and entries evicted are lost; the bench creates the extension)")
	cpuKinds     = flag.Bool("cpu-kinds", false, "with -serve: print after each run the cluster's CPU per call by kind of process (tool-call backends, control backends, backends started during the run, autovacuum, background), µs")
	audited      = flag.Int("audited", 0, "write and chain one audit record in this many tenants before the dump (so that -restore verifies chains that hold records)")
)

// pgData is the cluster's data directory (its postmaster.pid).
var pgData string

var perfCmd = flag.String("perf-cmd", "", "a shell command started (not waited for) at the beginning of each alternating store-level run (and, with -serve, of each serve run: ROUND -1 before the counted rounds, PIDS every PostgreSQL process, GATEHOUSE_PID the server), with KIND (few or spread), ROUND and PIDS (the tenant-pool backends, comma-separated) in its environment: e.g. perf record -g -p $PIDS -o /tmp/$KIND-$ROUND.data -- sleep 5")

// hook starts -perf-cmd for the run of kind in round r.
func hook(ctx context.Context, db *store.DB, kind string, r int) {
	if *perfCmd == "" {
		return
	}
	pids, err := db.TenantBackendPIDs(ctx)
	if err != nil {
		return
	}
	var ps []string
	for _, p := range pids {
		ps = append(ps, strconv.Itoa(p))
	}
	cmd := exec.Command("sh", "-c", *perfCmd)
	cmd.Env = append(os.Environ(), "KIND="+kind, "ROUND="+strconv.Itoa(r), "PIDS="+strings.Join(ps, ","))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err == nil {
		go func() { _ = cmd.Wait() }()
	}
}

var settle = flag.Bool("settle", false, "with -serve: before each server, VACUUM (ANALYZE) the system catalogs and ANALYZE the tables autovacuum would analyze next, so that autovacuum's backlog from earlier runs (tenant migrations, provisioning: its ANALYZE of pg_class, pg_attribute or pg_statistic took 15-21% of PostgreSQL's CPU in some 6 s windows) does not land in whichever run it happens to fall; and remove the audit marks (gatehouse.audit_pending) of tenants with nothing left to chain, which an earlier server's chainer would have removed later")

// settleCluster does -settle's work and returns the number of user tables
// it analyzed.
func settleCluster(ctx context.Context, db *store.DB) (int, error) {
	if _, err := db.Pool().Exec(ctx, `VACUUM (ANALYZE) pg_catalog.pg_statistic, pg_catalog.pg_depend, pg_catalog.pg_attribute,
		pg_catalog.pg_class, pg_catalog.pg_attrdef, pg_catalog.pg_index, pg_catalog.pg_constraint, pg_catalog.pg_trigger,
		pg_catalog.pg_type, pg_catalog.pg_namespace, pg_catalog.pg_proc, pg_catalog.pg_shdepend, pg_catalog.pg_authid,
		pg_catalog.pg_auth_members`); err != nil {
		return 0, fmt.Errorf("settling the catalogs: %w", err)
	}
	rows, _ := db.Pool().Query(ctx, `SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables
		WHERE n_mod_since_analyze > 50 + 0.1 * n_live_tup`)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, err
	}
	for _, t := range tables {
		if _, err := db.Pool().Exec(ctx, "ANALYZE "+t); err != nil {
			return 0, fmt.Errorf("analyzing %s: %w", t, err)
		}
	}
	// The marks an earlier server left (gatehouse.audit_pending) on
	// tenants with nothing left to chain go, as its chainer would have
	// removed them ten minutes later: else the server measured next
	// reads those tenants' logs at every chain pass while they last.
	rows, _ = db.Pool().Query(ctx, `SELECT p.tenant_id::text, t.schema_name FROM gatehouse.audit_pending p
		JOIN gatehouse.tenants t ON t.id = p.tenant_id`)
	marks, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ ID, Schema string }])
	if err != nil {
		return 0, err
	}
	for _, m := range marks {
		if _, err := db.Pool().Exec(ctx, `DELETE FROM gatehouse.audit_pending WHERE tenant_id = $1
			AND NOT EXISTS (SELECT 1 FROM `+pgx.Identifier{m.Schema, "audit_log"}.Sanitize()+` WHERE chain_seq IS NULL)`, m.ID); err != nil {
			return 0, fmt.Errorf("clearing %s's audit mark: %w", m.Schema, err)
		}
	}
	return len(tables), nil
}

var indexRounds = flag.Int("index-rounds", 0, "if > 0: seed a busy tenant (in the 10-tenant database), run the tools' reads and writes this many times and report each index's scans (pg_stat_user_indexes)")

func main() {
	n := flag.Int("n", 2000, "tenants")
	data := flag.String("data", "", "data directory of the embedded PostgreSQL (kept; default: a new one under /tmp)")
	parallel := flag.Int("parallel", 4, "tenants provisioned or migrated at once")
	spread := flag.Int("spread", 2000, "tenants the 'many' throughput run spreads its calls over")
	duration := flag.Duration("duration", 10*time.Second, "each throughput run")
	conc := flag.Int("concurrency", 8, "calls in flight in the throughput runs")
	migrate := flag.Bool("migrate", true, "apply one tenant migration (ALTER TABLE todos ADD COLUMN ... DEFAULT false) to every schema")
	dump := flag.Bool("dump", false, "also time pg_dump --format=custom of the database")
	configs := flag.String("configs", "lanes=1 max-uses=-1 max-tenants=-1; lanes=0 max-uses=-1 max-tenants=-1; lanes=0 max-uses=0 max-tenants=0",
		"tenant-pool settings whose throughput and backend memory are measured one after the other, each on new connections, separated by ';': "+
			"lanes (store.Options.TenantLanes), max-uses (ConnMaxUses), max-tenants (ConnMaxTenants), pool (TenantConns), affinity (AffinityConns), prepared (PreparedStatements); 0: the default, -1: never/none; "+
			"read=1: each transaction is the list_todos tool's read (InTenantReadOnly, whose statements are prepared per tenant) instead of WithTenant; custom=1: CustomPlans (the tools' GenericPlan marks ignored); an empty part: the defaults; \"none\": no store-level runs")
	flag.Parse()
	if *serveTool != "list_todos" && *serveTool != "whoami" {
		log.Fatalf("-serve-tool %q: want list_todos or whoami", *serveTool)
	}
	if *data == "" {
		d, err := os.MkdirTemp("", "gatehouse-tenants-")
		if err != nil {
			log.Fatal(err)
		}
		_ = os.Chmod(d, 0o755)
		*data = d
	}
	cfgs, err := parseConfigs(*configs)
	if err != nil {
		log.Fatal(err)
	}
	if err := run(*n, *data, *parallel, *spread, *duration, *conc, *migrate, *dump, cfgs); err != nil {
		log.Fatal(err)
	}
}

type result struct{ what, value string }

func run(n int, data string, parallel, spread int, duration time.Duration, conc int, migrate, dump bool, cfgs []poolConfig) error {
	ctx := context.Background()
	pgData = data
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eo := store.EmbeddedOptions{DataDir: data, Logger: logger}
	if *pgSettings != "" {
		eo.Settings = map[string]string{}
		for kv := range strings.SplitSeq(*pgSettings, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("-pg-settings: %q is not name=value", kv)
			}
			eo.Settings[k] = v
		}
	}
	e, err := store.StartEmbedded(ctx, eo)
	if err != nil {
		return err
	}
	defer func() { _ = e.Stop(context.Background()) }()
	db, err := store.Open(ctx, e.ConnString(""), &store.Options{ControlConns: int32(parallel), TenantConns: int32(conc), Logger: logger})
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.MigrateControl(ctx); err != nil {
		return err
	}
	if *statements {
		if _, err := db.Pool().Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
			return err
		}
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
	if *plans {
		r, err := planReport(ctx, smallDB, e.ConnString("small"))
		if err != nil {
			return err
		}
		fmt.Println(r)
		return nil
	}
	if *indexRounds > 0 {
		u, err := indexUsage(ctx, smallDB, *indexRounds)
		if err != nil {
			return err
		}
		add("index usage", "%s", u)
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
	// The small database stays at its 10 tenants: the tenants sampled
	// there are deleted after each run (and any an earlier bench left).
	if err := dropSampled(ctx, smallDB); err != nil {
		return err
	}
	// Two rounds of 20 pairs. The first, right after the cluster's start,
	// reads the large database's catalogs (345,000 relations: pg_class,
	// pg_attribute, pg_depend and their indexes) into shared_buffers,
	// while the small one's fit at once, and reads higher than the warm
	// one after it (bench/README.md, "2026-12-02, late morning"). A
	// server provisions tenants on a cluster that has been running, so
	// the second round, with the small database back at its 10 tenants,
	// is the one compared with issue 17's limit; both are printed.
	smallN := count(ctx, smallDB)
	for _, round := range []string{"right after the cluster's start", "warm"} {
		small, large := sample(ctx, smallDB, db, 20)
		add(fmt.Sprintf("EnsureTenant, one at a time, %s, in a database of %d tenants (mean; first sample)", round, smallN), "%.1f ms; %.1f ms", ms(mean(small)), ms(small[0]))
		add(fmt.Sprintf("EnsureTenant, one at a time, %s, in a database of %d tenants (interleaved with the above; mean; first sample)", round, count(ctx, db)),
			"%.1f ms; %.1f ms (%.2f× the cost at %d, means; the median of the %d pairs' ratios %.2f×)",
			ms(mean(large)), ms(large[0]), float64(mean(large))/float64(max(mean(small), 1)), smallN, len(small), pairRatio(small, large))
		if err := dropSampled(ctx, smallDB); err != nil {
			return err
		}
	}
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
	if *audited > 0 {
		ts, err := db.FindTenants(ctx)
		if err != nil {
			return err
		}
		t0 := time.Now()
		if err := writeAudit(ctx, db, ts[:min(*audited, len(ts))]); err != nil {
			return err
		}
		add(fmt.Sprintf("one audit record written and chained in each of %d tenants", min(*audited, len(ts))), "%v", time.Since(t0).Round(time.Millisecond))
	}
	if dump {
		file := filepath.Join(data, "bench.dump")
		t0 = time.Now()
		if out, err := e.Run(ctx, "pg_dump", "--format=custom", "--file", file, e.ConnString("")); err != nil {
			add("pg_dump", "failed: %v: %.300s", err, out)
		} else {
			st, _ := os.Stat(file)
			add("pg_dump --format=custom", "%v, %d MB", time.Since(t0).Round(time.Millisecond), st.Size()>>20)
			if *restore {
				if err := restoreAndVerify(ctx, e, data, file, logger, add); err != nil {
					return err
				}
			}
			_ = os.Remove(file)
		}
	}

	tenants, err := db.FindTenants(ctx)
	if err != nil {
		return err
	}
	for bin := range strings.SplitSeq(*serveBin, ",") {
		if bin == "" {
			continue
		}
		if *settle {
			t0 := time.Now()
			n, err := settleCluster(ctx, db)
			if err != nil {
				return err
			}
			add("[settle] catalogs vacuumed and analyzed, tables analyzed", "%d tables, %.1f s", n, time.Since(t0).Seconds())
		}
		if err := serveBench(ctx, e, db, bin, *serveEnv, tenants, min(spread, len(tenants)), duration, conc, *rounds, add); err != nil {
			return err
		}
	}
	db.Close() // its tenant pool's backends have provisioned; each configuration below starts afresh
	spread = min(spread, len(tenants))
	for _, pc := range cfgs {
		o := pc.opts
		o.ControlConns, o.Logger = 2, logger
		if o.TenantConns == 0 {
			o.TenantConns = int32(conc)
		}
		cdb, err := store.Open(ctx, e.ConnString(""), &o)
		if err != nil {
			return err
		}
		l := cdb.Limits()
		name := fmt.Sprintf("[conns %d+%d, lanes %d, max-uses %d, max-tenants %d, prepared %d, %s]", l.TenantConns, l.AffinityConns, l.TenantLanes, l.ConnMaxUses, l.ConnMaxTenants, l.PreparedStatements, pc.path())
		add(name+" tenant pool backends, private memory before", "%s", backendMemory(ctx, cdb))
		cold, _ := throughput(ctx, cdb, tenants[:spread], duration, conc, pc.read)
		// Then the two loads in turn, rounds times, so that both see the
		// same moments of this noisy machine: the ratio of each pair.
		var fews, manys, ratios, fewCPU, manyCPU []float64
		for r := range *rounds {
			hook(ctx, cdb, "few", r)
			f, fc := throughput(ctx, cdb, tenants[:10], duration, conc, pc.read)
			hook(ctx, cdb, "spread", r)
			m, mc := throughput(ctx, cdb, tenants[:spread], duration, conc, pc.read)
			fews, manys, ratios = append(fews, f), append(manys, m), append(ratios, m/f)
			fewCPU, manyCPU = append(fewCPU, fc), append(manyCPU, mc)
		}
		add(fmt.Sprintf("%s list_todos tx/s over %d tenants, first run (each backend meets its tenants)", name, spread), "%.0f (%.2f× the median over 10)", cold, cold/median(fews))
		add(fmt.Sprintf("%s list_todos tx/s over 10 / over %d tenants, %d alternating runs (median)", name, spread, *rounds), "%.0f / %.0f: %.2f× (ratios %s)", median(fews), median(manys), median(ratios), fmtList(ratios))
		add(fmt.Sprintf("%s tenant pool backends' CPU per transaction over 10 / over %d tenants (median)", name, spread), "%.0f / %.0f µs (%s / %s)", median(fewCPU), median(manyCPU), fmtList(fewCPU), fmtList(manyCPU))
		add(fmt.Sprintf("%s tenant pool backends, private memory after calls over %d tenants", name, spread), "%s", backendMemory(ctx, cdb))
		add(fmt.Sprintf("%s tenant pool backends after calls over %d tenants, median", name, spread), "%s", backendContents(ctx, cdb))
		if len(tenants) > spread {
			all, _ := throughput(ctx, cdb, tenants, duration, conc, pc.read)
			add(fmt.Sprintf("%s list_todos tx/s over all %d (%.2f× the median over 10); private memory after", name, len(tenants), all/median(fews)), "%s", backendMemory(ctx, cdb))
		}
		cdb.Close()
	}

	fmt.Printf("\n| measure (N = %d) | value |\n|---|---|\n", n)
	for _, r := range out {
		fmt.Printf("| %s | %s |\n", r.what, r.value)
	}
	return nil
}

// poolConfig is one tenant-pool setting of -configs; read: each
// transaction is the list_todos tool's (InTenantReadOnly).
type poolConfig struct {
	opts store.Options
	read bool
}

func (pc poolConfig) path() string {
	if pc.read && pc.opts.CustomPlans {
		return "InTenantReadOnly, custom plans only"
	}
	if pc.read {
		return "InTenantReadOnly"
	}
	return "WithTenant"
}

func parseConfigs(s string) ([]poolConfig, error) {
	var out []poolConfig
	if s == "none" {
		return nil, nil
	}
	for part := range strings.SplitSeq(s, ";") {
		var pc poolConfig
		for kv := range strings.FieldsSeq(part) {
			k, v, _ := strings.Cut(kv, "=")
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("-configs: %q: %w", kv, err)
			}
			switch k {
			case "lanes":
				pc.opts.TenantLanes = n
			case "max-uses":
				pc.opts.ConnMaxUses = n
			case "max-tenants":
				pc.opts.ConnMaxTenants = n
			case "pool":
				pc.opts.TenantConns = int32(n)
			case "affinity":
				pc.opts.AffinityConns = n
			case "prepared":
				pc.opts.PreparedStatements = n
			case "read":
				pc.read = n == 1
			case "custom":
				pc.opts.CustomPlans = n == 1
			default:
				return nil, fmt.Errorf("-configs: unknown setting %q", k)
			}
		}
		out = append(out, pc)
	}
	return out, nil
}

// median is the middle of xs, or the mean of the two middle values when
// their number is even (before 2026-12-01 it was the upper of the two,
// which overstated the ratios of an even number of pairs).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func fmtList(xs []float64) string {
	var b []string
	for _, x := range xs {
		b = append(b, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(b, ", ")
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
// alternating (a first), and returns the time each took, in order.
func sample(ctx context.Context, a, b *store.DB, k int) (as, bs []time.Duration) {
	stamp := time.Now().UnixNano()
	one := func(db *store.DB, i int) time.Duration {
		t0 := time.Now()
		if _, _, err := db.EnsureTenant(ctx, fmt.Sprintf("s-%d-%d.sample.example", stamp, i), tenancy.Organization); err != nil {
			log.Fatal(err)
		}
		return time.Since(t0)
	}
	for i := range k {
		as = append(as, one(a, i))
		bs = append(bs, one(b, i))
	}
	return as, bs
}

// dropSampled deletes from db the tenants sample provisioned there
// (keys ending in .sample.example), so that the small database keeps the
// size its figure is labelled with, then vacuums the database: the
// catalog rows of the dropped schemas, left dead, made provisioning
// there dearer than in the large database (the ratio read 0.84–0.93× in
// five runs without the VACUUM, 0.87–1.10× in five with it).
func dropSampled(ctx context.Context, db *store.DB) error {
	ts, err := db.FindTenants(ctx)
	if err != nil {
		return err
	}
	dropped := 0
	for _, t := range ts {
		if !strings.HasSuffix(t.Key, ".sample.example") {
			continue
		}
		if err := db.DeleteTenant(ctx, t, store.OperatorAction{Operator: "cli:bench", Action: "delete", Detail: "bench/tenants sample", Via: "cli"}); err != nil {
			return fmt.Errorf("deleting sampled tenant %s: %w", t.Key, err)
		}
		dropped++
	}
	if dropped > 0 {
		if _, err := db.Pool().Exec(ctx, "VACUUM"); err != nil {
			return err
		}
	}
	return nil
}

// mean is the mean of ds (zero for none).
func mean(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t / time.Duration(max(len(ds), 1))
}

// pairRatio is the median over i of bs[i] / as[i]: samples taken one
// after the other compared at the same moment of a noisy machine, and one
// slow pair (the first after a start, with cold caches) moving it less
// than it moves the means.
func pairRatio(as, bs []time.Duration) float64 {
	var rs []float64
	for i := range min(len(as), len(bs)) {
		rs = append(rs, float64(bs[i])/float64(max(as[i], 1)))
	}
	return median(rs)
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
// tenant of ts (through InTenantReadOnly, as the tool runs it, when read
// is set; else WithTenant), for d, and returns transactions per second and
// the tenant pool backends' CPU time per transaction in µs (utime + stime
// of /proc/<pid>/stat; 0 when unreadable).
func throughput(ctx context.Context, db *store.DB, ts []*tenancy.Tenant, d time.Duration, conc int, read bool) (float64, float64) {
	var calls, next atomic.Int64
	cpu0 := backendCPU(ctx, db)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				t := ts[int(next.Add(1))%len(ts)]
				var err error
				if read {
					err = db.InTenantReadOnly(ctx, t, func(ctx context.Context, tx pgx.Tx) error {
						_, _, err := store.ListTodos(ctx, tx, store.TodoFilter{Limit: 20})
						return err
					})
				} else {
					err = db.WithTenant(ctx, t, func(tx pgx.Tx) error {
						_, _, err := store.ListTodos(ctx, tx, store.TodoFilter{Limit: 20})
						return err
					})
				}
				if err != nil {
					log.Fatal(err)
				}
				calls.Add(1)
			}
		})
	}
	wg.Wait()
	n := calls.Load()
	var perTx float64
	if cpu0 > 0 && n > 0 {
		perTx = float64(backendCPU(ctx, db)-cpu0) / float64(n)
	}
	return float64(n) / d.Seconds(), perTx
}

// backendCPU sums the CPU time of the tenant pool's backends, in µs; 0
// when unreadable. A connection replaced during the run takes its time
// with it.
func backendCPU(ctx context.Context, db *store.DB) int64 {
	pids, err := db.TenantBackendPIDs(ctx)
	if err != nil {
		return 0
	}
	return procsCPU(pids)
}

// procsCPU sums utime + stime of the processes pids, in µs (clock ticks of
// 10 ms: USER_HZ is 100 on Linux); those unreadable count 0.
func procsCPU(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis: utime and
		// stime are the 14th and 15th of the line, the 12th and 13th
		// after it.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		sum += (u + st) * 10_000
	}
	return sum
}

// backendMemory reads Private_Dirty of each tenant-pool backend
// (/proc/<pid>/smaps_rollup; the server runs on this machine) and
// returns min / median / max.
func backendMemory(ctx context.Context, db *store.DB) string {
	pids, err := db.TenantBackendPIDs(ctx)
	if err != nil {
		return err.Error()
	}
	var kbs []int
	for _, pid := range pids {
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

// backendContents reads, in each tenant-pool connection's own session, its
// prepared statements (pg_prepared_statements) and memory contexts
// (pg_backend_memory_contexts): the medians of the statements, of the
// CacheMemoryContext and its children but the plans' (catalog and relation caches) and of
// CachedPlanSource and CachedPlan contexts' total bytes, in MB.
func backendContents(ctx context.Context, db *store.DB) string {
	var stmts, cache, plans []float64
	err := db.EachTenantConn(ctx, func(c *pgxpool.Conn) error {
		var n int
		var cm, pm int64
		err := c.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_prepared_statements),
			(SELECT coalesce(sum(total_bytes), 0) FROM pg_backend_memory_contexts WHERE (name = 'CacheMemoryContext' OR parent = 'CacheMemoryContext')
				AND name NOT IN ('CachedPlanSource', 'CachedPlanQuery', 'CachedPlan')),
			(SELECT coalesce(sum(total_bytes), 0) FROM pg_backend_memory_contexts WHERE name IN ('CachedPlanSource', 'CachedPlanQuery', 'CachedPlan'))`).Scan(&n, &cm, &pm)
		stmts, cache, plans = append(stmts, float64(n)), append(cache, float64(cm)/(1<<20)), append(plans, float64(pm)/(1<<20))
		return err
	})
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%.0f prepared statements, CacheMemoryContext %.1f MB, statements' contexts %.1f MB", median(stmts), median(cache), median(plans))
}

// ownPrivateDirty is pid's Private_Dirty outside its shared mappings, kB:
// the backend's own memory. smaps counts a page of PostgreSQL's shared
// memory (shared buffers) that only this process has touched as private,
// so with tenant affinity, where each backend alone reads its tenants'
// pages, Private_Dirty overstates what the backend itself holds.
func ownPrivateDirty(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		return 0, err
	}
	shared, kb := false, 0
	for l := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") && len(f[1]) == 4 { // a mapping's header: address perms offset dev inode [path]
			shared = f[1][3] == 's'
			continue
		}
		if rest, ok := strings.CutPrefix(l, "Private_Dirty:"); ok && !shared {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				return 0, err
			}
			kb += n
		}
	}
	return kb, nil
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
