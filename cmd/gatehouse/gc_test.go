package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"testing"
)

// TestAdaptiveLimit: the soft memory limit is the floor while the live heap
// is small, leaves at least the live heap again (and 16 MiB) as headroom
// when it is not, so a large heap never makes the collector run
// continuously, and never exceeds the container's ceiling.
func TestAdaptiveLimit(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, ceiling, want int64
	}{
		{0, 0, memoryFloor},
		{20 * mib, 0, memoryFloor},
		{48 * mib, 0, memoryFloor},
		{60 * mib, 0, 136 * mib},
		{1024 * mib, 0, 2064 * mib},
		{20 * mib, 460 * mib, memoryFloor},
		{300 * mib, 460 * mib, 460 * mib},
		{20 * mib, 90 * mib, 90 * mib}, // a small container: its own bound first
	} {
		if got := adaptiveLimit(c.live, c.ceiling); got != c.want {
			t.Errorf("adaptiveLimit(%d MiB, %d MiB) = %d MiB, want %d MiB", c.live/mib, c.ceiling/mib, got/mib, c.want/mib)
		}
		if got := adaptiveLimit(c.live, c.ceiling); c.ceiling == 0 && got < 2*c.live+16*mib {
			t.Errorf("live %d MiB: limit %d MiB leaves less headroom than GOGC=100", c.live/mib, got/mib)
		}
	}
}

// TestTuneGCKeepsTheEnvironments: GOGC and GOMEMLIMIT set in the
// environment are the runtime's (it read them at start), never replaced.
func TestTuneGCKeepsTheEnvironments(t *testing.T) {
	prevLimit, prevGC := debug.SetMemoryLimit(-1), debug.SetGCPercent(-1)
	debug.SetGCPercent(prevGC)
	defer func() { debug.SetMemoryLimit(prevLimit); debug.SetGCPercent(prevGC) }()
	debug.SetMemoryLimit(3 << 30)
	debug.SetGCPercent(77)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := map[string]string{"GOGC": "77", "GOMEMLIMIT": "3GiB"}
	tuneGC(ctx, func(k string) string { return env[k] }, slog.New(slog.DiscardHandler))
	if got := debug.SetMemoryLimit(-1); got != 3<<30 {
		t.Errorf("memory limit %d, want GOMEMLIMIT's 3 GiB", got)
	}
	if got := debug.SetGCPercent(77); got != 77 {
		t.Errorf("GOGC %d, want the environment's 77", got)
	}
	// Unset: Gatehouse's own, the limit at least the floor.
	tuneGC(ctx, func(string) string { return "" }, slog.New(slog.DiscardHandler))
	if got := debug.SetMemoryLimit(-1); got < memoryFloor && got != cgroupMemoryLimit()/10*9 {
		t.Errorf("memory limit %d, want at least %d", got, memoryFloor)
	}
	if got := debug.SetGCPercent(defaultGCPercent); got != defaultGCPercent {
		t.Errorf("GOGC %d, want %d", got, defaultGCPercent)
	}
}
