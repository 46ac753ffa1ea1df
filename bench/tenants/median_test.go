package main

import "testing"

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
