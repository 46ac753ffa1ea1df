package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// bulkheads measures how much one tenant's load costs another (DESIGN
// §8b, issue 11): tenant B sends a paced 50 whoami calls a second (open
// loop: latency counts from the scheduled send, so a stall is not hidden
// by fewer sends) while tenant A is idle, then while A runs
//
//	sleep: 8 concurrent `select pg_sleep(4)` through query (closed loop),
//	flood: 32 concurrent whoami at a tenant limit of 60/m (thousands of
//	       refusals a second, no back-off),
//	todo:  100 concurrent add_todo (closed loop).
//
// A's clients honour Retry-After on 429 and 503 except in flood. Every
// binary given (label=path) is measured in the same run, one after the
// other, each on a fresh embedded PostgreSQL.
func bulkheads(bins []string, duration, warmup time.Duration) error {
	var out []string
	for _, lb := range bins {
		label, path, ok := strings.Cut(lb, "=")
		if !ok {
			return fmt.Errorf("-bulkheads wants label=path binaries, got %q", lb)
		}
		rows, err := bulkheadsOne(label, path, duration, warmup)
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		out = append(out, rows...)
	}
	fmt.Printf("\nTenant B: whoami paced at 50/s for %s per phase; %s.\n\n", duration, time.Now().UTC().Format("2006-01-02"))
	fmt.Println("| server | tenant A | B calls | B failed | B p50 | B p99 | B p99 / idle | A served/s | A refused/s | server CPU | CPU per refusal |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range out {
		fmt.Println(r)
	}
	return nil
}

type phaseResult struct {
	bCalls, bFailed     int
	p50, p99            time.Duration
	aServed, aRefused   int64
	elapsed, cpu, pgCPU time.Duration
}

func bulkheadsOne(label, bin string, duration, warmup time.Duration) ([]string, error) {
	work, err := os.MkdirTemp("", "gatehouse-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	dataDir := filepath.Join(work, "data")
	srv, err := startGatehouse(bin, dataDir, nil)
	if err != nil {
		return nil, err
	}
	defer srv.cleanup()
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "GATEHOUSE_DATA_DIR="+dataDir, "DATABASE_URL=")
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	keyA, err := cli("apikey", "create", "--tenant", "a.example", "--role", "admin")
	if err != nil {
		return nil, fmt.Errorf("tenant A's key: %w", err)
	}
	keyF, err := cli("apikey", "create", "--tenant", "flood.example", "--role", "admin")
	if err != nil {
		return nil, fmt.Errorf("the flooding tenant's key: %w", err)
	}
	if _, err := cli("tenant", "limits", "set", "flood.example", "--rate", "60/m", "--burst", "10"); err != nil {
		return nil, err
	}
	aClient := &http.Client{Timeout: time.Minute}
	// Warm up: A's query role (a cold start on main deadlocks four first
	// queries at once, which is not what is measured here) and B.
	if st, _, _ := post(aClient, srv.url, "Bearer "+keyA, "query", `{"sql":"select 1"}`, 1); st != http.StatusOK {
		return nil, fmt.Errorf("warming up query: HTTP %d", st)
	}
	paced(srv, warmup)

	type loadA struct {
		key, tool, args string
		c               int
		backoff         bool
	}
	phases := []struct {
		name string
		a    *loadA
	}{
		{"idle", nil},
		{"8 × pg_sleep(4) via query", &loadA{keyA, "query", `{"sql":"select pg_sleep(4)"}`, 8, true}},
		{"flood at 60/m, c=32", &loadA{keyF, "whoami", `{}`, 32, false}},
		{"100 × add_todo", &loadA{keyA, "add_todo", `{"title":"load %d"}`, 100, true}},
		{"idle again", nil}, // the machine's noise: compare with the first idle
	}
	var rows []string
	var idle phaseResult
	for _, ph := range phases {
		fmt.Fprintf(os.Stderr, "%s: tenant A %s, B paced for %s\n", label, ph.name, duration)
		var w *worker
		if ph.a != nil {
			if w, err = startWorker(srv.url, "Bearer "+ph.a.key, ph.a.tool, ph.a.args, ph.a.c, ph.a.backoff); err != nil {
				return nil, err
			}
			time.Sleep(time.Second) // A's load reaches its steady state
		}
		s0, r0 := w.counts()
		cpu0, pg0 := cpuTime(srv.pid), pgCPU(srv.pgPID)
		start := time.Now()
		lats, failed := paced(srv, duration)
		s1, r1 := w.counts()
		res := phaseResult{bCalls: len(lats), bFailed: failed, elapsed: time.Since(start),
			cpu: cpuTime(srv.pid) - cpu0, pgCPU: pgCPU(srv.pgPID) - pg0, aServed: s1 - s0, aRefused: r1 - r0}
		w.stop()
		slices.Sort(lats)
		if len(lats) > 0 {
			res.p50, res.p99 = lats[len(lats)/2], lats[int(float64(len(lats)-1)*0.99)]
		}
		if ph.a == nil && idle.bCalls == 0 {
			idle = res
		}
		perRefusal := "-"
		if strings.HasPrefix(ph.name, "flood") && res.aRefused > 0 && idle.bCalls > 0 {
			bCPU := time.Duration(float64(idle.cpu) / float64(idle.bCalls) * float64(res.bCalls))
			perRefusal = fmt.Sprintf("%.0f µs", float64((res.cpu-bCPU).Microseconds())/float64(res.aRefused))
		}
		ratio := "-"
		if idle.p99 > 0 {
			ratio = fmt.Sprintf("%.2f", float64(res.p99)/float64(idle.p99))
		}
		secs := res.elapsed.Seconds()
		rows = append(rows, fmt.Sprintf("| %s | %s | %d | %d | %s | %s | %s | %.0f | %.0f | %.0f %% | %s |", label, ph.name, res.bCalls, res.bFailed,
			ms(res.p50), ms(res.p99), ratio, float64(res.aServed)/secs, float64(res.aRefused)/secs, 100*res.cpu.Seconds()/secs, perRefusal))
	}
	return rows, nil
}

// paced sends tenant B's whoami every 20 ms for d, each in its own
// goroutine, and returns the latencies from the scheduled send times and
// how many failed.
func paced(srv *target, d time.Duration) ([]time.Duration, int) {
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	var (
		mu     sync.Mutex
		lats   []time.Duration
		failed int
		wg     sync.WaitGroup
	)
	start := time.Now()
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * 20 * time.Millisecond)
		if at.Sub(start) >= d {
			break
		}
		time.Sleep(time.Until(at))
		wg.Go(func() {
			st, body, err := post(client, srv.url, srv.auth, "whoami", `{}`, i)
			lat := time.Since(at)
			mu.Lock()
			defer mu.Unlock()
			lats = append(lats, lat)
			if err != nil || st != http.StatusOK || !bytes.Contains(body, []byte(`"result"`)) || bytes.Contains(body, []byte(`"isError":true`)) {
				failed++
			}
		})
	}
	wg.Wait()
	return lats, failed
}

// closedLoop runs c workers calling tool until stop; with backoff they
// sleep Retry-After after a 429 or 503, as a well-behaved client does.
func closedLoop(client *http.Client, url, auth, tool string, args func(int) string, c int, backoff bool, stop <-chan struct{}, served, refused *atomic.Int64) {
	var wg sync.WaitGroup
	for w := range c {
		wg.Go(func() {
			for i := w * 1_000_000; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				st, _, err := post(client, url, auth, tool, args(i), i)
				switch {
				case err == nil && st == http.StatusOK:
					served.Add(1)
				case st == http.StatusTooManyRequests || st == http.StatusServiceUnavailable:
					refused.Add(1)
					if backoff {
						select {
						case <-stop:
							return
						case <-time.After(time.Second):
						}
					}
				default:
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
}

func post(client *http.Client, url, auth, tool, args string, id int) (int, []byte, error) {
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, id, tool, args)
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", auth)
	res, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// worker is tenant A's load, in a process of its own pinned to the last
// core (taskset, when present), so that it does not share a Go scheduler
// with tenant B's client. It prints "served refused" every 100 ms.
type worker struct {
	cmd             *exec.Cmd
	served, refused atomic.Int64
	done            chan struct{}
}

func startWorker(url, auth, tool, args string, c int, backoff bool) (*worker, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	argv := []string{self, "-worker", strings.Join([]string{url, auth, tool, args, strconv.Itoa(c), strconv.FormatBool(backoff)}, "\x1f")}
	if ts, err := exec.LookPath("taskset"); err == nil {
		argv = append([]string{ts, "-c", strconv.Itoa(runtime.NumCPU() - 1)}, argv...)
	}
	w := &worker{cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	w.cmd.Stderr = os.Stderr
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := w.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var s, r int64
			if _, err := fmt.Sscan(sc.Text(), &s, &r); err == nil {
				w.served.Store(s)
				w.refused.Store(r)
			}
		}
	}()
	return w, nil
}

func (w *worker) counts() (served, refused int64) {
	if w == nil {
		return 0, 0
	}
	time.Sleep(150 * time.Millisecond) // the next report
	return w.served.Load(), w.refused.Load()
}

func (w *worker) stop() {
	if w == nil {
		return
	}
	_ = w.cmd.Process.Signal(os.Interrupt)
	<-w.done
	_ = w.cmd.Wait()
}

// runWorker is the worker process's main: spec is url, auth, tool, args,
// concurrency and back-off, separated by 0x1f. It stops on SIGINT.
func runWorker(spec string) {
	f := strings.Split(spec, "\x1f")
	c, _ := strconv.Atoi(f[4])
	backoff, _ := strconv.ParseBool(f[5])
	stop := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	go func() { <-sig; close(stop) }()
	var served, refused atomic.Int64
	go func() {
		for {
			fmt.Println(served.Load(), refused.Load())
			time.Sleep(100 * time.Millisecond)
		}
	}()
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 200}}
	args := func(i int) string {
		if strings.Contains(f[3], "%d") {
			return fmt.Sprintf(f[3], i)
		}
		return f[3]
	}
	closedLoop(client, f[0], f[1], f[2], args, c, backoff, stop, &served, &refused)
	fmt.Println(served.Load(), refused.Load())
}
