package mcp_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// BenchmarkToolCall measures one stateless tools/call through the whole
// HTTP handler (no network), next to a bare go-sdk handler written as its
// docs show, in the same run. Compare ns/op and allocs/op between them.
func BenchmarkToolCall(b *testing.B) {
	g := newGatehouse(b)
	auth := "Bearer " + g.key(b, "acme.com", tenancy.Admin)
	bare := bareHandler()
	for _, tool := range []string{"whoami", "add_todo"} {
		b.Run(tool+"/bare-sdk", func(b *testing.B) { benchHandler(b, bare, "", tool) })
		b.Run(tool+"/gatehouse", func(b *testing.B) { benchHandler(b, g.srv.Handler(), auth, tool) })
	}
}

func benchHandler(b *testing.B, h http.Handler, auth, tool string) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		args := "{}"
		if tool == "add_todo" {
			args = fmt.Sprintf(`{"title":"bench %d"}`, i)
		}
		req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(
			fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, i, tool, args)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", "2025-06-18")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"result"`) || strings.Contains(rec.Body.String(), `"isError":true`) {
			b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
	}
}

type benchWhoamiOut struct {
	Subject, Provider, Tenant, TenantKind, Role string
	Scopes                                      []string
}

type benchAddTodoIn struct {
	Title string `json:"title"`
	Notes string `json:"notes,omitempty"`
}

// bareHandler is the baseline: typed tools on one shared server, stateless,
// no authentication, no database.
func bareHandler() http.Handler {
	s := sdk.NewServer(&sdk.Implementation{Name: "bare", Version: "1"}, nil)
	sdk.AddTool(s, &sdk.Tool{Name: "whoami"}, func(context.Context, *sdk.CallToolRequest, struct{}) (*sdk.CallToolResult, benchWhoamiOut, error) {
		return nil, benchWhoamiOut{Subject: "apikey:x", Provider: "apikey", Tenant: "acme.com", TenantKind: "organization", Role: "admin", Scopes: []string{"mcp:read"}}, nil
	})
	sdk.AddTool(s, &sdk.Tool{Name: "add_todo"}, func(_ context.Context, _ *sdk.CallToolRequest, in benchAddTodoIn) (*sdk.CallToolResult, benchAddTodoIn, error) {
		return nil, in, nil
	})
	return sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s }, &sdk.StreamableHTTPOptions{Stateless: true})
}

// BenchmarkOneTenantWithAuditChain: parallel tool calls of one tenant through
// the whole handler (authentication, rate limit, authorization, audit record
// in the call's transaction) while the chainer runs every second. Reports
// calls/s and how many records the chainer had not reached when the calls
// stopped (they are chained within the next second).
func BenchmarkOneTenantWithAuditChain(b *testing.B) {
	for _, tool := range []string{"whoami", "add_todo"} {
		b.Run(tool, func(b *testing.B) {
			g := newGatehouse(b, withLimits(tenancy.Limits{Tenant: tenancy.Rate{PerMinute: 1e9, Burst: 1e6}, Principal: tenancy.Rate{PerMinute: 1e9, Burst: 1e6}}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go g.srv.RunMaintenance(ctx, time.Hour)
			auth := "Bearer " + g.key(b, "acme.com", tenancy.Admin)
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					benchCall(b, g.srv.Handler(), auth, tool)
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			if f, n := g.srv.GroupCommitStats(); f > 0 {
				b.ReportMetric(float64(n)/float64(f), "records/group-commit")
			}
			tn, _ := g.db.FindTenantByKey(context.Background(), "acme.com")
			var pending int
			_ = g.db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+tn.Schema+".audit_log WHERE chain_seq IS NULL").Scan(&pending)
			b.ReportMetric(float64(pending), "unchained-at-end")
			g.srv.FlushAudit(context.Background())
			if rep, err := g.db.VerifyAudit(context.Background(), tn, testAuditKey); err != nil || !rep.OK() || rep.Pending != 0 {
				b.Fatalf("chain after the run: %+v %v", rep, err)
			}
		})
	}
}

func benchCall(b *testing.B, h http.Handler, auth, tool string) {
	args := "{}"
	if tool == "add_todo" {
		args = `{"title":"bench"}`
	}
	req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`+tool+`","arguments":`+args+`}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", auth)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), `"isError":true`) {
		b.Errorf("status %d: %s", rec.Code, rec.Body.String())
	}
}
