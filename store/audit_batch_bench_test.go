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

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// BenchmarkAuditBatch: what PostgreSQL spends (CPU of the whole cluster,
// from /proc) on a round trip that does nothing, on a one-record INSERT
// planned each time or prepared, and on group commits of 1, 4 and 16
// records of one tenant (InsertAuditBatch, with the chainer's share: it
// runs every 128 batches).
//
//	go test ./store -run '^$' -bench AuditBatch -benchtime 2000x -count 3
func BenchmarkAuditBatch(b *testing.B) {
	db := storetest.MustOpenDB(b)
	ctx := context.Background()
	tn := mustTenant(b, db, "bench-batch.example")
	var backend int
	if err := db.Pool().QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		b.Fatal(err)
	}
	postmaster := procField(backend, 1)
	report := func(b *testing.B, cpu0 time.Duration, per int) {
		used := float64((pgCPU(postmaster) - cpu0).Microseconds())
		b.ReportMetric(used/float64(b.N), "pg-µs/op")
		if per > 1 {
			b.ReportMetric(used/float64(b.N*per), "pg-µs/record")
		}
	}
	b.Run("floor", func(b *testing.B) {
		cpu0 := pgCPU(postmaster)
		for b.Loop() {
			if _, err := db.Pool().Exec(ctx, "SELECT 1"); err != nil {
				b.Fatal(err)
			}
		}
		report(b, cpu0, 1)
	})
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement} {
		b.Run(fmt.Sprintf("one-insert/mode=%v", mode), func(b *testing.B) {
			table := pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()
			cpu0 := pgCPU(postmaster)
			for b.Loop() {
				if _, err := db.Pool().Exec(ctx, "INSERT INTO "+table+" (request_id, decision, tool, subject) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])",
					mode, []string{"r"}, []string{"ALLOWED"}, []string{"whoami"}, []string{"s"}); err != nil {
					b.Fatal(err)
				}
			}
			report(b, cpu0, 1)
		})
	}
	for _, size := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("records=%d", size), func(b *testing.B) {
			cpu0 := pgCPU(postmaster)
			for i := 0; b.Loop(); i++ {
				entries := make([]store.AuditEntry, size)
				for j := range entries {
					entries[j] = store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{RequestID: fmt.Sprint(i, j), Decision: store.Allowed,
						Tool: "whoami", Subject: "apikey:x", ClientIP: "127.0.0.1", UserAgent: "Go-http-client/1.1"}}
				}
				if err := db.InsertAuditBatch(ctx, entries); err != nil {
					b.Fatal(err)
				}
				if i%128 == 127 {
					if _, err := db.ChainAudit(ctx, tn, testKey, 1000); err != nil {
						b.Fatal(err)
					}
				}
			}
			report(b, cpu0, size)
		})
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
