package console_test

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// fillAudit inserts n audit records into tenant key's log (a spread of
// tools, actors and decisions over the last 30 days) and chains them.
func fillAudit(tb testing.TB, s *site, key string, n int) {
	tb.Helper()
	ctx := context.Background()
	tn, err := s.db.FindTenantByKey(ctx, key)
	if err != nil {
		tb.Fatal(err)
	}
	table := pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()
	_, err = s.db.Pool().Exec(ctx, `INSERT INTO `+table+` (at, request_id, decision, tool, subject, email, provider, client_ip, user_agent, reason, count)
		SELECT now() - (i * interval '25 seconds'), 'req-' || i,
			(ARRAY['ALLOWED','ALLOWED','ALLOWED','DENIED','RATE_LIMITED'])[1 + i % 5],
			(ARRAY['add_todo','list_todos','search_documents','whoami','query','=cmd|calc'])[1 + i % 6],
			'corp:user-' || (i % 40), 'user' || (i % 40) || '@acme.example', 'corp', '10.0.0.' || (i % 250),
			'bench-agent/1.0', '', 1
		FROM generate_series(1, $1) AS i`, n)
	if err != nil {
		tb.Fatal(err)
	}
	for {
		done, err := s.db.ChainAudit(ctx, tn, testAuditKey, 10000)
		if err != nil {
			tb.Fatal(err)
		}
		if done < 10000 {
			break
		}
	}
}

// timeEach runs f n times and returns the median duration.
func timeEach(n int, f func()) time.Duration {
	ds := make([]time.Duration, n)
	for i := range ds {
		start := time.Now()
		f()
		ds[i] = time.Since(start)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[n/2]
}

// BenchmarkAuditPage: the audit page of a tenant with 100,000 records,
// filtered (tool and decision) and paginated (the next page's cursor),
// and the same read through /mcp (read_audit_log, an admin key) in the same
// run. Reports the p50 of each (a loopback round trip: an upper bound of
// the server's time) and their ratio.
func BenchmarkAuditPage(b *testing.B) {
	s := newSite(b, siteOpts{})
	ada := s.signedIn("ada-1", "ada@acme.example")
	fillAudit(b, s, "acme.example", 100_000)
	key := keyOf(b, ada, "bench")
	s.exec(b, "UPDATE gatehouse.api_keys SET role = 'admin', scopes = '{mcp:read,mcp:write,mcp:admin}' WHERE name = 'bench'")
	first := ada.get("/console/admin/audit?tool=search_documents&decision=ALLOWED")
	if first.status != http.StatusOK || !strings.Contains(first.body, "search_documents") {
		b.Fatalf("audit page: %d", first.status)
	}
	i := strings.Index(first.body, "cursor=")
	if i < 0 {
		b.Fatal("no next page")
	}
	cursor := first.body[i+len("cursor=") : i+strings.IndexAny(first.body[i:], "&\"")]
	pages := []string{"/console/admin/audit?tool=search_documents&decision=ALLOWED",
		"/console/admin/audit?cursor=" + cursor + "&tool=search_documents&decision=ALLOWED",
		"/console/admin/audit?actor=user7@acme.example&since=2026-11-01",
		"/console/admin/audit"}
	b.ResetTimer()
	var page, tool time.Duration
	for range b.N {
		page = timeEach(40, func() {
			for _, p := range pages {
				if got := ada.get(p); got.status != http.StatusOK {
					b.Fatalf("%s: %d", p, got.status)
				}
			}
		}) / time.Duration(len(pages))
		tool = timeEach(40, func() {
			for _, args := range []string{`{"tool":"search_documents","decision":"ALLOWED"}`, `{"tool":"search_documents","decision":"ALLOWED","cursor":"` + cursor + `"}`,
				`{"actor":"user7@acme.example","since":"2026-11-01T00:00:00Z"}`, `{}`} {
				if code, _ := s.callTool(b, key, "read_audit_log", args); code != http.StatusOK {
					b.Fatalf("read_audit_log: %d", code)
				}
			}
		}) / 4
	}
	b.ReportMetric(float64(page.Microseconds())/1000, "page-p50-ms")
	b.ReportMetric(float64(tool.Microseconds())/1000, "mcp-read_audit_log-p50-ms")
	b.ReportMetric(float64(page)/float64(tool), "page/mcp")
}

// BenchmarkAuditExport: the CSV export of 10,000 and of 100,000 records,
// with the Go heap sampled every millisecond while it streams: the peak
// heap in use should not grow with the number of records (flat memory).
func BenchmarkAuditExport(b *testing.B) {
	s := newSite(b, siteOpts{})
	ada := s.signedIn("ada-1", "ada@acme.example")
	fillAudit(b, s, "acme.example", 10_000)
	measure := func() (rows int, bytes int64, peak uint64, d time.Duration) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		var top atomic.Uint64
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			var m runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
				runtime.ReadMemStats(&m)
				if m.HeapInuse > top.Load() {
					top.Store(m.HeapInuse)
				}
			}
		}()
		start := time.Now()
		req, _ := http.NewRequest(http.MethodGet, s.ts.URL+"/console/admin/audit/export?format=csv", nil)
		res, err := ada.client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := res.Body.Read(buf)
			bytes += int64(n)
			for _, c := range buf[:n] {
				if c == '\n' {
					rows++
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		res.Body.Close()
		d = time.Since(start)
		close(stop)
		<-done
		if top.Load() > base {
			peak = top.Load() - base
		}
		return rows, bytes, peak, d
	}
	b.ResetTimer()
	for range b.N {
		r10, _, p10, _ := measure()
		fillAudit(b, s, "acme.example", 90_000)
		r100, n100, p100, d100 := measure()
		b.ReportMetric(float64(p10)/(1<<20), "peak-heap-10k-MiB")
		b.ReportMetric(float64(p100)/(1<<20), "peak-heap-100k-MiB")
		b.ReportMetric(float64(n100)/(1<<20), "csv-100k-MiB")
		b.ReportMetric(d100.Seconds(), "export-100k-s")
		if r10 < 10_000 || r100 < 100_000 {
			b.Fatalf("exported %d and %d rows", r10, r100)
		}
		b.Logf("10k rows: %d lines, peak heap +%.1f MiB; 100k rows: %d lines (%.1f MiB of CSV) in %v, peak heap +%.1f MiB",
			r10, float64(p10)/(1<<20), r100, float64(n100)/(1<<20), d100.Round(time.Millisecond), float64(p100)/(1<<20))
	}
}
