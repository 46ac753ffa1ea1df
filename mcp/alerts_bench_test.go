package mcp_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
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
// (the call whose record it reads). PostgreSQL's share is measured too:
// the CPU time (user + system, from /proc) of the test cluster's server
// processes during each phase.
func BenchmarkAlertPass(b *testing.B) {
	g := newGatehouse(b, withAlerts(mcp.AlertOptions{}))
	ctx := context.Background()
	tn, _, err := g.db.EnsureTenant(ctx, "bench-alerts.example", tenancy.Organization)
	if err != nil {
		b.Fatal(err)
	}
	const n = 2000
	var write, pass, calls time.Duration
	var pgWrite, pgPass, pgCalls time.Duration
	var backend int
	if err := g.db.Pool().QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		b.Fatal(err)
	}
	postmaster := parentOf(backend)
	auth := "Bearer " + g.key(b, "bench-alerts.example", tenancy.Developer)
	ncalls := 0
	for i := 0; b.Loop(); i++ {
		entries := make([]store.AuditEntry, n)
		for j := range entries {
			entries[j] = store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{Decision: store.Allowed, Tool: "list_todos",
				Subject: fmt.Sprintf("apikey:bench%02d", j%50), Provider: "apikey", APIKeyID: fmt.Sprintf("bench%02d", j%50),
				ClientIP: fmt.Sprintf("198.51.%d.%d", j%50, 1+j%200), RequestID: fmt.Sprint(i, j)}}
		}
		t0, c0 := time.Now(), serverCPU(postmaster)
		if err := g.db.InsertAuditBatch(ctx, entries); err != nil {
			b.Fatal(err)
		}
		write += time.Since(t0)
		pgWrite += serverCPU(postmaster) - c0
		if _, err := g.db.ChainAudit(ctx, tn, testAuditKey, n); err != nil {
			b.Fatal(err)
		}
		t0, c0 = time.Now(), serverCPU(postmaster)
		if _, err := g.srv.DetectAnomalies(ctx); err != nil {
			b.Fatal(err)
		}
		pass += time.Since(t0)
		pgPass += serverCPU(postmaster) - c0
		t0, c0 = time.Now(), serverCPU(postmaster)
		for range 50 {
			benchCall(b, g.srv.Handler(), auth, "whoami")
		}
		calls += time.Since(t0)
		pgCalls += serverCPU(postmaster) - c0
		ncalls += 50
	}
	per := float64(b.N * n)
	b.ReportMetric(float64(write.Microseconds())/per, "µs-write/record")
	b.ReportMetric(float64(pass.Microseconds())/per, "µs-pass/record")
	b.ReportMetric(float64(pass)/float64(write), "pass/write")
	b.ReportMetric((float64(pass)/per)/(float64(calls)/float64(ncalls)), "pass-per-record/call")
	if postmaster != 0 {
		b.ReportMetric(float64(pgPass.Microseconds())/per, "µs-pg-pass/record")
		b.ReportMetric(float64(pgWrite.Microseconds())/per, "µs-pg-write/record")
		b.ReportMetric(float64(pgCalls.Microseconds())/float64(ncalls), "µs-pg/whoami")
	}
}

// parentOf returns the parent process id of pid (a backend's postmaster),
// or 0 when /proc cannot tell.
func parentOf(pid int) int {
	f := procStat(pid)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// procStat returns the fields of /proc/<pid>/stat after the command name.
func procStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
}

// serverCPU is the CPU time of postmaster and its children (the backends).
func serverCPU(postmaster int) time.Duration {
	if postmaster == 0 {
		return 0
	}
	cpu := func(pid int) time.Duration {
		f := procStat(pid)
		if len(f) < 13 {
			return 0
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		return time.Duration(u+s) * 10 * time.Millisecond // clock ticks of 1/100 s
	}
	total := cpu(postmaster)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := procStat(pid); len(f) > 1 && f[1] == strconv.Itoa(postmaster) {
			total += cpu(pid)
		}
	}
	return total
}

// BenchmarkAlertPassTenants: what the detector's pass costs per tenant
// when calls spread over many tenants, each with a few new records (the
// pass's work per tenant, whatever its records: its transaction and
// statements). Per iteration: 10 records in each of 200 tenants, written
// and chained (untimed), then one pass (timed). Reports per tenant the
// pass's wall time, PostgreSQL's CPU (the test cluster's processes) and
// this process's CPU (the detector's Go side, with the test's).
func BenchmarkAlertPassTenants(b *testing.B) {
	g := newGatehouse(b, withAlerts(mcp.AlertOptions{}))
	ctx := context.Background()
	const tenants, records = 200, 10
	ts := make([]*tenancy.Tenant, tenants)
	for i := range ts {
		tn, _, err := g.db.EnsureTenant(ctx, fmt.Sprintf("bench-alerts-%03d.example", i), tenancy.Organization)
		if err != nil {
			b.Fatal(err)
		}
		ts[i] = tn
	}
	var backend int
	if err := g.db.Pool().QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		b.Fatal(err)
	}
	postmaster := parentOf(backend)
	var pass, pgPass, goPass time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		entries := make([]store.AuditEntry, 0, tenants*records)
		for j, tn := range ts {
			for k := range records {
				entries = append(entries, store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{Decision: store.Allowed, Tool: "list_todos",
					Subject: fmt.Sprintf("apikey:bench%03d", j), Provider: "apikey", APIKeyID: fmt.Sprintf("bench%03d", j),
					ClientIP: "198.51.100.7", RequestID: fmt.Sprint(i, j, k)}})
			}
		}
		if err := g.db.InsertAuditBatch(ctx, entries); err != nil {
			b.Fatal(err)
		}
		for _, r := range g.db.ChainAuditTenants(ctx, ts, testAuditKey, 1000, store.ChainLimits{}) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
		b.StartTimer()
		t0, c0, p0 := time.Now(), serverCPU(postmaster), processCPU()
		if _, err := g.srv.DetectAnomalies(ctx); err != nil {
			b.Fatal(err)
		}
		pass += time.Since(t0)
		pgPass += serverCPU(postmaster) - c0
		goPass += processCPU() - p0
	}
	per := float64(b.N * tenants)
	b.ReportMetric(float64(pass.Microseconds())/per, "µs-pass/tenant")
	b.ReportMetric(float64(goPass.Microseconds())/per, "µs-go-pass/tenant")
	if postmaster != 0 {
		b.ReportMetric(float64(pgPass.Microseconds())/per, "µs-pg-pass/tenant")
	}
}

// processCPU is this process's CPU time (user + system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
