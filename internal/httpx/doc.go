// Package httpx is Gatehouse's one HTTP surface: the echo instance that the
// MCP endpoint, the OAuth authorization server and the console hang their
// routes off, with what every response shares — request ids, panic
// recovery, security headers, the client address (trusted proxies
// honoured) and error answers (JSON, or an HTML page under a prefix that
// registered one).
//
// It imports no other Gatehouse package; mcp and console import it, never
// each other.
package httpx
