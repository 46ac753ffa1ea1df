package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/migrations"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// serveBench runs `bin serve` on the bench's cluster and sends -serve-tool
// calls (list_todos by default) through HTTP with one API key per tenant:
// a first run over spread tenants, -warm-passes passes over them,
// alternating runs over 10 tenants and over spread, then one pass over
// every tenant, and reports calls/s and CPU per call (and their ratios),
// the server's RSS and its backends' private memory. env adds settings to
// the server's environment.
func serveBench(ctx context.Context, e *store.Embedded, db *store.DB, bin, env string, ts []*tenancy.Tenant, spread int, d time.Duration, conc, rounds int, add func(what, format string, args ...any)) error {
	if !*serveAll {
		ts = ts[:spread]
	}
	keys, err := benchKeys(ctx, db, ts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.CommandContext(ctx, bin, "serve")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+regexp.MustCompile(`application_name=\S+`).ReplaceAllString(e.ConnString(""), "application_name=gatehouse-serve"), "GATEHOUSE_ADDR="+addr, "GATEHOUSE_PUBLIC_URL=http://"+addr,
		"GATEHOUSE_LOG_LEVEL=warn", "GATEHOUSE_TENANT_RATE=off", "GATEHOUSE_PRINCIPAL_RATE=off", "GATEHOUSE_AUDIT_KEY="+benchSecret)
	cmd.Env = append(cmd.Env, strings.Fields(env)...)
	logf, err := os.CreateTemp("", "gatehouse-tenants-serve-*.log")
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = io.Discard, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	url := "http://" + addr
	up := time.Now().Add(10 * time.Minute) // it migrates every tenant schema before it serves
	for {
		res, err := http.Get(url + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(up) {
			return fmt.Errorf("gatehouse serve not ready (log: %s)", logf.Name())
		}
		time.Sleep(200 * time.Millisecond)
	}
	name := "[serve " + strings.TrimSpace(bin+" "+env) + "]"
	// cpu is the CPU time per call of the server, of PostgreSQL (every
	// process of the cluster, the connections closed meanwhile included)
	// and of this process (the callers), µs, of the last run.
	var cpu [3]float64
	round := -1 // -perf-cmd's ROUND: -1 for the runs before the counted rounds
	run := func(keys []string, d time.Duration) (float64, error) {
		kind := "few"
		if len(keys) > 10 {
			kind = "spread"
		}
		serveHook(kind, round, cmd.Process.Pid)
		var commits0 int64
		if *statements {
			_, _ = db.Pool().Exec(ctx, "SELECT pg_stat_statements_reset()")
			commits0 = xactCommits(ctx, db)
		}
		var kinds *kindSampler
		if *cpuKinds {
			kinds = startKinds(ctx, db)
		}
		c0 := [3]int64{procsCPU([]int{cmd.Process.Pid}), clusterCPU(), procsCPU([]int{os.Getpid()})}
		r, err := httpLoad(ctx, url+"/mcp", keys, d, conc)
		if *drain && err == nil {
			err = drainIntake(ctx, db)
		}
		c1 := [3]int64{procsCPU([]int{cmd.Process.Pid}), clusterCPU(), procsCPU([]int{os.Getpid()})}
		calls := r * d.Seconds()
		if *cpuKinds {
			fmt.Fprintf(os.Stderr, "%s PostgreSQL CPU per call over %d tenants by kind (µs): %s\n", name, len(keys), kinds.finish(calls))
		}
		for i := range cpu {
			cpu[i] = float64(c1[i]-c0[i]) / max(calls, 1)
		}
		if *statements {
			fmt.Fprintf(os.Stderr, "%s statements over %d tenants (%.3f transactions committed per call):\n%s", name, len(keys),
				float64(xactCommits(ctx, db)-commits0)/max(calls, 1), topStatements(ctx, db, calls))
		}
		return r, err
	}
	if *serveMigrate {
		return rollingMigration(ctx, db, url+"/mcp", keys, spread, conc, name, add)
	}
	if _, err := run(keys[:10], d); err != nil { // warm-up
		return err
	}
	rss0 := rss(cmd.Process.Pid)
	cold, err := run(keys[:spread], d)
	if err != nil {
		return err
	}
	for i := range *warmPasses {
		t0 := time.Now()
		if err := httpPass(ctx, url+"/mcp", keys[:spread], conc); err != nil {
			return err
		}
		add(fmt.Sprintf("%s warm-up pass %d over %d tenants", name, i+1, spread), "%.0f calls/s", float64(spread)/time.Since(t0).Seconds())
	}
	var fews, manys, ratios []float64
	var fewCPU, manyCPU [3][]float64
	for r := range rounds {
		round = r
		f, err := run(keys[:10], d)
		if err != nil {
			return err
		}
		for i := range cpu {
			fewCPU[i] = append(fewCPU[i], cpu[i])
		}
		m, err := run(keys[:spread], d)
		if err != nil {
			return err
		}
		for i := range cpu {
			manyCPU[i] = append(manyCPU[i], cpu[i])
		}
		fews, manys, ratios = append(fews, f), append(manys, m), append(ratios, m/f)
	}
	add(name+" "+*serveTool+" calls/s over "+strconv.Itoa(spread)+" tenants, first run", "%.0f (%.2f× the median over 10)", cold, cold/median(fews))
	add(fmt.Sprintf("%s %s calls/s over 10 / over %d tenants, %d alternating runs (median)", name, *serveTool, spread, rounds), "%.0f / %.0f: %.2f× (ratios %s)", median(fews), median(manys), median(ratios), fmtList(ratios))
	add(fmt.Sprintf("%s CPU per call over 10 / over %d tenants (medians): gatehouse; PostgreSQL (the whole cluster); the callers", name, spread), "%.0f / %.0f; %.0f / %.0f; %.0f / %.0f µs",
		median(fewCPU[0]), median(manyCPU[0]), median(fewCPU[1]), median(manyCPU[1]), median(fewCPU[2]), median(manyCPU[2]))
	// The same comparison by CPU: on a machine whose cores all go to the
	// server, its database and the callers, throughput is their cores over
	// the CPU a call takes; this ratio leaves out the time other jobs on a
	// shared machine take from the run.
	cpuRatios := make([]float64, rounds)
	for r := range rounds {
		cpuRatios[r] = (fewCPU[0][r] + fewCPU[1][r] + fewCPU[2][r]) / (manyCPU[0][r] + manyCPU[1][r] + manyCPU[2][r])
	}
	add(fmt.Sprintf("%s CPU per call over 10 ÷ over %d tenants (gatehouse, PostgreSQL and the callers), %d rounds (median)", name, spread, rounds), "%.2f× (ratios %s)", median(cpuRatios), fmtList(cpuRatios))
	if !*serveAll {
		return nil
	}
	// One pass over every tenant (each key used once at least).
	t0 := time.Now()
	kinds := startKinds(ctx, db) // which backends are the tool calls'
	if err := httpPass(ctx, url+"/mcp", keys, conc); err != nil {
		return err
	}
	add(fmt.Sprintf("%s one call in each of %d tenants", name, len(keys)), "%v", time.Since(t0).Round(time.Millisecond))
	kinds.finish(1)
	add(name+" gatehouse RSS after warm-up / after calls over every tenant (VmHWM)", "%s / %s", rss0, rss(cmd.Process.Pid))
	add(name+" its backends' private memory after calls over every tenant", "%s", gatehouseBackends(ctx, db, kinds))
	return nil
}

// benchKeys returns an admin API key for each tenant, creating them.
func benchKeys(ctx context.Context, db *store.DB, ts []*tenancy.Tenant) ([]string, error) {
	keys := make([]string, len(ts))
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(ts)); i = next.Add(1) - 1 {
				secret, k := apikey.New(ts[i].ID, string(tenancy.Admin), identity.AllScopes, "bench", "bench", time.Time{})
				if err := db.CreateAPIKey(ctx, k); err != nil {
					errs[w] = err
					return
				}
				keys[i] = secret
			}
		})
	}
	wg.Wait()
	return keys, errors.Join(errs...)
}

var httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// serveTool is the tool the -serve runs call, without arguments. Only
// tools that write nothing but their audit record are offered: a tool
// that writes (add_todo) would grow the ten busy tenants' tables by
// every run's calls, and later runs would measure larger tenants.
var serveTool = flag.String("serve-tool", "list_todos", "with -serve: the tool called, list_todos (reads the tenant's todos) or whoami (reads nothing in the tenant's schema; each call still writes its audit record)")

// callTool calls *serveTool once with key, as JSON-RPC request id.
func callTool(ctx context.Context, url, key string, id int64) error {
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{}}}`, id, *serveTool)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || strings.Contains(string(b), `"isError":true`) || strings.Contains(string(b), `"error":`) {
		return fmt.Errorf("%s: HTTP %d: %.300s", *serveTool, res.StatusCode, b)
	}
	return nil
}

// httpLoad sends *serveTool calls from conc callers for d, each call with the
// next key, and returns calls/s.
func httpLoad(ctx context.Context, url string, keys []string, d time.Duration, conc int) (float64, error) {
	var calls, next atomic.Int64
	var first atomic.Value
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				i := next.Add(1)
				if err := callTool(ctx, url, keys[int(i)%len(keys)], i); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
				calls.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return 0, err
	}
	return float64(calls.Load()) / d.Seconds(), nil
}

// httpPass calls once with every key.
func httpPass(ctx context.Context, url string, keys []string, conc int) error {
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(keys)); i = next.Add(1) - 1 {
				if err := callTool(ctx, url, keys[i], i); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return err
	}
	return nil
}

// rss reads VmRSS and VmHWM of pid.
func rss(pid int) string {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var cur, peak string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			cur = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			peak = strings.TrimSpace(v)
		}
	}
	return fmt.Sprintf("%s (peak %s)", cur, peak)
}

// xactCommits is the database's count of committed transactions
// (pg_stat_database; its statistics lag by up to half a second).
func xactCommits(ctx context.Context, db *store.DB) int64 {
	var n int64
	_ = db.Pool().QueryRow(ctx, "SELECT pg_stat_clear_snapshot(), xact_commit FROM pg_stat_database WHERE datname = current_database()").Scan(nil, &n)
	return n
}

// topStatements lists the statements (pg_stat_statements, reset before
// the run) that took most of PostgreSQL's time, per call of the run:
// executions, plannings (a prepared statement's run with its cached plan
// is not one), planning and execution time in µs. Statements that differ
// only by the tenant schema they name count as one (t_*). A first line
// gives the totals per call: statements, BEGINs, COMMITs.
func topStatements(ctx context.Context, db *store.DB, calls float64) string {
	var b strings.Builder
	var all, begins, commits float64
	if err := db.Pool().QueryRow(ctx, `SELECT coalesce(sum(calls), 0)::float8, coalesce(sum(calls) FILTER (WHERE query ILIKE 'begin%'), 0)::float8,
		coalesce(sum(calls) FILTER (WHERE query ILIKE 'commit%'), 0)::float8 FROM pg_stat_statements`).Scan(&all, &begins, &commits); err != nil {
		return err.Error() + "\n"
	}
	fmt.Fprintf(&b, "  per call: %.2f statements, %.3f BEGIN, %.3f COMMIT\n", all/calls, begins/calls, commits/calls)
	rows, err := db.Pool().Query(ctx, `SELECT sum(calls)::float8, sum(plans)::float8, sum(total_plan_time)::float8, sum(total_exec_time)::float8,
		left(regexp_replace(regexp_replace(query, '\s+', ' ', 'g'), 't_[0-9a-f]{32}', 't_*', 'g'), 110)
		FROM pg_stat_statements GROUP BY 5 ORDER BY sum(total_plan_time + total_exec_time) DESC LIMIT 20`)
	if err != nil {
		return err.Error() + "\n"
	}
	defer rows.Close()
	var n, plans, plan, exec float64
	var q string
	for rows.Next() {
		if rows.Scan(&n, &plans, &plan, &exec, &q) == nil {
			fmt.Fprintf(&b, "  %6.3f/call (%5.3f planned) plan %6.1f exec %6.1f µs  %s\n", n/calls, plans/calls, plan*1000/calls, exec*1000/calls, q)
		}
	}
	return b.String()
}

// clusterCPU is the CPU time of the bench cluster's processes, µs: the
// postmaster's, its children's, and that of its children that have ended
// (cutime and cstime of the postmaster, which waits for them).
func clusterCPU() int64 {
	pm := postmasterPID()
	if pm == 0 {
		return 0
	}
	sum := procsCPU([]int{pm})
	for _, cpu := range childCPU(pm) {
		sum += cpu
	}
	if st, err := os.ReadFile("/proc/" + strconv.Itoa(pm) + "/stat"); err == nil {
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) >= 15 {
			cu, _ := strconv.ParseInt(f[13], 10, 64)
			cs, _ := strconv.ParseInt(f[14], 10, 64)
			sum += (cu + cs) * 10_000
		}
	}
	return sum
}

// postmasterPID is the bench cluster's postmaster (store.StartEmbedded's
// layout), or 0 when it is not running.
func postmasterPID() int {
	b, err := os.ReadFile(filepath.Join(pgData, "pgdata", "postmaster.pid"))
	if err != nil {
		return 0
	}
	pm, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	return pm
}

// childCPU is the CPU time, µs, of each running child of process pm, by
// pid (utime + stime from /proc/<pid>/stat, clock ticks of 10 ms).
func childCPU(pm int) map[int]int64 {
	out := map[int]int64{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + p.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis: the parent is
		// the 2nd, utime and stime the 12th and 13th.
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) < 13 || f[1] != strconv.Itoa(pm) {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		out[pid] = (u + s) * 10_000
	}
	return out
}

// gatehouseBackends is the private memory of the backends of the
// gatehouse serve process (application_name gatehouse-serve): min /
// median / max of all, and of its tool-call and control backends as kinds
// saw them.
func gatehouseBackends(ctx context.Context, db *store.DB, kinds *kindSampler) string {
	rows, err := db.Pool().Query(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = 'gatehouse-serve'")
	if err != nil {
		return err.Error()
	}
	byKind := map[string][]int{}
	for rows.Next() {
		var pid int
		if rows.Scan(&pid) == nil {
			if kb, err := privateDirty(pid); err == nil {
				byKind["all"] = append(byKind["all"], kb)
				if k := kinds.kindOf(pid); k != "" {
					byKind[k] = append(byKind[k], kb)
				}
			}
			if kb, err := ownPrivateDirty(pid); err == nil {
				byKind["all, own"] = append(byKind["all, own"], kb)
				if k := kinds.kindOf(pid); k != "" {
					byKind[k+", own"] = append(byKind[k+", own"], kb)
				}
			}
		}
	}
	rows.Close()
	if len(byKind["all"]) == 0 {
		return "none found"
	}
	mb := func(kb int) float64 { return float64(kb) / 1024 }
	var b strings.Builder
	// "own": outside the shared mappings (see ownPrivateDirty).
	for _, k := range []string{"all", "tool", "control", "all, own", "tool, own", "control, own"} {
		kbs := byKind[k]
		if len(kbs) == 0 {
			continue
		}
		slices.Sort(kbs)
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %.1f / %.1f / %.1f MB (%d)", k, mb(kbs[0]), mb(kbs[len(kbs)/2]), mb(kbs[len(kbs)-1]), len(kbs))
	}
	b.WriteString(" (min / median / max, connections)")
	return b.String()
}

// rollingMigration is a rolling deploy at scale: the running server keeps
// serving list_todos over spread tenants (one API key each) while the
// next release's migration (one ALTER TABLE todos ADD COLUMN, added in
// this process) is applied to every tenant schema, 4 at a time, on
// connections of its own. It reports the calls served and failed before
// and during the migration.
func rollingMigration(ctx context.Context, db *store.DB, url string, keys []string, spread, conc int, name string, add func(what, format string, args ...any)) error {
	var v int
	_ = db.Pool().QueryRow(ctx, "SELECT coalesce(max(schema_version), 0) FROM gatehouse.tenants").Scan(&v)
	for i := len(migrations.Tenant()); i <= v; i++ {
		migrations.AddTenantForBenchmark(fmt.Sprint("bench_flag_", i),
			fmt.Sprintf("ALTER TABLE todos ADD COLUMN IF NOT EXISTS bench_flag_%d boolean NOT NULL DEFAULT false", i))
	}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var worst atomic.Int64 // slowest call, ns
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var next atomic.Int64
	for range conc {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := next.Add(1)
				t0 := time.Now()
				err := callTool(ctx, url, keys[int(i)%spread], i)
				for d, w := int64(time.Since(t0)), worst.Load(); d > w && !worst.CompareAndSwap(w, d); w = worst.Load() {
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	time.Sleep(10 * time.Second)
	before, beforeFailed := ok.Load(), failed.Load()
	worst.Store(0)
	t0 := time.Now()
	st, _ := db.MigrationStatus(ctx)
	err := db.MigrateTenants(ctx, 4, nil)
	d := time.Since(t0)
	during, duringFailed := ok.Load()-before, failed.Load()-beforeFailed
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	add(name+" rolling deploy: calls served (failed) in the 10 s before / during the migration of "+fmt.Sprint(st.TenantsBehind)+" schemas",
		"%d (%d) / %d (%d) in %v: %.0f / %.0f calls/s, slowest call during %v", before, beforeFailed, during, duringFailed, d.Round(time.Millisecond),
		float64(before)/10, float64(during)/d.Seconds(), time.Duration(worst.Load()).Round(time.Millisecond))
	if e, _ := firstErr.Load().(error); e != nil {
		add(name+" rolling deploy: first failure", "%.300v", e)
	}
	return nil
}

// serveHook starts -perf-cmd at the beginning of a serve run of kind (few
// or spread) in round r, with KIND, ROUND, PIDS (PostgreSQL's running
// processes, comma-separated) and GATEHOUSE_PID in its environment.
func serveHook(kind string, r, gatehouse int) {
	if *perfCmd == "" {
		return
	}
	var ps []string
	for p := range childCPU(postmasterPID()) {
		ps = append(ps, strconv.Itoa(p))
	}
	cmd := exec.Command("sh", "-c", *perfCmd)
	cmd.Env = append(os.Environ(), "KIND="+kind, "ROUND="+strconv.Itoa(r), "PIDS="+strings.Join(ps, ","), "GATEHOUSE_PID="+strconv.Itoa(gatehouse))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err == nil {
		go func() { _ = cmd.Wait() }()
	}
}

var drain = flag.Bool("drain", false, "with -serve: after each run, wait until the server has moved every record of the run out of the audit intake (into the tenants' logs, chained) and count the CPU it took towards the run, so that no run's audit work lands in the next")

// drainIntake waits until gatehouse.audit_intake is empty (at most a
// minute): the records of the run just ended have been moved into their
// tenants' audit logs, chained.
func drainIntake(ctx context.Context, db *store.DB) error {
	until := time.Now().Add(time.Minute)
	for {
		var n int64
		if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM gatehouse.audit_intake WHERE refused IS NULL").Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(until) {
			return fmt.Errorf("the audit intake still holds %d records a minute after the run", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
