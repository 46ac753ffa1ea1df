// Command baresdk is the benchmark baseline: a go-sdk stateless Streamable
// HTTP server written the way the SDK's documentation shows (one shared
// Server, typed mcp.AddTool), with tools shaped like Gatehouse's whoami and
// add_todo, and no authentication or database.
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type whoamiIn struct{}

type whoamiOut struct {
	Subject    string   `json:"subject"`
	Provider   string   `json:"provider"`
	Tenant     string   `json:"tenant"`
	TenantKind string   `json:"tenant_kind"`
	Role       string   `json:"role"`
	Scopes     []string `json:"scopes"`
}

type addTodoIn struct {
	Title string `json:"title" jsonschema:"what needs doing"`
	Notes string `json:"notes,omitempty"`
}

type todo struct {
	ID        string    `json:"id"`
	Title     string    `json:"title"`
	Notes     string    `json:"notes,omitempty"`
	Done      bool      `json:"done"`
	CreatedAt time.Time `json:"created_at"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18090", "listen address")
	flag.Parse()
	server := mcp.NewServer(&mcp.Implementation{Name: "baresdk", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "who am I"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ whoamiIn) (*mcp.CallToolResult, whoamiOut, error) {
			return nil, whoamiOut{Subject: "apikey:bench", Provider: "apikey", Tenant: "dev", TenantKind: "organization",
				Role: "admin", Scopes: []string{"mcp:read", "mcp:write", "mcp:admin"}}, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "add_todo", Description: "add a todo"},
		func(ctx context.Context, req *mcp.CallToolRequest, in addTodoIn) (*mcp.CallToolResult, todo, error) {
			return nil, todo{ID: "00000000-0000-4000-8000-000000000000", Title: in.Title, Notes: in.Notes, CreatedAt: time.Now()}, nil
		})
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	log.Fatal(http.ListenAndServe(*addr, handler))
}
