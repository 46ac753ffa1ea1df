package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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
	const burst = 60
	var admitted, limited atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range burst {
		wg.Go(func() {
			base := a.base
			if i%2 == 1 {
				base = b.base
			}
			req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}`))
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("MCP-Protocol-Version", "2025-06-18")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			switch res.StatusCode {
			case http.StatusOK:
				admitted.Add(1)
			case http.StatusTooManyRequests:
				limited.Add(1)
			default:
				t.Errorf("status %d", res.StatusCode)
			}
		})
	}
	wg.Wait()
	// The burst of 20, plus what the rate (one every 10 s) replenished while
	// the requests ran.
	tolerance := int64(time.Since(start)/(10*time.Second)) + 1
	if n := admitted.Load(); n < 20 || n > 20+tolerance {
		t.Errorf("two replicas admitted %d of %d requests, want 20 (+%d for replenishment)", n, burst, tolerance)
	}
	if admitted.Load()+limited.Load() != burst {
		t.Errorf("admitted %d + limited %d != %d", admitted.Load(), limited.Load(), burst)
	}
	t.Logf("admitted %d, limited %d in %v", admitted.Load(), limited.Load(), time.Since(start))
	b.stop(t)
	a.stop(t)
}
