package store_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// BenchmarkChainAudit: what PostgreSQL spends (CPU of the whole cluster,
// from /proc, and WAL bytes) to chain a tenant's records, per record, in
// batches of 1,000 on an audit log that already holds 10,000 or 100,000
// chained records, or one record at a time (a quiet tenant's pass: the
// wall time per pass is mostly its round trips), and what the VACUUM of the table after each batch
// costs (the dead tuples and index entries the chaining left; autovacuum
// would pay it otherwise). The records are group-committed before each
// batch, outside the measurement.
//
//	go test ./store -run '^$' -bench ChainAudit -benchtime 20x -count 3
func BenchmarkChainAudit(b *testing.B) {
	for _, c := range []struct{ size, batch int }{{10_000, 1000}, {100_000, 1000}, {10_000, 1}} {
		b.Run(fmt.Sprintf("log=%d/batch=%d", c.size, c.batch), func(b *testing.B) { benchmarkChainAudit(b, c.size, c.batch) })
	}
}

func benchmarkChainAudit(b *testing.B, size, batch int) {
	db := storetest.MustOpenDB(b)
	ctx := context.Background()
	tn := mustTenant(b, db, "bench-chain.example")
	table := pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()
	var backend int
	if err := db.Pool().QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		b.Fatal(err)
	}
	postmaster := procField(backend, 1)
	insert := func(n int) {
		for i := 0; i < n; i += 50 {
			entries := make([]store.AuditEntry, min(50, n-i))
			for j := range entries {
				entries[j] = store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{RequestID: fmt.Sprint(i, j), Decision: store.Allowed,
					Tool: "whoami", Subject: "apikey:x", APIKeyID: "k1", ClientIP: "127.0.0.1", UserAgent: "Go-http-client/1.1",
					ArgsDigest: "0123456789abcdef0123456789abcdef"}}
			}
			if err := db.InsertAuditBatch(ctx, entries); err != nil {
				b.Fatal(err)
			}
		}
	}
	lsn := func() int64 {
		var n int64
		if err := db.Pool().QueryRow(ctx, "SELECT pg_current_wal_lsn() - '0/0'").Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	if ff := os.Getenv("BENCH_FILLFACTOR"); ff != "" {
		if _, err := db.Pool().Exec(ctx, "ALTER TABLE "+table+" SET (fillfactor = "+ff+"); DROP INDEX "+tn.Schema+".audit_log_unchained; ALTER TABLE "+table+" DROP CONSTRAINT audit_log_chain_seq_key"); err != nil {
			b.Fatal(err)
		}
	}
	insert(size)
	for {
		n, err := db.ChainAudit(ctx, tn, testKey, 1000)
		if err != nil {
			b.Fatal(err)
		}
		if n < 1000 {
			break
		}
	}
	if _, err := db.Pool().Exec(ctx, "VACUUM "+table); err != nil {
		b.Fatal(err)
	}
	var chainCPU, vacuumCPU, wall time.Duration
	var wal int64
	for b.Loop() {
		insert(batch)
		cpu0, wal0, t0 := pgCPU(postmaster), lsn(), time.Now()
		if n, err := db.ChainAudit(ctx, tn, testKey, batch); err != nil || n != batch {
			b.Fatal(n, err)
		}
		wall += time.Since(t0)
		cpu1 := pgCPU(postmaster)
		wal += lsn() - wal0
		if _, err := db.Pool().Exec(ctx, "VACUUM "+table); err != nil {
			b.Fatal(err)
		}
		chainCPU += cpu1 - cpu0
		vacuumCPU += pgCPU(postmaster) - cpu1
	}
	records := float64(b.N * batch)
	b.ReportMetric(float64(chainCPU.Microseconds())/records, "chain-pg-µs/record")
	b.ReportMetric(float64(vacuumCPU.Microseconds())/records, "vacuum-pg-µs/record")
	b.ReportMetric(float64(wal)/records, "chain-WAL-B/record")
	b.ReportMetric(float64(wall.Microseconds())/float64(b.N), "chain-µs/pass")
	if rep, err := db.VerifyAudit(ctx, tn, testKey); err != nil || !rep.OK() {
		b.Fatalf("verify: %+v, %v", rep, err)
	}
}
