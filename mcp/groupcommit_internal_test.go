package mcp

import (
	"testing"
	"time"
)

// TestGroupCommitHold: when the audit writer waits before a group commit
// (groupCommitter.hold), for each kind of moment: an idle server, one
// client calling one call after another, a few clients all in, many
// clients some of whom are on their way back, a slow trickle, the window
// past or off, calls still running, a full batch, and a peak that has
// aged out.
func TestGroupCommitHold(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	never := time.Time{}
	for _, tc := range []struct {
		name            string
		window          time.Duration
		queued, running int
		peak            int           // calls in the server seen 50 ms ago
		peakAge         time.Duration // when that peak was seen (default 50 ms ago)
		sinceStart      time.Duration // since the last flush began (0: never flushed)
		rate            float64
		want            time.Time
	}{
		{name: "idle server: a lone call is flushed at once", window: ms(3), queued: 1},
		{name: "one client, one call after another", window: ms(3), queued: 1, peak: 1, sinceStart: ms(0.5), rate: 2000},
		{name: "four clients, all four in", window: ms(3), queued: 4, peak: 4, sinceStart: ms(0.5), rate: 4000},
		{name: "sixteen clients, seven in, more expected", window: ms(3), queued: 7, peak: 16, sinceStart: ms(1), rate: 4000,
			want: now.Add(ms(2))},
		{name: "three of four in, the fourth expected", window: ms(3), queued: 3, peak: 4, sinceStart: ms(1), rate: 1500,
			want: now.Add(ms(2))},
		{name: "a trickle: no other record expected within the window", window: ms(3), queued: 2, peak: 16, sinceStart: ms(1), rate: 200},
		{name: "window passed", window: ms(3), queued: 7, peak: 16, sinceStart: ms(3.5), rate: 4000},
		{name: "window off", queued: 7, peak: 16, sinceStart: ms(1), rate: 4000},
		{name: "calls running, window off: wait for them up to groupCommitDelay", queued: 2, running: 3, peak: 5, sinceStart: ms(1), rate: 4000,
			want: now.Add(groupCommitDelay)},
		{name: "calls running, window later: the window", window: ms(5), queued: 2, running: 3, peak: 16, sinceStart: ms(1), rate: 4000,
			want: now.Add(ms(4))},
		{name: "batch full", window: ms(3), queued: groupCommitMax, peak: 1000, sinceStart: ms(1), rate: 1e6},
		{name: "the peak aged out", window: ms(3), queued: 3, peak: 16, peakAge: 250 * time.Millisecond, sinceStart: ms(1), rate: 4000},
		{name: "the peak of the previous period still counts", window: ms(3), queued: 3, peak: 16, peakAge: 150 * time.Millisecond, sinceStart: ms(1), rate: 4000,
			want: now.Add(ms(2))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &groupCommitter{window: tc.window, rate: tc.rate}
			g.queue = make([]*pendingAudit, tc.queued)
			for i := range g.queue {
				g.queue[i] = &pendingAudit{}
			}
			g.holding = tc.queued
			g.inFlight = func() int { return tc.queued + tc.running }
			if tc.sinceStart > 0 {
				g.lastStart = now.Add(-tc.sinceStart)
			}
			age := tc.peakAge
			if age == 0 {
				age = 50 * time.Millisecond
			}
			// The peak was seen at the start of its period.
			g.peakSince, g.peakCur = now.Add(-age), tc.peak
			if age >= peakPeriod {
				g.peakSince = now.Add(-age + peakPeriod)
				g.peakCur, g.peakPrev = 0, tc.peak
				if age >= 2*peakPeriod {
					g.peakSince = now.Add(-age)
					g.peakCur, g.peakPrev = tc.peak, 0
				}
			}
			if got := g.hold(now, now); !got.Equal(tc.want) {
				if tc.want == never {
					t.Fatalf("waits %v; want a flush at once", got.Sub(now))
				}
				t.Fatalf("waits until %v; want %v", got.Sub(now), tc.want.Sub(now))
			}
		})
	}
}

// TestGroupCommitPeak: the peak of calls in the server is the highest of
// the current period and the one before, and forgets both after two
// periods without a look.
func TestGroupCommitPeak(t *testing.T) {
	g := &groupCommitter{}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	steps := []struct {
		at       time.Duration
		inside   int
		wantPeak int
	}{
		{0, 5, 5},
		{10 * time.Millisecond, 3, 5},
		{20 * time.Millisecond, 9, 9},
		{120 * time.Millisecond, 2, 9}, // next period: the previous one's 9 still counts
		{230 * time.Millisecond, 4, 4}, // another: 9 is two periods old
		{240 * time.Millisecond, 1, 4},
		{900 * time.Millisecond, 1, 1}, // long idle: all forgotten
	}
	for _, s := range steps {
		if got := g.peak(t0.Add(s.at), s.inside); got != s.wantPeak {
			t.Fatalf("at %v with %d inside: peak %d, want %d", s.at, s.inside, got, s.wantPeak)
		}
	}
}
