package mcp

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// codeRateLimited is the JSON-RPC error code of a rate-limited request
// (in the implementation-defined server range).
const codeRateLimited = -32029

// rateHeaders describes the tightest limit of a decision in the IETF
// RateLimit header fields (draft-ietf-httpapi-ratelimit-headers).
func rateHeaders(h http.Header, d tenancy.Decision) {
	if d.Remaining < 0 || d.Limit.Off() {
		return
	}
	// Canonical keys assigned directly: this runs on every request.
	scope := strconv.Quote(d.Scope)
	h["Ratelimit-Policy"] = []string{scope + ";q=" + strconv.Itoa(int(math.Ceil(d.Limit.PerMinute))) + ";w=60"}
	h["Ratelimit"] = []string{scope + ";r=" + strconv.Itoa(d.Remaining) + ";t=" + strconv.Itoa(retrySeconds(d))}
}

func retrySeconds(d tenancy.Decision) int {
	if d.Allowed {
		return 0
	}
	return max(1, int(math.Ceil(d.RetryAfter.Seconds())))
}

// tooMany answers a rate-limited MCP request: HTTP 429 with Retry-After,
// and a JSON-RPC error (for the request's id) saying when to retry.
func (s *Server) tooMany(c echo.Context, d tenancy.Decision, what, limit string) error {
	rateHeaders(c.Response().Header(), d)
	secs := retrySeconds(d)
	s.metrics.rateLimited.WithLabelValues(d.Scope).Inc()
	return s.rpcError(c, http.StatusTooManyRequests, secs, codeRateLimited, rateLimitMessage(what, limit, secs), rpcErrorData{Scope: d.Scope})
}

func rateLimitMessage(what, limit string, secs int) string {
	return "rate limit exceeded (" + what + ", " + limit + "): retry in " + strconv.Itoa(secs) + " s"
}

// rpcErrorData is the data of Gatehouse's JSON-RPC errors (docs/clients.md).
type rpcErrorData struct {
	Scope       string
	Limit       int
	Unavailable string
	Provider    string
}

// rpcError answers a request with an HTTP error status, Retry-After, and
// a JSON-RPC error for the request's id:
//
//	{"jsonrpc":"2.0","id":ID,"error":{"code":C,"message":M,"data":{"retry_after_seconds":N,…}}}
//
// It is the whole cost of a refusal after the decision, so the body is
// appended by hand (no reflection) and canonical header keys are assigned
// directly.
func (s *Server) rpcError(c echo.Context, status, retryAfter, code int, msg string, data rpcErrorData) error {
	return writeRefusal(c.Response(), status, peekRequest(c).id, retryAfter, code, msg, data)
}

func writeRefusal(w http.ResponseWriter, status int, id json.RawMessage, retryAfter, code int, msg string, data rpcErrorData) error {
	h := w.Header()
	h["Retry-After"] = []string{strconv.Itoa(retryAfter)}
	h["Cache-Control"] = []string{"no-store"}
	h["Content-Type"] = []string{echo.MIMEApplicationJSON}
	b := make([]byte, 0, 256)
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, id...)
	b = append(b, `,"error":{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, `,"data":{"retry_after_seconds":`...)
	b = strconv.AppendInt(b, int64(retryAfter), 10)
	for _, f := range [...]struct{ k, v string }{{"scope", data.Scope}, {"unavailable", data.Unavailable}, {"provider", data.Provider}} {
		if f.v != "" {
			b = append(b, `,"`+f.k+`":`...)
			b = appendJSONString(b, f.v)
		}
	}
	if data.Limit != 0 {
		b = append(b, `,"limit":`...)
		b = strconv.AppendInt(b, int64(data.Limit), 10)
	}
	b = append(b, "}}}\n"...)
	w.WriteHeader(status)
	_, err := w.Write(b)
	return err
}

// appendJSONString appends s as a JSON string (RFC 8259 §7): quotes,
// backslashes and control characters escaped, invalid UTF-8 replaced.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20:
			b = append(b, `\u00`...)
			b = append(b, "0123456789abcdef"[r>>4], "0123456789abcdef"[r&0xf])
		default:
			b = utf8.AppendRune(b, r) // utf8.RuneError for invalid bytes
		}
	}
	return append(b, '"')
}

// peeked is what a request asks for, read once from its body.
type peeked struct {
	id     json.RawMessage // null when it has none or is a batch
	method string
	what   string // the tool's name for tools/call, else the method
}

const peekedKey = "gatehouse.peeked"

// peekRequest reads a request's JSON-RPC id, method and tool name, leaving
// the body readable, once per request.
func peekRequest(c echo.Context) *peeked {
	if p, ok := c.Get(peekedKey).(*peeked); ok {
		return p
	}
	p := &peeked{}
	p.id, p.method, p.what = peek(c.Request())
	c.Set(peekedKey, p)
	return p
}

// limitRequest charges a request to its tenant and principal; nil means go on.
func (s *Server) limitRequest(c echo.Context, caller *Caller) error {
	if s.opts.Limiter == nil {
		return nil
	}
	d, err := s.opts.Limiter.AllowRequest(c.Request().Context(), caller.Tenant, caller.Principal.Subject)
	if err != nil {
		s.log.Warn("rate limit check failed; request allowed", "request_id", caller.RequestID, "error", err)
	}
	if !d.Allowed {
		limit := d.Limit.String()
		s.audit.rateLimited(caller, peekRequest(c).what, d.Scope+" limit "+limit)
		if token, ok := bearerToken(c.Request()); ok {
			s.denied.remember(token, caller, d, limit)
		}
		return s.tooMany(c, d, d.Scope+" "+caller.Tenant.Key, limit)
	}
	rateHeaders(c.Response().Header(), d)
	return nil
}

// authFailureThrottled answers 429 to a client IP that failed to
// authenticate too often; false means go on. It touches no database.
func (s *Server) authFailureThrottled(c echo.Context) (bool, error) {
	if s.opts.Limiter == nil {
		return false, nil
	}
	d, denied := s.opts.Limiter.AuthFailureDenied(c.RealIP())
	if !denied {
		return false, nil
	}
	s.audit.authFailed(c.RealIP(), "too many failed authentications", c.Request().UserAgent(), "")
	return true, s.tooMany(c, d, "failed authentications from your address", d.Limit.String())
}

// chargeAuthFailure counts a failed authentication against the client IP.
func (s *Server) chargeAuthFailure(c echo.Context) {
	if s.opts.Limiter == nil {
		return
	}
	if _, err := s.opts.Limiter.ChargeAuthFailure(c.Request().Context(), c.RealIP()); err != nil {
		s.log.Warn("counting a failed authentication failed", "error", err)
	}
}

// RunMaintenance does background work until ctx ends: it writes and chains
// audit records every second, runs the anomaly detector's passes
// (alerts.go), brings tenant schemas the previous release created up to
// date (every 30 s at most), and every `every` drops rate-limit counters
// that have fully replenished and rotates signing keys. It returns after a
// last audit flush. Every replica may run it.
func (s *Server) RunMaintenance(ctx context.Context, every time.Duration) {
	var audit sync.WaitGroup
	audit.Go(func() { s.audit.run(ctx, time.Second) })
	if s.alerts != nil {
		audit.Go(func() { s.alerts.run(ctx) })
	}
	defer audit.Wait()
	t := time.NewTicker(every)
	defer t.Stop()
	// Tenants created by the previous release during a rolling deploy are
	// brought up to date soon, not only on their first request.
	catchUp := time.NewTicker(min(every, 30*time.Second))
	defer catchUp.Stop()
	// After a try that locks held up, the next waits longer, doubling up
	// to 10 minutes: each try holds up a locked tenant's calls for a lock
	// wait (store: migrationLockWait), in every replica. A run that tried
	// nothing (its tenants held back by others' tries) does not count.
	var lockedPause time.Duration
	var nextCatchUp time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-catchUp.C:
			if time.Now().Before(nextCatchUp) {
				continue
			}
			err := s.db.MigrateTenants(ctx, 2, nil)
			switch {
			case ctx.Err() != nil:
			case store.MigrationsOnlyLocked(err) && !store.MigrationsTried(err):
				// Only tenants held back for a moment (another try met a
				// lock, or is under way): the next tick tries them.
			case store.MigrationsOnlyLocked(err):
				lockedPause = min(max(2*lockedPause, time.Minute), 10*time.Minute)
				nextCatchUp = time.Now().Add(lockedPause)
				s.log.Warn("maintenance: tenant schemas held up by locks; trying them again later", "retry_in", lockedPause.String(), "error", err)
			case err != nil:
				s.log.Warn("maintenance: bringing tenant schemas up to date failed", "error", err)
			default:
				lockedPause = 0
			}
			continue
		case <-t.C:
		}
		if n, err := s.db.ForgetRateLimits(ctx); err != nil {
			s.log.Warn("maintenance: dropping idle rate-limit counters failed", "error", err)
		} else if n > 0 {
			s.log.Debug("maintenance: dropped idle rate-limit counters", "count", n)
		}
		if err := s.db.ForgetInvalidations(ctx); err != nil {
			s.log.Warn("maintenance: dropping old invalidations failed", "error", err)
		}
		if s.opts.AuthServer != nil {
			if err := s.opts.AuthServer.Maintain(ctx); err != nil {
				s.log.Warn("maintenance: signing keys or expired sign-in state", "error", err)
			}
		}
	}
}
