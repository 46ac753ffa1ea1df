package mcp_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// BenchmarkTenants: workspace calls spread over 10 and over 1,000 tenants
// (each a schema with its tables and indexes: the catalog grows with
// tenants), to show whether latency does too; and the time to provision a
// tenant (schema, two roles, migrations).
//
//	go test ./mcp -run '^$' -bench Tenants -benchtime 2000x
func BenchmarkTenants(b *testing.B) {
	for _, n := range []int{10, 1000} {
		g := newGatehouse(b, withLimits(tenancy.Limits{Tenant: tenancy.Rate{PerMinute: 1e9, Burst: 1e6}, Principal: tenancy.Rate{PerMinute: 1e9, Burst: 1e6}}))
		ctx := context.Background()
		keys := make([]string, n)
		start := time.Now()
		for i := range n {
			keys[i] = g.key(b, fmt.Sprintf("tenant%04d.example", i), tenancy.Admin)
		}
		perTenant := time.Since(start) / time.Duration(n)
		for i := range n { // a small workspace each: 20 todos, 20 documents
			tn, _ := g.db.FindTenantByKey(ctx, fmt.Sprintf("tenant%04d.example", i))
			err := g.db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
				for j := range 20 {
					if _, err := store.AddTodo(ctx, tx, fmt.Sprint("todo ", j), "", "seed"); err != nil {
						return err
					}
					if _, err := tx.Exec(ctx, "INSERT INTO documents (title, body, created_by) VALUES ($1, $2, 'seed')",
						fmt.Sprint("Deploy notes ", j), "How we deploy the service to production, step "+fmt.Sprint(j)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		for _, tc := range []struct{ tool, args string }{
			{"add_todo", `{"title":"bench"}`},
			{"list_todos", `{"limit":20}`},
			{"search_documents", `{"query":"deploy production"}`},
		} {
			b.Run(fmt.Sprintf("tenants=%d/%s", n, tc.tool), func(b *testing.B) {
				b.ReportMetric(float64(perTenant.Microseconds())/1000, "ms/provision")
				var mu sync.Mutex
				var lats []time.Duration
				b.RunParallel(func(pb *testing.PB) {
					var mine []time.Duration
					for pb.Next() {
						key := keys[rand.IntN(n)]
						s := time.Now()
						workspaceCall(b, g.srv.Handler(), key, tc.tool, tc.args)
						mine = append(mine, time.Since(s))
					}
					mu.Lock()
					lats = append(lats, mine...)
					mu.Unlock()
				})
				slices.Sort(lats)
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
				b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds())/1000, "p99-ms")
			})
		}
	}
}

func workspaceCall(b *testing.B, h http.Handler, key, tool, args string) {
	req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`+tool+`","arguments":`+args+`}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", "Bearer "+key)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), `"isError":true`) {
		b.Errorf("%s: status %d: %.300s", tool, rec.Code, rec.Body.String())
	}
}
