package mcp_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
