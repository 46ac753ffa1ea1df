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
	"github.com/gatehouse-mcp/gatehouse/tenancy"
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
//	go test ./store -run '^$' -bench '^BenchmarkChainAudit$' -benchtime 20x -count 3
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

// BenchmarkChainAuditTenants: the chainer's pass when calls are spread,
// per record: what PostgreSQL spends (CPU of the whole cluster, WAL
// bytes) and the pass's wall time, chaining one record in each of 600
// tenants (calls spread over 2,000 tenants leave ~600 of them with about
// one new record each second) or 50 in each of 10, one transaction per
// tenant (ChainAudit, the chainer before) or many tenants a transaction
// (ChainAuditTenants: 64 tenants a transaction, the default, or 256).
// The records are group-committed before each pass, in batches of 200
// (insert-pg-µs/record: PostgreSQL's CPU for that, measured apart from
// the pass's); every chain verifies at the end. (The test cluster runs with fsync off: a commit's flush costs
// nothing here.)
//
//	go test ./store -run '^$' -bench ChainAuditTenants -benchtime 10x -count 3
func BenchmarkChainAuditTenants(b *testing.B) {
	db := storetest.MustOpenDB(b)
	ctx := context.Background()
	ts := make([]*tenancy.Tenant, 600)
	for i := range ts {
		ts[i] = mustTenant(b, db, fmt.Sprintf("bench-many%d.example", i))
	}
	var backend int
	if err := db.Pool().QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		b.Fatal(err)
	}
	postmaster := procField(backend, 1)
	lsn := func() int64 {
		var n int64
		if err := db.Pool().QueryRow(ctx, "SELECT pg_current_wal_lsn() - '0/0'").Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	insert := func(ts []*tenancy.Tenant, per int) {
		var entries []store.AuditEntry
		for _, tn := range ts {
			for j := range per {
				entries = append(entries, store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{RequestID: fmt.Sprint(j), Decision: store.Allowed,
					Tool: "list_todos", Subject: "apikey:x", APIKeyID: "k1", ClientIP: "127.0.0.1", UserAgent: "Go-http-client/1.1"}})
			}
			if len(entries) >= 200 {
				if err := db.InsertAuditBatch(ctx, entries); err != nil {
					b.Fatal(err)
				}
				entries = nil
			}
		}
		if err := db.InsertAuditBatch(ctx, entries); err != nil {
			b.Fatal(err)
		}
	}
	type mode struct {
		name string
		pass func(ts []*tenancy.Tenant) int
	}
	modes := []mode{
		{"alone", func(ts []*tenancy.Tenant) int {
			n := 0
			for _, tn := range ts {
				c, err := db.ChainAudit(ctx, tn, testKey, 1000)
				if err != nil {
					b.Fatal(err)
				}
				n += c
			}
			return n
		}},
	}
	for _, m := range []struct {
		name   string
		limits store.ChainLimits
	}{{"many", store.ChainLimits{}}, {"many-256", store.ChainLimits{Tenants: 256}}} {
		modes = append(modes, mode{m.name, func(ts []*tenancy.Tenant) int {
			n := 0
			for _, r := range db.ChainAuditTenants(ctx, ts, testKey, 1000, m.limits) {
				if r.Err != nil || r.Group < 0 || r.More {
					b.Fatalf("%+v", r)
				}
				n += r.N
			}
			return n
		}})
	}
	for _, c := range []struct{ tenants, per int }{{600, 1}, {10, 50}} {
		for _, m := range modes {
			b.Run(fmt.Sprintf("tenants=%d/records=%d/%s", c.tenants, c.per, m.name), func(b *testing.B) {
				ts := ts[:c.tenants]
				insert(ts, c.per)
				m.pass(ts) // warm: the connections have met every tenant
				var cpu, insertCPU time.Duration
				var wall time.Duration
				var wal int64
				for b.Loop() {
					icpu0 := pgCPU(postmaster)
					insert(ts, c.per)
					insertCPU += pgCPU(postmaster) - icpu0
					cpu0, wal0, t0 := pgCPU(postmaster), lsn(), time.Now()
					if n := m.pass(ts); n != c.tenants*c.per {
						b.Fatalf("chained %d records, want %d", n, c.tenants*c.per)
					}
					wall += time.Since(t0)
					cpu += pgCPU(postmaster) - cpu0
					wal += lsn() - wal0
				}
				records := float64(b.N * c.tenants * c.per)
				b.ReportMetric(float64(cpu.Microseconds())/records, "pg-µs/record")
				b.ReportMetric(float64(insertCPU.Microseconds())/records, "insert-pg-µs/record")
				b.ReportMetric(float64(wal)/records, "WAL-B/record")
				b.ReportMetric(float64(wall.Microseconds())/float64(b.N)/1000, "ms/pass")
			})
		}
	}
	for _, tn := range ts {
		if rep, err := db.VerifyAudit(ctx, tn, testKey); err != nil || !rep.OK() {
			b.Fatalf("verify %s: %+v, %v", tn.Key, rep, err)
		}
	}
}
