package console

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// InspectorVersion is the MCP Inspector the Connect page's commands run
// (the version the end-to-end tests use; it needs Node.js 22 or later).
const InspectorVersion = "2.12.0"

// connectClient is one MCP client's ready-to-copy configuration.
type connectClient struct {
	ID, Name, Where, Needs string
	Config                 string
	KeyConfig              string // the same with an API key, for clients without OAuth sign-in (CI)
}

// connectShow shows each client's configuration with this server's real
// MCP URL.
func (c *Console) connectShow(ctx echo.Context) error {
	u := c.opts.PublicURL + "/mcp"
	clients := []connectClient{
		{ID: "claude-code", Name: "Claude Code", Where: "in a terminal",
			Needs:     "Signs you in with OAuth on first use (/mcp in Claude Code, then Authenticate).",
			Config:    "claude mcp add --transport http gatehouse " + u,
			KeyConfig: `claude mcp add --transport http gatehouse ` + u + ` --header "Authorization: Bearer $GATEHOUSE_API_KEY"`},
		{ID: "claude", Name: "Claude (claude.ai and the desktop app)", Where: "Settings → Connectors → Add custom connector",
			Needs:  "Paste the URL; Claude signs you in with OAuth.",
			Config: u},
		{ID: "cursor", Name: "Cursor", Where: "~/.cursor/mcp.json",
			Needs:     "Cursor signs you in with OAuth when the server first asks.",
			Config:    `{"mcpServers": {"gatehouse": {"url": "` + u + `"}}}`,
			KeyConfig: `{"mcpServers": {"gatehouse": {"url": "` + u + `", "headers": {"Authorization": "Bearer ${env:GATEHOUSE_API_KEY}"}}}}`},
		{ID: "vscode", Name: "VS Code", Where: ".vscode/mcp.json",
			Needs:     "VS Code signs you in with OAuth when the server first asks.",
			Config:    `{"servers": {"gatehouse": {"type": "http", "url": "` + u + `"}}}`,
			KeyConfig: `{"servers": {"gatehouse": {"type": "http", "url": "` + u + `", "headers": {"Authorization": "Bearer ${env:GATEHOUSE_API_KEY}"}}}}`},
		{ID: "inspector", Name: "MCP Inspector", Where: "in a terminal (Node.js 22 or later)",
			Needs:     "The web UI: choose Streamable HTTP, paste the URL, and Connect (OAuth). The CLI takes an API key.",
			Config:    "npx -y @modelcontextprotocol/inspector@" + InspectorVersion,
			KeyConfig: "npx -y @modelcontextprotocol/inspector@" + InspectorVersion + " --cli " + u + ` --transport http --header "Authorization: Bearer $GATEHOUSE_API_KEY" --method tools/list`},
	}
	vw := c.newView(ctx, "Connect", "connect")
	vw.Data = struct {
		URL     string
		Clients []connectClient
	}{u, clients}
	return c.render(ctx, http.StatusOK, "connect", vw)
}
