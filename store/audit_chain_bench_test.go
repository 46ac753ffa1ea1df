package store_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// BenchmarkAuditBatch: group commits of 1, 4 and 16 records of one tenant, stored
// unchained (then chained by the chainer, as the background loop does
// every second) or chained as they are written.
func BenchmarkAuditBatch(b *testing.B) {
	db := storetest.MustOpenDB(b)
	ctx := context.Background()
	tn := mustTenant(b, db, "bench-batch.example")
	var backend int
	if err := db.Pool().QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		b.Fatal(err)
	}
	postmaster := procField(backend, 1)
	b.Run("floor", func(b *testing.B) { // one round trip that does nothing
		cpu0 := pgCPU(postmaster)
		for b.Loop() {
			if _, err := db.Pool().Exec(ctx, "SELECT 1"); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((pgCPU(postmaster)-cpu0).Microseconds())/float64(b.N), "pg-µs/op")
	})
	for _, size := range []int{1, 4, 16} {
		for _, chained := range []bool{false, true} {
			b.Run(fmt.Sprintf("records=%d/chained=%v", size, chained), func(b *testing.B) {
				var chain *store.AuditChain
				if chained {
					chain = store.NewAuditChain(testKey)
				}
				cpu0 := pgCPU(postmaster)
				for i := 0; b.Loop(); i++ {
					entries := make([]store.AuditEntry, size)
					for j := range entries {
						entries[j] = store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{RequestID: fmt.Sprint(i, j), Decision: store.Allowed, Tool: "whoami", Subject: "apikey:x", ClientIP: "127.0.0.1", UserAgent: "Go-http-client/1.1"}}
					}
					if err := db.InsertAuditBatch(ctx, entries, chain); err != nil {
						b.Fatal(err)
					}
					if !chained && i%128 == 127 {
						if _, err := db.ChainAudit(ctx, tn, testKey, 1000); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64((pgCPU(postmaster)-cpu0).Microseconds())/float64(b.N), "pg-µs/op")
				b.ReportMetric(float64((pgCPU(postmaster)-cpu0).Microseconds())/float64(b.N*size), "pg-µs/record")
			})
		}
	}
}

// procField is field i (0: state) after the command of /proc/<pid>/stat.
func procField(pid, i int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	n, _ := strconv.Atoi(f[i])
	return n
}

// pgCPU is the CPU time of a postmaster and its children, live or exited.
func pgCPU(postmaster int) time.Duration {
	ticks := procField(postmaster, 11) + procField(postmaster, 12) + procField(postmaster, 13) + procField(postmaster, 14)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && procField(pid, 1) == postmaster {
			ticks += procField(pid, 11) + procField(pid, 12)
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}
