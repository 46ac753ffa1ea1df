package mcp_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// BenchmarkPrompts measures prompts/get and completion/complete through
// the whole HTTP handler next to the read tool list_todos, in the same run
// on the same tenant (50 open todos, 20 projects): compare their ns/op.
func BenchmarkPrompts(b *testing.B) {
	g := newGatehouse(b, func(s *setup) { s.productionLog = true })
	key := g.key(b, "acme.com", tenancy.Developer)
	for i := range 20 {
		servePrompt(b, g.srv.Handler(), key, fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_project","arguments":{"name":"Project %02d"}}}`, i))
	}
	for i := range 50 {
		servePrompt(b, g.srv.Handler(), key, fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_todo","arguments":{"title":"Todo %d","due_on":"2026-%02d-15"}}}`, i, i%12+1))
	}
	bodies := map[string]string{
		"tools-call-list_todos":       `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_todos","arguments":{"limit":50}}}`,
		"prompts-get-weekly_review":   `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"weekly_review"}}`,
		"completion-complete-project": `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"weekly_review"},"argument":{"name":"project","value":"proj"}}}`,
	}
	for _, name := range []string{"tools-call-list_todos", "prompts-get-weekly_review", "completion-complete-project"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				servePrompt(b, g.srv.Handler(), key, bodies[name])
			}
		})
	}
}

func servePrompt(b *testing.B, h http.Handler, key, body string) {
	req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", "Bearer "+key)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"result"`) || strings.Contains(rec.Body.String(), `"isError":true`) {
		b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
}
