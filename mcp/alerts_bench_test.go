package mcp_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// BenchmarkAlertPass: what the detector's pass costs per audit record,
// next to what writing those records costs in the same run (one group
// commit of 2,000 records of 50 principals, the cheapest way Gatehouse
// writes them). Per iteration: write and chain 2,000 records (timed as
// "write"), then one pass over them (timed as "pass"). Reports µs per
// record of each and their ratios, and the ratio of the pass per record
// to one whoami call through the whole handler, timed in the same run
// (the call whose record it reads).
func BenchmarkAlertPass(b *testing.B) {
	g := newGatehouse(b, withAlerts(mcp.AlertOptions{}))
	ctx := context.Background()
	tn, _, err := g.db.EnsureTenant(ctx, "bench-alerts.example", tenancy.Organization)
	if err != nil {
		b.Fatal(err)
	}
	const n = 2000
	var write, pass, calls time.Duration
	auth := "Bearer " + g.key(b, "bench-alerts.example", tenancy.Developer)
	ncalls := 0
	for i := 0; b.Loop(); i++ {
		entries := make([]store.AuditEntry, n)
		for j := range entries {
			entries[j] = store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{Decision: store.Allowed, Tool: "list_todos",
				Subject: fmt.Sprintf("apikey:bench%02d", j%50), Provider: "apikey", APIKeyID: fmt.Sprintf("bench%02d", j%50),
				ClientIP: fmt.Sprintf("198.51.%d.%d", j%50, 1+j%200), RequestID: fmt.Sprint(i, j)}}
		}
		t0 := time.Now()
		if err := g.db.InsertAuditBatch(ctx, entries); err != nil {
			b.Fatal(err)
		}
		write += time.Since(t0)
		if _, err := g.db.ChainAudit(ctx, tn, testAuditKey, n); err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		if _, err := g.srv.DetectAnomalies(ctx); err != nil {
			b.Fatal(err)
		}
		pass += time.Since(t0)
		t0 = time.Now()
		for range 50 {
			benchCall(b, g.srv.Handler(), auth, "whoami")
		}
		calls += time.Since(t0)
		ncalls += 50
	}
	per := float64(b.N * n)
	b.ReportMetric(float64(write.Microseconds())/per, "µs-write/record")
	b.ReportMetric(float64(pass.Microseconds())/per, "µs-pass/record")
	b.ReportMetric(float64(pass)/float64(write), "pass/write")
	b.ReportMetric((float64(pass)/per)/(float64(calls)/float64(ncalls)), "pass-per-record/call")
}
