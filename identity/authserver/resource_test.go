package authserver

import "testing"

func TestCanonicalResource(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://mcp.example.com/mcp", "https://mcp.example.com/mcp"},
		{"HTTPS://MCP.Example.COM/mcp", "https://mcp.example.com/mcp"},
		{"https://mcp.example.com:443/mcp", "https://mcp.example.com/mcp"},
		{"http://mcp.example.com:80/mcp", "http://mcp.example.com/mcp"},
		{"HTTP://127.0.0.1:8080/mcp", "http://127.0.0.1:8080/mcp"},
		{"https://mcp.example.com:8443/mcp", "https://mcp.example.com:8443/mcp"},
		{"http://mcp.example.com:443/mcp", "http://mcp.example.com:443/mcp"}, // not http's default
		{"https://mcp.example.com/%6Dcp", "https://mcp.example.com/mcp"},
		{"https://mcp.example.com/./a/../mcp", "https://mcp.example.com/mcp"},
		{"https://mcp.example.com", "https://mcp.example.com/"},
		{"https://[::1]:443/mcp", "https://[::1]/mcp"},
		{"https://mcp.example.com/MCP", "https://mcp.example.com/MCP"}, // paths are case-sensitive
		{"https://mcp.example.com/mcp/", "https://mcp.example.com/mcp/"},
	} {
		got, err := canonicalResource(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("canonicalResource(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"/mcp", "mcp.example.com/mcp", "https://mcp.example.com/mcp#x", "https://u:p@mcp.example.com/mcp", "urn:x:y", "https://%zz/"} {
		if got, err := canonicalResource(bad); err == nil {
			t.Errorf("canonicalResource(%q) = %q, want an error", bad, got)
		}
	}
}
