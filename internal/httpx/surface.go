package httpx

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
)

// Options configure a [Surface].
type Options struct {
	// PublicURL is the canonical external URL; https turns on HSTS.
	PublicURL string
	// TrustedProxies are the networks whose X-Forwarded-For is believed.
	TrustedProxies []*net.IPNet
	Logger         *slog.Logger
}

// Surface is the echo instance every part of Gatehouse serves on.
type Surface struct {
	*echo.Echo
	log   *slog.Logger
	pages []errorPage
}

type errorPage struct {
	prefix string
	render func(c echo.Context, code int, message string)
}

// New builds the surface: request ids (Pre), panic recovery and security
// headers (Use), the client-IP rule and the error handler.
func New(opts Options) *Surface {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	s := &Surface{Echo: e, log: opts.Logger}
	e.IPExtractor = IPExtractor(opts.TrustedProxies)
	e.HTTPErrorHandler = s.httpError
	e.Pre(requestID)
	e.Use(s.recover, securityHeaders(strings.HasPrefix(opts.PublicURL, "https://")))
	return s
}

// ErrorPages makes errors of requests under prefix (echo's own 404 and
// 405, panics, handlers' *echo.HTTPError) answer with render instead of
// JSON.
func (s *Surface) ErrorPages(prefix string, render func(c echo.Context, code int, message string)) {
	s.pages = append(s.pages, errorPage{prefix, render})
}

// Info is what the middleware learns about a request, for its access log
// line: its id, and who made it once a part of Gatehouse established that.
type Info struct {
	ID      string
	Subject string
	Tenant  string
}

const infoKey = "gatehouse.request"

// RequestInfo returns the request's Info (never nil).
func RequestInfo(c echo.Context) *Info {
	ri, _ := c.Get(infoKey).(*Info)
	if ri == nil {
		ri = &Info{}
		c.Set(infoKey, ri)
	}
	return ri
}

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{8,64}$`)

// requestID assigns each request an id: the caller's X-Request-Id when it
// is well formed (a proxy's id ties our logs to its logs), else a new one.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := NewRequestID(c.Request())
		c.Response().Header()[echo.HeaderXRequestID] = []string{id}
		c.Set(infoKey, &Info{ID: id})
		return next(c)
	}
}

// NewRequestID is the id of request r: its X-Request-Id when well formed,
// else a new random one (for handlers that answer before the surface).
func NewRequestID(r *http.Request) string {
	id := r.Header.Get(echo.HeaderXRequestID)
	if !requestIDPattern.MatchString(id) {
		var b [12]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	return id
}

func (s *Surface) recover(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("panic serving request", "request_id", RequestInfo(c).ID, "panic", fmt.Sprint(r))
				err = echo.NewHTTPError(http.StatusInternalServerError)
			}
		}()
		return next(c)
	}
}

// DefaultCSP is the Content-Security-Policy of every response that sets
// no other: nothing may load, nothing may frame it. Pages (the console)
// replace it with their own.
const DefaultCSP = "default-src 'none'; frame-ancestors 'none'"

func securityHeaders(hsts bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			SetSecurityHeaders(c.Response().Header(), hsts)
			return next(c)
		}
	}
}

// SetSecurityHeaders sets the headers every response carries (hsts: the
// public URL is https). Canonical keys are assigned directly: every
// request, refused ones included, passes here.
func SetSecurityHeaders(h http.Header, hsts bool) {
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["X-Frame-Options"] = []string{"DENY"}
	h["Referrer-Policy"] = []string{"no-referrer"}
	h["Content-Security-Policy"] = []string{DefaultCSP}
	h["Cross-Origin-Resource-Policy"] = []string{"same-site"}
	if hsts {
		h["Strict-Transport-Security"] = []string{"max-age=63072000; includeSubDomains"}
	}
}

// httpError answers echo's own errors (404, 405, panics) and errors
// handlers return: as JSON, or as a registered error page.
func (s *Surface) httpError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, ""
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code = he.Code
		if m, ok := he.Message.(string); ok && he.Internal == nil {
			msg = m
		}
	}
	if msg == "" {
		msg = http.StatusText(code)
	}
	path := c.Request().URL.Path
	for _, p := range s.pages {
		if path == p.prefix || strings.HasPrefix(path, p.prefix+"/") {
			p.render(c, code, msg)
			return
		}
	}
	_ = c.JSON(code, map[string]string{"error": strings.ToLower(strings.ReplaceAll(http.StatusText(code), " ", "_")), "request_id": RequestInfo(c).ID})
}

// IPExtractor decides the client IP: the connection's peer, unless that
// peer is a trusted proxy, in which case the nearest untrusted
// X-Forwarded-For hop. Hops written with a port (203.0.113.7:5555,
// [2001:db8::1]:443, as some proxies such as Azure Application Gateway
// write them) count as their address; echo's extractor would skip them
// and fall back to the proxy's own address.
func IPExtractor(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range trusted {
		opts = append(opts, echo.TrustIPRange(n))
	}
	extract := echo.ExtractIPFromXFFHeader(opts...)
	return func(r *http.Request) string {
		values := r.Header.Values(echo.HeaderXForwardedFor)
		var fixed []string
		for i, v := range values {
			if w := withoutPorts(v); w != v {
				if fixed == nil {
					fixed = slices.Clone(values)
				}
				fixed[i] = w
			}
		}
		if fixed == nil {
			return extract(r)
		}
		r2 := *r // the handlers keep seeing the request as it came
		r2.Header = r.Header.Clone()
		r2.Header[echo.HeaderXForwardedFor] = fixed
		return extract(&r2)
	}
}

// withoutPorts rewrites the hops of one X-Forwarded-For value that carry
// a port (host:port, [v6]:port) or brackets ([v6]) as the bare address;
// every other hop, valid or not, is left as it is.
func withoutPorts(v string) string {
	if !strings.ContainsAny(v, ":[") {
		return v
	}
	hops := strings.Split(v, ",")
	changed := false
	for i, h := range hops {
		h = strings.TrimSpace(h)
		if net.ParseIP(h) != nil {
			continue
		}
		host := strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if hp, _, err := net.SplitHostPort(h); err == nil {
			host = hp
		}
		if ip := net.ParseIP(host); ip != nil {
			hops[i], changed = host, true
		}
	}
	if !changed {
		return v
	}
	return strings.Join(hops, ",")
}

// Origin is where an action reaches Gatehouse from, for its audit record:
// the surface (Via: "" for MCP, "console"), the request id, the client's
// address and user agent.
type Origin struct {
	Via, RequestID, ClientIP, UserAgent string
}
