package mcp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/labstack/echo/v4"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/store"
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

// outage says which dependency could not be reached, or (busy) which
// bound on concurrent use refused a call inside its handler.
type outage struct {
	dependency string // "database" or "identity_provider"
	provider   string // the identity provider's class, for identity_provider
	busy       *store.BusyError
	// locked: the database answered, but the tenant's tables were locked
	// by another session (store.Locked): a migration held up behind a
	// dump, the audit log under maintenance. Clients see the database's
	// outage (the same retry); operators a count of its own.
	locked bool
}

// databaseOutage is the outage err, an error store.Unavailable reports,
// stands for.
func databaseOutage(err error) outage {
	return outage{dependency: "database", locked: store.Locked(err)}
}

// label is o's value of gatehouse_unavailable_total's dependency label:
// database_lock for a locked tenant, apart from the database's outages.
func (o outage) label() string {
	if o.locked {
		return "database_lock"
	}
	return o.dependency
}

func (o outage) message() string {
	switch {
	case o.busy != nil:
		return fmt.Sprintf("too many concurrent calls: %s are all in use (%d); retry in 1 s", o.busy.What, o.busy.Limit)
	case o.locked:
		return fmt.Sprintf("this organisation's data is held by another database session for a moment (maintenance, a migration or a backup); retry in %d s", retryDatabase)
	case o.dependency == "database":
		return fmt.Sprintf("the database is temporarily unavailable; retry in %d s", retryDatabase)
	}
	return fmt.Sprintf("the identity provider (%s) cannot be reached to check your credential; retry in %d s", o.provider, retryProvider)
}

func (o outage) retryAfter() int {
	switch {
	case o.busy != nil:
		return 1
	case o.dependency == "database":
		return retryDatabase
	}
	return retryProvider
}

func (o outage) status() int {
	if o.busy != nil {
		return http.StatusTooManyRequests
	}
	return http.StatusServiceUnavailable
}

func (o outage) code() int {
	if o.busy != nil {
		return codeBusy
	}
	return codeUnavailable
}

func (o outage) data() rpcErrorData {
	if o.busy != nil {
		return rpcErrorData{Scope: o.busy.Scope, Limit: o.busy.Limit}
	}
	return rpcErrorData{Unavailable: o.dependency, Provider: o.provider}
}

// rpcError is the JSON-RPC error a tool or resource handler returns for
// the outage (over stdio it is the whole answer; over HTTP the response
// becomes a 503, or a 429 when busy, see answerOutages).
func (o outage) rpcError() error {
	d := o.data()
	data, _ := json.Marshal(map[string]any{"retry_after_seconds": o.retryAfter(), "unavailable": d.Unavailable, "scope": d.Scope})
	return &jsonrpc.Error{Code: int64(o.code()), Message: o.message(), Data: data}
}

// outageBox carries a handler's outage to the HTTP layer of its request.
type outageBox struct{ p atomic.Pointer[outage] }

// reportOutage marks c's request as failed by o: its HTTP answer becomes a
// 503 (see answerOutages). It returns the JSON-RPC error for the handler.
func (s *Server) reportOutage(c *Caller, o outage) error {
	if o.busy != nil {
		s.metrics.busy.WithLabelValues(o.busy.Scope).Inc()
	} else {
		s.metrics.unavailable.WithLabelValues(o.label()).Inc()
	}
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
		h := w.Header()
		h.Del("Content-Length")
		res.Status = o.status()
		_ = writeRefusal(w.ResponseWriter, o.status(), peekRequest(c).id, o.retryAfter(), o.code(), o.message(), o.data())
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
