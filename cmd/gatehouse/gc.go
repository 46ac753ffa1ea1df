package main

import (
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// defaultGCPercent is Gatehouse's GOGC unless the environment sets one.
// Chosen by bench/load (see bench/README.md): each MCP request allocates
// ~320 KB, mostly the SDK's short-lived decoder buffers, so at GOGC=100 on a
// small heap the collector runs every few requests and costs more CPU than
// the request itself; at 400 whoami costs ~0.4x the CPU for ~18 MiB more RSS.
const defaultGCPercent = 400

// tuneGC applies defaultGCPercent unless GOGC is set, and, unless GOMEMLIMIT
// is set, a soft memory limit at 90% of the container's cgroup limit so the
// higher GOGC cannot push a small container out of memory.
func tuneGC(getenv func(string) string, log *slog.Logger) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		if limit := cgroupMemoryLimit(); limit > 0 {
			debug.SetMemoryLimit(limit / 10 * 9)
		}
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
