package mcp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/labstack/echo/v4"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
)

// codeUnavailable is the JSON-RPC error code of a request that failed
// because a dependency (the database, an identity provider) cannot be
// reached right now: retry after Retry-After (docs/clients.md).
const codeUnavailable = -32030

// Seconds a client is told to wait after an outage answer.
const (
	retryDatabase = 2
	retryProvider = 5
)

// outage says which dependency could not be reached.
type outage struct {
	dependency string // "database" or "identity_provider"
	provider   string // the identity provider's class, for identity_provider
}

func (o outage) message() string {
	if o.dependency == "database" {
		return fmt.Sprintf("the database is temporarily unavailable; retry in %d s", retryDatabase)
	}
	return fmt.Sprintf("the identity provider (%s) cannot be reached to check your credential; retry in %d s", o.provider, retryProvider)
}

func (o outage) retryAfter() int {
	if o.dependency == "database" {
		return retryDatabase
	}
	return retryProvider
}

// rpcError is the JSON-RPC error a tool or resource handler returns for
// the outage (over stdio it is the whole answer; over HTTP the response
// becomes a 503, see answerOutages).
func (o outage) rpcError() error {
	data, _ := json.Marshal(map[string]any{"retry_after_seconds": o.retryAfter(), "unavailable": o.dependency})
	return &jsonrpc.Error{Code: codeUnavailable, Message: o.message(), Data: data}
}

// outageBox carries a handler's outage to the HTTP layer of its request.
type outageBox struct{ p atomic.Pointer[outage] }

// reportOutage marks c's request as failed by o: its HTTP answer becomes a
// 503 (see answerOutages). It returns the JSON-RPC error for the handler.
func (s *Server) reportOutage(c *Caller, o outage) error {
	s.metrics.unavailable.WithLabelValues(o.dependency).Inc()
	if c != nil && c.outage != nil {
		c.outage.p.Store(&o)
	}
	return o.rpcError()
}

// answerOutages wraps the response of a request whose handler may report
// an outage: what the SDK writes for it is dropped, and the request is
// answered HTTP 503 with Retry-After and a JSON-RPC error instead, so
// clients can tell a temporary failure from a result. Call done after the
// handler returned.
func (s *Server) answerOutages(c echo.Context, caller *Caller) (done func()) {
	caller.outage = &outageBox{}
	res := c.Response()
	w := &outageWriter{ResponseWriter: res.Writer, box: caller.outage}
	res.Writer = w
	return func() {
		res.Writer = w.ResponseWriter
		o := caller.outage.p.Load()
		if o == nil || !w.dropped {
			return
		}
		body, _ := json.Marshal(map[string]any{
			"jsonrpc": "2.0",
			"id":      peekRequest(c).id,
			"error":   map[string]any{"code": codeUnavailable, "message": o.message(), "data": map[string]any{"retry_after_seconds": o.retryAfter(), "unavailable": o.dependency}},
		})
		h := w.Header()
		h.Del("Content-Length")
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		h.Set("Retry-After", strconv.Itoa(o.retryAfter()))
		res.Status, res.Size = http.StatusServiceUnavailable, int64(len(body))
		w.ResponseWriter.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.ResponseWriter.Write(body)
	}
}

// outageWriter drops the SDK's answer to a request whose handler reported
// an outage (it writes nothing before its handler returns).
type outageWriter struct {
	http.ResponseWriter
	box     *outageBox
	dropped bool
}

func (w *outageWriter) WriteHeader(code int) {
	if w.dropped || w.box.p.Load() != nil {
		w.dropped = true
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *outageWriter) Write(b []byte) (int, error) {
	if w.dropped || w.box.p.Load() != nil {
		w.dropped = true
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *outageWriter) Flush() {
	if !w.dropped && w.box.p.Load() == nil {
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
	}
}

func (w *outageWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// providerClass names the kind of identity provider a token is checked
// with, for an outage answer: never the token, only its issuer's kind.
func providerClass(token, publicURL string) string {
	switch {
	case strings.HasPrefix(token, apikey.Prefix):
		return "API keys"
	case strings.HasPrefix(token, "gho_"), strings.HasPrefix(token, "ghu_"), strings.HasPrefix(token, "ghp_"), strings.HasPrefix(token, "github_pat_"):
		return "GitHub"
	case strings.HasPrefix(token, "ya29."):
		return "Google"
	}
	_, iss, ok := identity.PeekJWT(token)
	if !ok {
		return "unknown"
	}
	if iss == publicURL {
		return "Gatehouse"
	}
	u, err := url.Parse(iss)
	if err != nil || u.Host == "" {
		return "OpenID Connect issuer"
	}
	switch h := u.Hostname(); {
	case h == "accounts.google.com":
		return "Google"
	case strings.HasSuffix(h, ".auth0.com"):
		return "Auth0"
	default:
		return "OpenID Connect issuer " + h
	}
}
