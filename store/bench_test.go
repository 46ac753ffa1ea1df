package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// BenchmarkGCRA: rate-limit checks (one statement each, two keys: tenant and
// principal, as per request), from parallel clients, over 1,000 principals.
func BenchmarkGCRA(b *testing.B) {
	db := storetest.MustOpenDB(b)
	ctx := context.Background()
	var n atomic.Int64
	intervals := []time.Duration{time.Microsecond, time.Microsecond} // never denies: measures the check
	bursts := []int{1 << 20, 1 << 20}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			keys := []string{fmt.Sprint("t:", i%10), fmt.Sprint("p:", i%1000)}
			if _, err := db.GCRA(ctx, keys, intervals, bursts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
}
