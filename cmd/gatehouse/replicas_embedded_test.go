package main

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestRateLimitAcrossReplicas: two `gatehouse serve` processes on one
// embedded cluster (the second joins the first's) together admit a
// principal's burst, not twice it, and only the first prints a bootstrap
// key. TestThreeReplicas covers replicas on an external database.
func TestRateLimitAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two servers")
	}
	dataDir := filepath.Join(storetest.TempDir(t), "data")
	limits := []string{"GATEHOUSE_PRINCIPAL_RATE=6/m", "GATEHOUSE_PRINCIPAL_BURST=20"}
	a := runBinaryOn(t, dataDir, limits...)
	b := runBinaryOn(t, dataDir, limits...) // joins a's embedded cluster
	key := keyRe.FindString(a.banner)
	if key == "" || b.banner != "" && keyRe.MatchString(b.banner) {
		t.Fatalf("want one bootstrap key, from the first server only:\n%s\n%s", a.banner, b.banner)
	}
	const n = 60
	start := time.Now()
	admitted, limited := burst(t, n, func(i int) (mcpResult, error) {
		return callTool(http.DefaultClient, []string{a.base, b.base}[i%2], key, "whoami", nil)
	})
	// The burst of 20, plus what the rate (one every 10 s) replenished while
	// the requests ran.
	tolerance := int64(time.Since(start)/(10*time.Second)) + 1
	if admitted < 20 || admitted > 20+tolerance {
		t.Errorf("two replicas admitted %d of %d requests, want 20 (+%d for replenishment)", admitted, n, tolerance)
	}
	if admitted+limited != n {
		t.Errorf("admitted %d + limited %d != %d", admitted, limited, n)
	}
	t.Logf("admitted %d, limited %d in %v", admitted, limited, time.Since(start))
	b.stop(t)
	a.stop(t)
}
