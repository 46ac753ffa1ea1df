package main

import (
	"context"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// defaultGCPercent is Gatehouse's GOGC unless the environment sets one.
// Chosen by bench/load (see bench/README.md): each MCP request allocates
// ~320 KB, mostly the SDK's short-lived decoder buffers, so at GOGC=100 on a
// small heap the collector runs every few requests and costs more CPU than
// the request itself; at 400 whoami costs ~0.4x the CPU for ~18 MiB more RSS.
const defaultGCPercent = 400

// memoryFloor is the soft memory limit Gatehouse keeps while its live heap
// is small (unless GOMEMLIMIT is set). At GOGC=400 alone the heap may grow
// to five times the live heap before a collection: with the caches of
// 10,000 tenants (~50 MiB live) that was 210–240 MB of RSS after one call
// in each (bench/tenants), against the 150 MB the many-tenants target
// allows. Under this limit the collector runs once the heap reaches it
// instead, and the limit rises with the live heap (see adaptiveLimit), so
// a large heap never makes it collect continuously.
const memoryFloor = 112 << 20

// tuneGC applies defaultGCPercent unless GOGC is set, and, unless GOMEMLIMIT
// is set, a soft memory limit: adaptiveLimit of the live heap, kept up to
// date until ctx ends, and at most 90% of the container's cgroup limit, if
// any, so that the higher GOGC cannot push a small container out of memory.
func tuneGC(ctx context.Context, getenv func(string) string, log *slog.Logger) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		var ceiling int64
		if limit := cgroupMemoryLimit(); limit > 0 {
			ceiling = limit / 10 * 9
		}
		debug.SetMemoryLimit(adaptiveLimit(liveHeap(), ceiling))
		go followLiveHeap(ctx, ceiling)
	}
	limit := debug.SetMemoryLimit(-1)
	gogc := debug.SetGCPercent(-1)
	debug.SetGCPercent(gogc)
	attrs := []any{"gogc", gogc}
	if limit != math.MaxInt64 {
		attrs = append(attrs, "memory_limit_mib", limit>>20)
	}
	log.Info("garbage collector", attrs...)
}

// adaptiveLimit is the soft memory limit, bytes, for a live heap of live
// bytes: memoryFloor, or twice the live heap and 16 MiB for the runtime's
// own memory when that is more (never less headroom than GOGC=100 gives),
// at most ceiling when ceiling is positive.
func adaptiveLimit(live, ceiling int64) int64 {
	limit := max(memoryFloor, 2*live+16<<20)
	if ceiling > 0 {
		limit = min(limit, ceiling)
	}
	return limit
}

// followLiveHeap sets the soft memory limit to adaptiveLimit of the live
// heap every second until ctx ends.
func followLiveHeap(ctx context.Context, ceiling int64) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			debug.SetMemoryLimit(adaptiveLimit(liveHeap(), ceiling))
		}
	}
}

// liveHeap is the heap the last collection found live, bytes
// (runtime/metrics /gc/heap/live:bytes).
func liveHeap() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}

// cgroupMemoryLimit returns the cgroup v2 (or v1) memory limit in bytes, or 0.
func cgroupMemoryLimit() int64 {
	for _, path := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err == nil && n > 0 && n < 1<<50 { // "max" and v1's huge "unlimited" value mean none
			return n
		}
	}
	return 0
}
