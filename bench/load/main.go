// Command load measures Gatehouse under a fixed-concurrency load of
// authenticated MCP tools/call requests, next to a bare go-sdk server (see
// ../baresdk) measured in the same run, and prints a Markdown table.
//
// Both servers run as separate processes; the figures that matter are their
// CPU time per request (from /proc, user+system), since the load generator
// shares the machine. PostgreSQL's CPU is reported separately.
//
//	go run ./bench/load -bin bin/gatehouse -duration 10s -concurrency 8
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
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

	"github.com/gatehouse-mcp/gatehouse/store"
)

func main() {
	bin := flag.String("bin", "bin/gatehouse", "gatehouse binary")
	duration := flag.Duration("duration", 10*time.Second, "measured time per scenario")
	warmup := flag.Duration("warmup", 2*time.Second, "unmeasured time before each scenario")
	concurrency := flag.Int("concurrency", 8, "requests in flight")
	variants := flag.String("variants", "", "extra gatehouse configurations to measure beside the default, separated by ';', "+
		"each a space-separated list of environment settings (e.g. \"GOGC=400;GATEHOUSE_LOG_LEVEL=warn GOGC=400\")")
	bareVariants := flag.String("bare-variants", "", "extra configurations of the bare go-sdk baseline, in the same form")
	neighbour := flag.Bool("neighbour", false, "also measure one tenant while another floods past its limit")
	baseline := flag.String("baseline-bin", "", "older gatehouse binaries to measure in the same run, as label=path[,label=path…] (e.g. skeleton=/tmp/gatehouse-skeleton)")
	workerSpec := flag.String("worker", "", "internal: run tenant A's load for -bulkheads")
	bulk := flag.Bool("bulkheads", false, "measure one tenant's paced calls while another sleeps in queries, floods past its limit, or writes at c=100 (the baseline binary first, if given)")
	toolList := flag.String("tools", "whoami,list_todos,add_todo", "tools to measure, comma-separated")
	noBare := flag.Bool("no-bare", false, "skip the bare go-sdk server")
	flag.BoolVar(&pgss, "pgss", false, "load pg_stat_statements in each embedded cluster and print, per server and tool, the statements that took the most time")
	flag.IntVar(&rounds, "rounds", 1, "split each scenario into this many rounds, the servers taking turns, so that a noisy machine's changes hit all alike")
	flag.Parse()
	benchTools = strings.Split(*toolList, ",")
	skipBare = *noBare
	if *workerSpec != "" {
		runWorker(*workerSpec)
		return
	}
	if *bulk {
		bins := []string{"this=" + *bin}
		if *baseline != "" {
			bins = append(strings.Split(*baseline, ","), bins...)
		}
		if err := bulkheads(bins, *duration, *warmup); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *neighbour {
		if err := noisyNeighbour(*bin, *duration, *warmup, *concurrency); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := run(*bin, *duration, *warmup, *concurrency, strings.Split(*variants, ";"), strings.Split(*bareVariants, ";"), *baseline); err != nil {
		log.Fatal(err)
	}
}

var (
	benchTools []string
	skipBare   bool
	rounds     = 1
	pgss       bool
)

type target struct {
	name    string
	url     string
	auth    string
	pid     int
	pgPID   int          // postmaster, 0 for none
	trips   *tripCounter // round trips to PostgreSQL, nil for none
	dbURL   string       // for -pgss
	cleanup func()
}

type result struct {
	target, tool   string
	requests, errs int
	elapsed        time.Duration
	p50, p99       time.Duration
	cpu, pgCPU     time.Duration
	trips          int64 // PostgreSQL round trips (ReadyForQuery messages)
	peakRSS        int64 // KiB, whole life of the process so far
	lats           []time.Duration
}

// add sums two measurements of one target and tool (rounds).
func (r result) add(o result) result {
	r.target, r.tool = o.target, o.tool
	r.requests += o.requests
	r.errs += o.errs
	r.elapsed += o.elapsed
	r.cpu += o.cpu
	r.pgCPU += o.pgCPU
	r.trips += o.trips
	r.peakRSS = max(r.peakRSS, o.peakRSS)
	r.lats = append(r.lats, o.lats...)
	return r
}

// finish computes the percentiles of the latencies.
func (r *result) finish() {
	slices.Sort(r.lats)
	pct := func(p float64) time.Duration {
		if len(r.lats) == 0 {
			return 0
		}
		return r.lats[int(float64(len(r.lats)-1)*p)]
	}
	r.p50, r.p99 = pct(0.50), pct(0.99)
}

func run(bin string, duration, warmup time.Duration, concurrency int, variants, bareVariants []string, baseline string) error {
	work, err := os.MkdirTemp("", "gatehouse-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	bare := filepath.Join(work, "baresdk")
	if out, err := exec.Command("go", "build", "-o", bare, "./bench/baresdk").CombinedOutput(); err != nil {
		return fmt.Errorf("building baresdk: %v\n%s", err, out)
	}

	var targets []*target
	for i, v := range append([]string{""}, bareVariants...) {
		if skipBare || i > 0 && strings.TrimSpace(v) == "" {
			continue
		}
		t, err := startBare(bare, strings.Fields(v))
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	for i, b := range strings.Split(baseline, ",") {
		label, path, ok := strings.Cut(b, "=")
		if !ok {
			continue
		}
		t, err := startGatehouse(path, filepath.Join(work, fmt.Sprintf("data-baseline%d", i)), nil)
		if err != nil {
			return fmt.Errorf("baseline %s: %w", label, err)
		}
		t.name = "gatehouse@" + label
		targets = append(targets, t)
	}
	for i, v := range append([]string{""}, variants...) {
		if i > 0 && strings.TrimSpace(v) == "" {
			continue
		}
		t, err := startGatehouse(bin, filepath.Join(work, fmt.Sprintf("data%d", i)), strings.Fields(v))
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	defer func() {
		for _, t := range targets {
			t.cleanup()
		}
	}()

	var results []result
	for _, t := range targets {
		if err := seed(t, 20); err != nil {
			return fmt.Errorf("%s: seeding todos: %w", t.name, err)
		}
	}
	for _, tool := range benchTools {
		for _, t := range targets {
			fmt.Fprintf(os.Stderr, "%s %s: warming up %s\n", t.name, tool, warmup)
			load(t, tool, warmup, concurrency)
		}
		for _, t := range targets {
			statements(t, tool, 0)
		}
		sums := make([]result, len(targets))
		for round := range max(rounds, 1) {
			for i, t := range targets {
				fmt.Fprintf(os.Stderr, "%s %s: round %d, measuring %s at concurrency %d\n", t.name, tool, round+1, duration/time.Duration(max(rounds, 1)), concurrency)
				sums[i] = sums[i].add(load(t, tool, duration/time.Duration(max(rounds, 1)), concurrency))
			}
		}
		for i, t := range targets {
			statements(t, tool, sums[i].requests)
		}
		for i, r := range sums {
			r.finish()
			results = append(results, r)
			if r.errs > 0 && !strings.HasPrefix(targets[i].name, "gatehouse@") {
				return fmt.Errorf("%s %s: %d of %d requests failed", targets[i].name, tool, r.errs, r.requests)
			} else if r.errs > 0 {
				// An old build's known faults (94bb273 refused a few calls under
				// limits of a billion a minute) are reported, not fatal.
				fmt.Printf("Note: %s %s: %d of %d requests failed (counted in its figures).\n", targets[i].name, tool, r.errs, r.requests)
			}
		}
	}
	report(results, concurrency, duration)
	return nil
}

// noisyNeighbour measures tenant B's whoami calls alone, then while tenant
// A, limited to 60/m by a tenant override, floods the same server at twice
// B's concurrency (A's excess is refused with 429).
func noisyNeighbour(bin string, duration, warmup time.Duration, concurrency int) error {
	work, err := os.MkdirTemp("", "gatehouse-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	dataDir := filepath.Join(work, "data")
	b, err := startGatehouse(bin, dataDir, nil)
	if err != nil {
		return err
	}
	defer b.cleanup()
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "GATEHOUSE_DATA_DIR="+dataDir, "DATABASE_URL=")
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	floodKey, err := cli("apikey", "create", "--tenant", "flood.example", "--role", "admin")
	if err != nil {
		return fmt.Errorf("creating the flooding tenant's key: %w", err)
	}
	if _, err := cli("tenant", "limits", "set", "flood.example", "--rate", "60/m", "--burst", "10"); err != nil {
		return err
	}
	a := &target{name: "flood", url: b.url, auth: "Bearer " + floodKey, pid: b.pid}
	load(b, "whoami", warmup, concurrency)
	alone := load(b, "whoami", duration, concurrency)
	var flood result
	done := make(chan struct{})
	go func() { flood = load(a, "whoami", duration+time.Second, 2*concurrency); close(done) }()
	time.Sleep(500 * time.Millisecond)
	together := load(b, "whoami", duration, concurrency)
	<-done
	fmt.Printf("\nNoisy neighbour, %s, concurrency %d for tenant B, %d for tenant A (limited to 60/m):\n\n", time.Now().UTC().Format("2006-01-02"), concurrency, 2*concurrency)
	fmt.Println("| tenant B's whoami | req/s | p50 | p99 | server CPU (share of one core) | Postgres CPU per B request |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, r := range []struct {
		name string
		r    result
	}{{"alone", alone}, {"while A floods", together}} {
		fmt.Printf("| %s | %.0f | %s | %s | %.0f %% | %.0f µs |\n", r.name, float64(r.r.requests)/r.r.elapsed.Seconds(), ms(r.r.p50), ms(r.r.p99),
			100*r.r.cpu.Seconds()/r.r.elapsed.Seconds(), float64(r.r.pgCPU.Microseconds())/float64(r.r.requests))
	}
	fmt.Printf("\nTenant A sent %.0f req/s; %d were refused with 429 (its limit admits about 1 a second after a burst of 10).\n",
		float64(flood.requests)/flood.elapsed.Seconds(), flood.errs)
	return nil
}

func startBare(bin string, env []string) (*target, error) {
	addr := freeAddr()
	cmd := exec.Command(bin, "-addr", addr)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	name := "bare go-sdk"
	if len(env) > 0 {
		name += " " + strings.Join(env, " ")
	}
	t := &target{name: name, url: "http://" + addr + "/", pid: cmd.Process.Pid,
		cleanup: func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }}
	return t, waitUp("http://" + addr + "/")
}

var keyRe = regexp.MustCompile(`gk_[a-z2-7]{16}_[A-Za-z0-9_-]{43}`)

func startGatehouse(bin, dataDir string, env []string) (*target, error) {
	// The bench starts the embedded cluster itself and lets Gatehouse reach
	// it over TCP through a proxy that counts round trips (ReadyForQuery
	// messages); Gatehouse joins a running embedded cluster, so the CLI
	// (GATEHOUSE_DATA_DIR) still works against it.
	ctx := context.Background()
	opts := store.EmbeddedOptions{DataDir: dataDir}
	if pgss {
		opts.Settings = map[string]string{"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}
	}
	emb, err := store.StartEmbedded(ctx, opts)
	if err != nil {
		return nil, err
	}
	trips, proxyAddr, err := startTripProxy(emb.SocketPath())
	if err != nil {
		return nil, err
	}
	dbURL := "DATABASE_URL=postgres://postgres@" + proxyAddr + "/" + store.EmbeddedDatabase + "?sslmode=disable"
	// With DATABASE_URL set, serve issues no bootstrap key: create one.
	mk := exec.Command(bin, "apikey", "create", "--tenant", "bench.example", "--role", "admin")
	mk.Env = append(os.Environ(), dbURL, "GATEHOUSE_PGBOUNCER=false")
	out, err := mk.Output()
	if err != nil {
		return nil, fmt.Errorf("creating an API key: %w", err)
	}
	key := keyRe.FindString(string(out))
	addr := freeAddr()
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "GATEHOUSE_ADDR="+addr, "GATEHOUSE_DATA_DIR="+dataDir, dbURL, "GATEHOUSE_PGBOUNCER=false",
		// Limits so high they never refuse: their checks are measured, not their refusals.
		"GATEHOUSE_TENANT_RATE=1000000000/m", "GATEHOUSE_TENANT_BURST=1000000",
		"GATEHOUSE_PRINCIPAL_RATE=1000000000/m", "GATEHOUSE_PRINCIPAL_BURST=1000000")
	cmd.Env = append(cmd.Env, env...)
	name := "gatehouse"
	if len(env) > 0 {
		name += " " + strings.Join(env, " ")
	}
	stdout, _ := cmd.StdoutPipe()
	logf, err := os.Create(dataDir + ".log")
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t := &target{name: name, url: "http://" + addr + "/mcp", pid: cmd.Process.Pid, trips: trips,
		cleanup: func() {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
			logf.Close()
			_ = emb.Stop(context.Background())
		}}
	t.auth = "Bearer " + key
	t.dbURL = strings.TrimPrefix(dbURL, "DATABASE_URL=")
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if key == "" {
		return t, errors.New("gatehouse apikey create printed no key")
	}
	if err := waitUp("http://" + addr + "/readyz"); err != nil {
		return t, err
	}
	pidFile, err := os.ReadFile(filepath.Join(dataDir, "pgdata", "postmaster.pid"))
	if err == nil {
		t.pgPID, _ = strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	}
	return t, nil
}

// seed adds n todos and n documents, so that list_todos and
// search_documents find something.
func seed(t *target, n int) error {
	if t.pgPID == 0 {
		return nil
	}
	client := &http.Client{}
	for i := range 2 * n {
		tool := "add_todo"
		if i >= n {
			tool = "save_document"
		}
		req, _ := http.NewRequest(http.MethodPost, t.url, strings.NewReader(body(tool, i)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", "2025-06-18")
		req.Header.Set("Authorization", t.auth)
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: HTTP %d", tool, res.StatusCode)
		}
	}
	return nil
}

// tripCounter counts PostgreSQL round trips: ReadyForQuery ('Z') messages,
// one per simple query or per Sync of the extended protocol (a pipelined
// batch is one).
type tripCounter struct{ n atomic.Int64 }

func (c *tripCounter) count() int64 {
	if c == nil {
		return 0
	}
	return c.n.Load()
}

// startTripProxy listens on a loopback TCP port and forwards each
// connection to the unix socket, counting the server's ReadyForQuery
// messages. (sslmode=disable: no SSLRequest, so every server byte is part
// of a typed message: type, int32 length including itself, body.)
func startTripProxy(socket string) (*tripCounter, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	c := &tripCounter{}
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer client.Close()
				server, err := net.Dial("unix", socket)
				if err != nil {
					return
				}
				defer server.Close()
				go func() { _, _ = io.Copy(server, client); server.Close() }()
				r := bufio.NewReaderSize(server, 64<<10)
				w := bufio.NewWriterSize(client, 64<<10)
				hdr := make([]byte, 5)
				for {
					if _, err := io.ReadFull(r, hdr); err != nil {
						return
					}
					if hdr[0] == 'Z' {
						c.n.Add(1)
					}
					n := int64(hdr[1])<<24 | int64(hdr[2])<<16 | int64(hdr[3])<<8 | int64(hdr[4])
					if _, err := w.Write(hdr); err != nil {
						return
					}
					if _, err := io.CopyN(w, r, n-4); err != nil {
						return
					}
					if r.Buffered() == 0 {
						if err := w.Flush(); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return c, ln.Addr().String(), nil
}

func body(tool string, i int) string {
	args := "{}"
	switch tool {
	case "add_todo":
		args = fmt.Sprintf(`{"title":"benchmark todo %d","notes":"measured"}`, i)
	case "save_document":
		args = fmt.Sprintf(`{"title":"benchmark document %d","body":"deploying the benchmark: measured calls, round trips and the database's share %d"}`, i, i)
	case "search_documents":
		args = `{"query":"deploy benchmark"}`
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, i, tool, args)
}

func load(t *target, tool string, d time.Duration, concurrency int) result {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency}}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cpu0, pg0, trips0 := cpuTime(t.pid), pgCPU(t.pgPID), t.trips.count()
	start := time.Now()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		lats  []time.Duration
		errs  atomic.Int64
		count atomic.Int64
	)
	for w := range concurrency {
		wg.Go(func() {
			var mine []time.Duration
			for i := w * 1_000_000; ctx.Err() == nil; i++ {
				req, _ := http.NewRequest(http.MethodPost, t.url, strings.NewReader(body(tool, i)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("MCP-Protocol-Version", "2025-06-18")
				if t.auth != "" {
					req.Header.Set("Authorization", t.auth)
				}
				s := time.Now()
				res, err := client.Do(req)
				if err != nil {
					errs.Add(1)
					continue
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				mine = append(mine, time.Since(s))
				count.Add(1)
				if res.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"result"`)) || bytes.Contains(b, []byte(`"isError":true`)) {
					if errs.Add(1) == 1 {
						fmt.Fprintf(os.Stderr, "%s %s: first failure: HTTP %d %.300s\n", t.name, tool, res.StatusCode, b)
					}
				}
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lats)
	pct := func(p float64) time.Duration {
		if len(lats) == 0 {
			return 0
		}
		return lats[int(float64(len(lats)-1)*p)]
	}
	return result{target: t.name, tool: tool, requests: int(count.Load()), errs: int(errs.Load()), elapsed: elapsed,
		p50: pct(0.50), p99: pct(0.99), cpu: cpuTime(t.pid) - cpu0, pgCPU: pgCPU(t.pgPID) - pg0, trips: t.trips.count() - trips0, peakRSS: peakRSS(t.pid), lats: lats}
}

func report(rs []result, concurrency int, d time.Duration) {
	fmt.Printf("\nConcurrency %d, %s per scenario, %s.\n\n", concurrency, d, time.Now().UTC().Format("2006-01-02"))
	fmt.Println("| tool | server | req/s | p50 | p99 | server CPU/req | ratio to bare (default) | Postgres CPU/req | Postgres round trips/req | peak RSS |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	base := map[string]float64{}
	type gh struct{ rps, cpu, pg, trips float64 }
	type labelTool struct{ label, tool string }
	baseGH := map[labelTool]gh{}
	var labels []string
	for _, r := range rs {
		per := float64(r.cpu.Microseconds()) / float64(r.requests)
		if r.target == "bare go-sdk" {
			base[r.tool] = per
		}
		pg, trips := "-", "-"
		if r.pgCPU > 0 || !strings.HasPrefix(r.target, "bare") {
			pg = fmt.Sprintf("%.0f µs", float64(r.pgCPU.Microseconds())/float64(r.requests))
			trips = fmt.Sprintf("%.3f", float64(r.trips)/float64(r.requests))
		}
		if label, ok := strings.CutPrefix(r.target, "gatehouse@"); ok {
			if !slices.Contains(labels, label) {
				labels = append(labels, label)
			}
			baseGH[labelTool{label, r.tool}] = gh{float64(r.requests) / r.elapsed.Seconds(), per, float64(r.pgCPU.Microseconds()) / float64(r.requests), float64(r.trips) / float64(r.requests)}
		}
		ratio := "-"
		if base[r.tool] > 0 {
			ratio = fmt.Sprintf("%.2f", per/base[r.tool])
		}
		fmt.Printf("| %s | %s | %.0f | %s | %s | %.0f µs | %s | %s | %s | %d MiB |\n", r.tool, r.target,
			float64(r.requests)/r.elapsed.Seconds(), ms(r.p50), ms(r.p99), per, ratio, pg, trips, r.peakRSS/1024)
	}
	if len(baseGH) == 0 {
		return
	}
	fmt.Println("\nRatios to the baseline binaries, same run:")
	fmt.Println()
	fmt.Println("| tool | server | baseline | req/s | server CPU/req | Postgres CPU/req | round trips/req | p99 |")
	fmt.Println("|---|---|---|---:|---:|---:|---:|---:|")
	p99 := map[labelTool]time.Duration{}
	for _, r := range rs {
		if label, ok := strings.CutPrefix(r.target, "gatehouse@"); ok {
			p99[labelTool{label, r.tool}] = r.p99
		}
	}
	for _, r := range rs {
		if strings.HasPrefix(r.target, "bare") || strings.HasPrefix(r.target, "gatehouse@") {
			continue
		}
		for _, label := range labels {
			b, ok := baseGH[labelTool{label, r.tool}]
			if !ok {
				continue
			}
			n := float64(r.requests)
			fmt.Printf("| %s | %s | %s | %.2f× | %.2f× | %.2f× | %.3f (baseline %.3f) | %.2f× |\n", r.tool, r.target, label,
				n/r.elapsed.Seconds()/b.rps, float64(r.cpu.Microseconds())/n/b.cpu, float64(r.pgCPU.Microseconds())/n/b.pg,
				float64(r.trips)/n, b.trips, float64(r.p99)/float64(p99[labelTool{label, r.tool}]))
		}
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// cpuTime is a process's user+system CPU time from /proc/<pid>/stat.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

// childrenCPU is the CPU time of a process's exited and reaped children
// (cutime+cstime in /proc/<pid>/stat).
func childrenCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	cu, _ := strconv.ParseInt(f[13], 10, 64)
	cs, _ := strconv.ParseInt(f[14], 10, 64)
	return time.Duration(cu+cs) * time.Second / 100
}

// peakRSS is a process's peak resident set size in KiB (VmHWM).
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// pgCPU sums the CPU time of a postmaster and its children (backends).
func pgCPU(postmaster int) time.Duration {
	if postmaster == 0 {
		return 0
	}
	// The postmaster's own time, plus that of its children: the live ones
	// from /proc, and those that exited (connections recycled or closed),
	// which the postmaster reaped into its cutime and cstime.
	total := cpuTime(postmaster) + childrenCPU(postmaster)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		if ppid, _ := strconv.Atoi(f[1]); ppid == postmaster {
			total += cpuTime(pid)
		}
	}
	return total
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitUp(url string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode < 500 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not up within 60s", url)
}
