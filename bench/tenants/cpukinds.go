package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// kindSampler splits the cluster's CPU time during a run by the kind of
// process that spent it, for -cpu-kinds: the server's tool-call backends
// (those seen running a tool's read prelude), its other backends (the
// control pool: audit writes and chaining, rate limits, credentials),
// backends that started during the run (their whole life is in the run:
// connection start-ups and replacements), autovacuum, the other
// background processes, and everything else (the bench's own
// connections, the postmaster).
//
// It reads /proc every 50 ms and pg_stat_activity every 250 ms, so a
// process that ends between two reads loses at most 50 ms of its CPU
// time; the kinds of the server's backends come from the statements
// they are seen running.
type kindSampler struct {
	db   *store.DB
	pm   int // the postmaster
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	first map[int]int64  // CPU (µs) of each process when first seen (0 if born during the run)
	last  map[int]int64  // CPU when last seen
	title map[int]string // its process title
	born  map[int]bool   // started during the run
	kind  map[int]string // "tool", "control" or "other" (client backends)
}

// startKinds begins sampling; stop it with (*kindSampler).finish.
func startKinds(ctx context.Context, db *store.DB) *kindSampler {
	pm := postmasterPID()
	if pm == 0 {
		return nil
	}
	k := &kindSampler{db: db, pm: pm, stop: make(chan struct{}), done: make(chan struct{}),
		first: map[int]int64{}, last: map[int]int64{}, title: map[int]string{}, born: map[int]bool{}, kind: map[int]string{}}
	k.sample(true)
	go func() {
		defer close(k.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-k.stop:
				k.sample(false)
				k.classify(ctx)
				return
			case <-t.C:
				k.sample(false)
				if i%5 == 0 {
					k.classify(ctx)
				}
			}
		}
	}()
	return k
}

func (k *kindSampler) sample(start bool) {
	cpus := childCPU(k.pm)
	k.mu.Lock()
	defer k.mu.Unlock()
	for pid, cpu := range cpus {
		if _, ok := k.last[pid]; !ok {
			if start {
				k.first[pid] = cpu
			} else {
				k.born[pid] = true
			}
			cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			k.title[pid] = string(bytes.TrimRight(cmd, "\x00"))
		}
		k.last[pid] = cpu
	}
}

// classify tells the server's tool-call backends from its control
// backends by the statement each is running or ran last: the tools' read
// (list_todos; with -serve-tool whoami no tool reads anything, and the
// tool-call backends stay idle) or the control schema and audit logs.
func (k *kindSampler) classify(ctx context.Context) {
	rows, err := k.db.Pool().Query(ctx, "SELECT pid, application_name, left(query, 80) FROM pg_stat_activity WHERE backend_type = 'client backend'")
	if err != nil {
		return
	}
	defer rows.Close()
	k.mu.Lock()
	defer k.mu.Unlock()
	for rows.Next() {
		var pid int
		var app, q string
		if rows.Scan(&pid, &app, &q) != nil {
			continue
		}
		switch {
		case app != "gatehouse-serve":
			k.kind[pid] = "other"
		case k.kind[pid] != "":
			// A backend serves one pool for its whole life.
		case strings.HasPrefix(q, "SELECT set_config('search_path', $1, true), set_config('role'") || strings.HasPrefix(q, "SELECT id, title, notes"):
			k.kind[pid] = "tool"
		case strings.Contains(q, "audit_log") || strings.Contains(q, "gatehouse.") || strings.Contains(q, "pg_advisory"):
			k.kind[pid] = "control"
		}
	}
}

// finish stops sampling and returns the CPU per call of each kind, µs.
func (k *kindSampler) finish(calls float64) string {
	if k == nil {
		return "(no postmaster)"
	}
	close(k.stop)
	<-k.done
	k.mu.Lock()
	defer k.mu.Unlock()
	sum := map[string]int64{}
	for pid, cpu := range k.last {
		d := cpu - k.first[pid]
		title := k.title[pid]
		var kind string
		switch {
		case strings.Contains(title, "autovacuum"):
			kind = "autovacuum"
		case k.kind[pid] == "tool" && k.born[pid]:
			kind = "tool (new)"
		case k.kind[pid] == "tool":
			kind = "tool"
		case k.kind[pid] == "control" && k.born[pid]:
			kind = "control (new)"
		case k.kind[pid] == "control":
			kind = "control"
		case k.born[pid]:
			kind = "new, unclassified"
		case strings.Contains(title, "writer") || strings.Contains(title, "checkpointer") || strings.Contains(title, "launcher") || strings.Contains(title, "stats"):
			kind = "background"
		default:
			kind = "other"
		}
		sum[kind] += d
	}
	var names []string
	for n := range sum {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s %.0f; ", n, float64(sum[n])/max(calls, 1))
	}
	news := 0
	for range k.born {
		news++
	}
	fmt.Fprintf(&b, "processes started: %d", news)
	return b.String()
}

// kindOf is what the sampler took pid for: "tool", "control", "other" or
// "" (never seen running a telling statement).
func (k *kindSampler) kindOf(pid int) string {
	if k == nil {
		return ""
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kind[pid]
}
