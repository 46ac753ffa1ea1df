package mcp

import (
	"crypto/sha256"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/httpx"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// A tenant flooding past its rate limit sends thousands of requests a
// second that will all be refused until its retry time: the denial is
// certain (a GCRA timestamp only moves forward). So the first refusal of a
// credential is remembered under a hash of the credential, and until the
// retry time its requests are answered at the door, before the router,
// the middleware, the credential cache and the tenant look-up: the same
// 429, headers and JSON-RPC error, counted in the same metrics and the
// same aggregated audit record, for a fraction of the CPU. A credential
// revoked meanwhile is refused all the same (429 instead of 401) until
// then. Requests that carry an Origin header (browsers) always take the
// full path, so that CORS and the origin check answer them as usual.

// deniedTokens remembers refused credentials until their retry time.
type deniedTokens struct {
	n  atomic.Int64 // entries, read without the lock on every request
	mu sync.Mutex
	m  map[[32]byte]*deniedToken
}

type deniedToken struct {
	until  time.Time
	d      tenancy.Decision
	limit  string
	caller Caller // principal and tenant; request fields filled per request
}

// maxDenied bounds the memory of refused credentials; beyond it, expired
// entries are swept and new ones are not remembered (they take the full
// path, which refuses them too).
const maxDenied = 100_000

func (t *deniedTokens) remember(token string, c *Caller, d tenancy.Decision, limit string) {
	if d.RetryAfter <= 0 {
		return
	}
	k := sha256.Sum256([]byte(token))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[[32]byte]*deniedToken{}
	}
	now := time.Now()
	if len(t.m) >= maxDenied {
		for k, e := range t.m {
			if now.After(e.until) {
				delete(t.m, k)
			}
		}
		if len(t.m) >= maxDenied {
			return
		}
	}
	t.m[k] = &deniedToken{until: now.Add(d.RetryAfter), d: d, limit: limit, caller: Caller{Principal: c.Principal, Tenant: c.Tenant, Role: c.Role, MemberID: c.MemberID}}
	t.n.Store(int64(len(t.m)))
}

// lookup returns the live entry of token, if any.
func (t *deniedTokens) lookup(token string) *deniedToken {
	if t.n.Load() == 0 {
		return nil
	}
	k := sha256.Sum256([]byte(token))
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[k]
	if e == nil {
		return nil
	}
	if time.Now().After(e.until) {
		delete(t.m, k)
		t.n.Store(int64(len(t.m)))
		return nil
	}
	return e
}

// fastRefusal wraps the HTTP handler: requests to /mcp whose credential
// is remembered as refused are answered here.
func (s *Server) fastRefusal(next http.Handler) http.Handler {
	hsts := len(s.opts.PublicURL) > 8 && s.opts.PublicURL[:8] == "https://"
	requests := s.metrics.httpRequests.WithLabelValues("/mcp", http.MethodPost, "429")
	duration := s.metrics.httpDuration.WithLabelValues("/mcp")
	extractIP := s.echo.IPExtractor
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A request from a web page (Origin set) takes the full path, whose
		// CORS answer and origin check come first (cors.go).
		if r.Method != http.MethodPost || r.URL.Path != "/mcp" || s.denied.n.Load() == 0 || r.Header["Origin"] != nil {
			next.ServeHTTP(w, r)
			return
		}
		token, ok := bearerToken(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		e := s.denied.lookup(token)
		if e == nil {
			next.ServeHTTP(w, r)
			return
		}
		ip := extractIP(r)
		if !e.caller.Principal.AllowedNetworks.AllowsIP(ip) {
			// Refused for its network on the full path (403), which does
			// not charge the key: its holder elsewhere must not learn the
			// key's rate-limit state, nor be answered as its user is.
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		d := e.d
		d.RetryAfter = time.Until(e.until)
		id, _, what := peek(r)
		c := e.caller
		c.RequestID, c.ClientIP, c.UserAgent = httpx.NewRequestID(r), ip, r.UserAgent()
		s.audit.rateLimited(&c, what, d.Scope+" limit "+e.limit)
		h := w.Header()
		h["X-Request-Id"] = []string{c.RequestID}
		h["Vary"] = []string{"Origin"} // as the CORS middleware answers a request without Origin
		httpx.SetSecurityHeaders(h, hsts)
		rateHeaders(h, d)
		secs := retrySeconds(d)
		s.metrics.rateLimited.WithLabelValues(d.Scope).Inc()
		_ = writeRefusal(w, http.StatusTooManyRequests, id, secs, codeRateLimited,
			rateLimitMessage(d.Scope+" "+c.Tenant.Key, e.limit, secs), rpcErrorData{Scope: d.Scope})
		requests.Inc()
		duration.Observe(time.Since(start).Seconds())
	})
}
