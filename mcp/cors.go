package mcp

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/gatehouse-mcp/gatehouse/internal/httpx"
)

// CORS (Fetch standard, "CORS protocol") for browser-based MCP clients, with
// echo's CORS middleware. Three kinds of endpoint:
//
//   - /mcp answers the origins of GATEHOUSE_ALLOWED_ORIGINS only. Its
//     preflight is answered before authentication and rate limiting, every
//     answer to an allowed origin (200, 401, 403, 429, 5xx) carries
//     Access-Control-Allow-Origin and Vary: Origin, and a request from any
//     other web origin is refused (403) before authentication, so it costs
//     the holder of the credential it carries nothing (MCP transports
//     2025-11-25, "Security Warning": servers MUST validate Origin).
//   - Metadata documents (protected resource, authorization server, JWKS)
//     are public: readable from any origin.
//   - /oauth/register, /oauth/token and /oauth/revoke answer any origin:
//     they use no cookies and are protected by PKCE and client
//     authentication, not by origin. /oauth/authorize, the provider steps
//     and the consent page are navigations of the person's browser and
//     answer no CORS at all.

// corsMaxAge is how long a browser may cache a preflight (Chromium caps it
// at two hours).
const corsMaxAge = 7200

var (
	// mcpRequestHeaders are the request headers a browser may send to /mcp
	// (Streamable HTTP; Mcp-Method and Mcp-Name are sent by clients of the
	// protocol's next revision).
	mcpRequestHeaders = []string{"Authorization", "Content-Type", "Accept", "Mcp-Protocol-Version", "Mcp-Session-Id", "Last-Event-ID", "Mcp-Method", "Mcp-Name"}
	// mcpResponseHeaders are the response headers a page may read.
	mcpResponseHeaders = []string{"WWW-Authenticate", "Mcp-Session-Id", "Mcp-Protocol-Version", "Retry-After", "RateLimit", "RateLimit-Policy"}
)

// origins is who may call /mcp from a browser: Gatehouse's own origin and
// the allowed ones, all canonical (see canonicalOrigin).
type origins struct {
	own     string
	allowed []string
}

// newOrigins canonicalises the public URL's origin and the allowed
// origins, logging (and ignoring) any allowed origin that is not one.
func (s *Server) newOrigins() *origins {
	o := &origins{}
	o.own, _ = canonicalOrigin(s.opts.PublicURL)
	for _, a := range s.opts.AllowedOrigins {
		if c, ok := canonicalOrigin(a); ok {
			o.allowed = append(o.allowed, c)
		} else {
			s.log.Warn("ignoring allowed origin: not scheme://host[:port]", "origin", a)
		}
	}
	return o
}

// allows reports whether origin is one of the allowed origins (compared
// canonically, as browsers serialise them).
func (o *origins) allows(origin string) bool {
	c, ok := canonicalOrigin(origin)
	return ok && slices.Contains(o.allowed, c)
}

// mcpCORS answers CORS on /mcp for the allowed origins.
func mcpCORS(o *origins) echo.MiddlewareFunc {
	return middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOriginFunc: func(origin string) (bool, error) { return o.allows(origin), nil },
		AllowMethods:    []string{http.MethodGet, http.MethodPost, http.MethodDelete},
		AllowHeaders:    mcpRequestHeaders,
		ExposeHeaders:   mcpResponseHeaders,
		MaxAge:          corsMaxAge,
	})
}

// publicCORS lets any origin read a metadata document; its preflight allows
// the Mcp-Protocol-Version header the TypeScript SDK sends with discovery.
func publicCORS() echo.MiddlewareFunc {
	return middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOrigins: []string{"*"},
		AllowMethods: []string{http.MethodGet},
		AllowHeaders: []string{"Mcp-Protocol-Version", "Content-Type"},
		MaxAge:       corsMaxAge,
	})
}

// oauthAPICORS lets any origin call an OAuth endpoint a client calls with
// fetch (registration, token, revocation).
func oauthAPICORS() echo.MiddlewareFunc {
	return middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOrigins:  []string{"*"},
		AllowMethods:  []string{http.MethodPost},
		AllowHeaders:  []string{"Authorization", "Content-Type", "Mcp-Protocol-Version"},
		ExposeHeaders: []string{"WWW-Authenticate", "Retry-After"},
		MaxAge:        corsMaxAge,
	})
}

// originGuard refuses a request to /mcp that a browser sent from a web
// origin which is neither Gatehouse's own (GATEHOUSE_PUBLIC_URL) nor an
// allowed one, before authentication and rate limiting. Requests without an
// Origin header (every non-browser client) go on.
func (s *Server) originGuard(o *origins) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			origin := c.Request().Header.Get(echo.HeaderOrigin)
			if origin == "" || o.allows(origin) {
				return next(c)
			}
			if co, ok := canonicalOrigin(origin); ok && co == o.own {
				return next(c)
			}
			return s.refuseOrigin(c, origin)
		}
	}
}

// refuseOrigin answers a request from a web origin that may not call /mcp
// (MCP transports: HTTP 403, a JSON-RPC error without id).
func (s *Server) refuseOrigin(c echo.Context, origin string) error {
	s.log.Info("cross-origin request refused", "request_id", httpx.RequestInfo(c).ID, "origin", truncate(origin, 200), "client_ip", c.RealIP())
	return c.JSON(http.StatusForbidden, map[string]any{
		"jsonrpc": "2.0", "id": nil,
		"error": map[string]any{"code": -32600, "message": "requests from the web origin " + truncate(origin, 200) +
			" are not allowed; the server's operator can allow it with GATEHOUSE_ALLOWED_ORIGINS"},
	})
}

// canonicalOrigin serialises an origin as the Fetch standard does
// (RFC 6454 §6.2): lower-case scheme and host, no default port, no path.
// A URL with a path other than "/" or with a query is not an origin.
func canonicalOrigin(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, true
}
