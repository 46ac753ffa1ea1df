package main

import (
	"testing"
	"time"
)

// TestMedian: the middle value of an odd number, the mean of the two
// middle values of an even number (not the upper one, which overstated
// the ratio of six pairs by up to 0.1), whatever the order.
func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{0.7}, 0.7},
		{[]float64{0.9, 0.5}, 0.7},
		{[]float64{0.55, 0.62, 0.77, 1.15}, 0.695},
		{[]float64{1.02, 0.60, 1.08, 0.63, 0.80, 1.00}, 0.90},
		{[]float64{3, 1, 2}, 2},
	} {
		if got := median(tc.xs); got < tc.want-1e-9 || got > tc.want+1e-9 {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}

// TestPairRatio: each pair is compared on its own, so one slow pair (a
// cold first sample in the large database) leaves the median where the
// others put it, while it moves the ratio of the means; pairs beyond the
// shorter list are ignored, and a zero time divides as one nanosecond.
func TestPairRatio(t *testing.T) {
	ms := time.Millisecond
	small := []time.Duration{50 * ms, 60 * ms, 40 * ms, 50 * ms, 50 * ms}
	large := []time.Duration{400 * ms, 66 * ms, 44 * ms, 55 * ms, 50 * ms}
	if got := pairRatio(small, large); got < 1.1-1e-9 || got > 1.1+1e-9 {
		t.Errorf("pairRatio = %v, want 1.1 (the median of 8, 1.1, 1.1, 1.1, 1)", got)
	}
	if got := float64(mean(large)) / float64(mean(small)); got < 2 {
		t.Errorf("ratio of the means = %v: the test's slow pair should move it", got)
	}
	if got := pairRatio(small[:2], large); got < 4.55-1e-9 || got > 4.55+1e-9 {
		t.Errorf("pairRatio over two pairs = %v, want 4.55", got)
	}
	if got := pairRatio([]time.Duration{0}, []time.Duration{2}); got != 2 {
		t.Errorf("pairRatio with a zero time = %v, want 2", got)
	}
	if got, want := mean(nil), time.Duration(0); got != want {
		t.Errorf("mean(nil) = %v, want %v", got, want)
	}
}
