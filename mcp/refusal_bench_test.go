package mcp_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// BenchmarkRefusal measures a request refused with 429 because its tenant
// is over its rate limit (denial remembered locally: no database work),
// through the whole HTTP handler without the network. This is what a
// flooding tenant costs the server per request.
func BenchmarkRefusal(b *testing.B) {
	g := newGatehouse(b, withLimits(tenancy.Limits{Tenant: tenancy.Rate{PerMinute: 1, Burst: 1}}), func(s *setup) { s.productionLog = true })
	auth := "Bearer " + g.key(b, "flood.example", tenancy.Admin)
	body := `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"add_todo","arguments":{"title":"flood","notes":"` + strings.Repeat("n", 200) + `"}}}`
	send := func(i int) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(fmt.Sprintf(body, i)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", "2025-06-18")
		req.Header.Set("Authorization", auth)
		req.Header.Set("User-Agent", "flood/1.0")
		rec := httptest.NewRecorder()
		g.srv.Handler().ServeHTTP(rec, req)
		return rec
	}
	for i := range 3 { // spend the burst; the denial is then remembered
		send(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if rec := send(i); rec.Code != http.StatusTooManyRequests {
			b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
	}
}
