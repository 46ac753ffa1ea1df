package mcp

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/modelcontextprotocol/go-sdk/auth"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/internal/httpx"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// routes hangs the MCP endpoint, its metadata, the authorization server
// and the operational endpoints off the shared surface e, and logs every
// request the surface serves (an access log line and the HTTP metrics).
func (s *Server) routes(e *httpx.Surface) {
	e.Pre(s.accessLog) // outside routing and recovery: sees every answer

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", echo.WrapHandler(s.metrics.handler()), s.metricsAuth)

	servers := []string{}
	if s.opts.AuthServer != nil && s.opts.AuthServer.SignIn() {
		servers = []string{s.opts.PublicURL}
		s.mountAuthServer(e)
	}
	prm := echo.WrapHandler(auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
		Resource:               s.ResourceURL(),
		AuthorizationServers:   servers,
		ScopesSupported:        identity.AllScopes,
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "Gatehouse",
	}))
	// Only the path-inserted form (RFC 9728 §3.1): a document must name the
	// resource its URL was derived from (§3.3), and the root form's would be
	// the bare host, which is not the resource Gatehouse issues tokens for.
	e.GET("/.well-known/oauth-protected-resource/mcp", prm, publicCORS())
	e.OPTIONS("/.well-known/oauth-protected-resource/mcp", prm, publicCORS())

	sdkHandler := func(jsonResponse bool) http.Handler {
		return sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s.sdk }, &sdk.StreamableHTTPOptions{
			Stateless:    true,
			JSONResponse: jsonResponse,
			Logger:       sdkLogger(s.log),
		})
	}
	// edge (edge.go) does the content negotiation and JSON-RPC error
	// answers the SDK cannot be configured to do.
	mcpHandler := &edge{sse: sdkHandler(false), json: sdkHandler(true), maxBody: sdk.DefaultMaxRequestBodyBytes}
	// The SDK carries auth.TokenInfo from the request to tool handlers; only
	// its RequireBearerToken can put it there, so it re-reads the caller the
	// authenticate middleware already established.
	withTokenInfo := auth.RequireBearerToken(func(ctx context.Context, _ string, _ *http.Request) (*auth.TokenInfo, error) {
		if c := callerFromContext(ctx); c != nil {
			return c.tokenInfo(), nil
		}
		return nil, auth.ErrInvalidToken
	}, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})
	// Browsers: CORS and the origin check come before authentication and
	// rate limiting (cors.go).
	origins := s.newOrigins()
	e.Any("/mcp", echo.WrapHandler(withTokenInfo(mcpHandler)), mcpCORS(origins), s.originGuard(origins), s.authenticate, s.stepUp)
}

// mountAuthServer serves the authorization server's endpoints. Its rate
// limits key on the client's address, so the request it sees carries the
// address established here (trusted proxies honoured) as RemoteAddr.
func (s *Server) mountAuthServer(e *httpx.Surface) {
	h := s.opts.AuthServer.Handler()
	serve := func(c echo.Context) error {
		r := *c.Request()
		r.RemoteAddr = net.JoinHostPort(c.RealIP(), "0")
		h.ServeHTTP(c.Response(), &r)
		return nil
	}
	for _, p := range authserver.Paths {
		switch {
		case slices.Contains(authserver.MetadataPaths, p):
			e.Any(p, serve, publicCORS())
		case slices.Contains(authserver.APIPaths, p):
			e.Any(p, serve, oauthAPICORS())
		default: // the person's browser steps: navigations, no CORS
			e.Any(p, serve)
		}
	}
}

// accessLog writes one structured line per request (never the query string,
// which may carry credentials) and records the HTTP metrics.
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		status, d := c.Response().Status, time.Since(start)
		s.metrics.httpRequests.WithLabelValues(route, methodLabel(c.Request().Method), strconv.Itoa(status)).Inc()
		s.metrics.httpDuration.WithLabelValues(route).Observe(d.Seconds())
		level := slog.LevelInfo
		switch {
		case status >= 500:
			level = slog.LevelError
		case route == "/healthz" || route == "/readyz" || route == "/metrics":
			level = slog.LevelDebug
		case status == http.StatusTooManyRequests:
			// A flood is counted (metrics, aggregated audit records), not
			// logged request by request.
			level = slog.LevelDebug
		}
		if !s.log.Enabled(c.Request().Context(), level) {
			return nil
		}
		ri := httpx.RequestInfo(c)
		s.log.LogAttrs(c.Request().Context(), level, "http request",
			slog.String("request_id", ri.ID),
			slog.String("method", c.Request().Method),
			slog.String("path", c.Request().URL.Path),
			slog.Int("status", status),
			slog.Float64("duration_ms", float64(d.Microseconds())/1000),
			slog.Int64("bytes", c.Response().Size),
			slog.String("client_ip", c.RealIP()),
			slog.String("subject", ri.Subject),
			slog.String("tenant", ri.Tenant),
		)
		return nil
	}
}

// authenticate establishes the caller (principal, tenant, role) or answers
// 401/403/503 with an RFC 6750 WWW-Authenticate challenge.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		ctx := req.Context()
		if throttled, err := s.authFailureThrottled(c); throttled {
			return err
		}
		var p *identity.Principal
		var err error
		byCertificate := false
		token, ok := bearerToken(req)
		if ok {
			p, err = s.opts.Resolver.Resolve(ctx, token)
		} else if chain := verifiedClientChain(req); chain != nil && s.opts.ClientCerts != nil {
			p, err = s.opts.ClientCerts.Principal(chain)
			byCertificate = true
		} else {
			return s.refuse(c, nil)
		}
		if err != nil {
			return s.refuseOrOutage(c, err, token)
		}
		if !p.HasScope(identity.ScopeRead) {
			return s.refuseWith(c, errInsufficientScope, identity.UnionScopes(p.Scopes, []string{identity.ScopeRead}))
		}
		m, err := s.opts.Tenancy.Resolve(ctx, p)
		if err != nil {
			return s.refuseOrOutage(c, err, token)
		}
		if m.Tenant.SchemaVersion < store.TenantSchemaVersion() {
			behind := m
			if m, err = s.catchUp(ctx, p, behind.Tenant.ID); err != nil {
				s.auditCatchUpRefused(c, p, behind, err)
				return s.refuseOrOutage(c, err, token)
			}
		}
		// A token Gatehouse issued names the tenant its holder consented
		// in; if the person is placed elsewhere now, it is not theirs to use.
		if issued, _ := p.Claims[authserver.TenantClaim].(string); issued != "" && issued != m.Tenant.Key {
			return s.refuse(c, identity.Invalid("the token was issued for tenant %s, where you no longer belong; sign in again", issued))
		}
		ri := httpx.RequestInfo(c)
		ri.Subject, ri.Tenant = p.Subject, m.Tenant.Key
		caller := &Caller{
			Principal: p, Tenant: m.Tenant, Role: m.Role, MemberID: m.MemberID,
			RequestID: ri.ID, ClientIP: c.RealIP(), UserAgent: req.UserAgent(),
		}
		// Before the rate limits: a refused request costs the key nothing
		// (networks.go says why).
		if !networkAllowed(caller) {
			return s.refuseNetwork(c, caller)
		}
		if err := s.limitRequest(c, caller); err != nil || c.Response().Committed {
			return err
		}
		release, err := s.admitRequest(c, caller)
		if err != nil || c.Response().Committed {
			return err
		}
		if release != nil {
			defer release()
			caller.slot = release
		}
		defer s.answerOutages(c, caller)()
		r := c.Request().WithContext(withCaller(ctx, caller))
		if byCertificate {
			// The SDK's RequireBearerToken (the only way to hand tools a
			// TokenInfo) refuses a request without a bearer header before it
			// asks us; its verifier ignores the value and returns the caller
			// established here, so a placeholder lets the request through.
			r.Header = r.Header.Clone()
			r.Header.Set("Authorization", "Bearer client-certificate")
		}
		c.SetRequest(r)
		return next(c)
	}
}

// catchUp migrates a tenant the previous release created during a rolling
// deploy before its first request here, and places the caller again.
// Concurrent calls of one tenant share one migration. One held up by a
// lock (store.ErrMigrationLocked: another session reads or maintains the
// tenant's tables) holds the tenant back for store.CatchUpPause on every
// replica (store.DB.CatchUpTenant): its calls are refused at once (503)
// meanwhile, here without even asking the database: each try queues an
// ACCESS EXCLUSIVE request that holds up every statement on the table for
// its lock wait, and calls retrying back to back, on one replica or
// several, kept the table blocked.
func (s *Server) catchUp(ctx context.Context, p *identity.Principal, tenantID string) (*tenancy.Membership, error) {
	if until, ok := s.catchUpLocked.Load(tenantID); ok && time.Now().Before(until.(time.Time)) {
		return nil, fmt.Errorf("tenant %s: %w", tenantID, store.ErrMigrationLocked)
	}
	_, err, _ := s.catchUps.Do(tenantID, func() (any, error) {
		// Not cut short by the first caller going away: the others wait on it.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		err := s.db.CatchUpTenant(mctx, tenantID)
		var held *store.MigrationLockedError
		switch {
		case errors.As(err, &held): // transient: the calls answer 503
			s.catchUpLocked.Store(tenantID, time.Now().Add(held.RetryAfter))
			if held.Tried {
				s.log.Warn("bringing a tenant schema up to date is held up by a lock; its calls are refused for a moment", "tenant_id", tenantID,
					"retry_in", held.RetryAfter.String(), "error", err)
			}
		case err != nil:
			s.log.Error("bringing a tenant schema up to date failed", "tenant_id", tenantID, "error", err)
		default:
			s.catchUpLocked.Delete(tenantID)
		}
		return nil, err
	})
	if err != nil {
		return nil, err
	}
	s.opts.Tenancy.Forget(tenantID)
	return s.opts.Tenancy.Resolve(ctx, p)
}

// auditCatchUpRefused records, in the tenant's audit log, a request
// refused because its tenant's schema could not be brought up to date
// (err, from catchUp): an ERROR record per principal and tool each flush,
// with the count, as rate-limited requests have (auditor.refused), written
// at the next flush or, while the audit log cannot take it, kept
// (audit_held.go). A schema behind this release's takes it: the record
// names no column newer than the audit log's first (store.InsertAudit
// leaves out an empty via), and a batch that names more is written record
// by record.
func (s *Server) auditCatchUpRefused(c echo.Context, p *identity.Principal, m *tenancy.Membership, err error) {
	reason := "unavailable: the tenant's schema could not be brought up to date"
	if store.Locked(err) {
		reason = "unavailable: the tenant's schema is being brought up to date, and another database session holds its tables"
	}
	caller := &Caller{
		Principal: p, Tenant: m.Tenant, Role: m.Role, MemberID: m.MemberID,
		RequestID: httpx.RequestInfo(c).ID, ClientIP: c.RealIP(), UserAgent: c.Request().UserAgent(),
	}
	s.audit.refused(caller, peekRequest(c).what, store.Failed, reason, "")
}

// verifiedClientChain is the client certificate chain the TLS handshake
// verified, leaf first; nil when there is none. A bearer token, when sent,
// takes precedence: the certificate then only secured the connection.
func verifiedClientChain(r *http.Request) []*x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0]
}

// bearerToken extracts the credential of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

// refuseOrOutage answers a request whose caller could not be established:
// 503 with Retry-After and a JSON-RPC error when the database or the
// identity provider could not be reached (naming which), else refuse.
func (s *Server) refuseOrOutage(c echo.Context, err error, token string) error {
	var o outage
	switch {
	case store.Unavailable(err):
		o = databaseOutage(err)
	case errors.Is(err, identity.ErrUnavailable):
		o = outage{dependency: "identity_provider", provider: providerClass(token, s.opts.PublicURL)}
	default:
		return s.refuse(c, err)
	}
	s.metrics.unavailable.WithLabelValues(o.label()).Inc()
	s.metrics.authFailures.WithLabelValues("temporarily_unavailable").Inc()
	if o.locked {
		s.log.Warn("request refused for a moment: the tenant's tables are locked by another session", "request_id", httpx.RequestInfo(c).ID, "error", err)
	} else {
		s.log.Warn("request refused: a dependency cannot be reached", "request_id", httpx.RequestInfo(c).ID, "dependency", o.dependency, "provider", o.provider, "error", err)
	}
	return s.rpcError(c, http.StatusServiceUnavailable, o.retryAfter(), codeUnavailable, o.message(),
		rpcErrorData{Unavailable: o.dependency, Provider: o.provider})
}

// refuse answers a request whose caller could not be established. err nil
// means no credential was sent: per RFC 6750 §3.1 the challenge then carries
// no error code, only where to learn how to get one. The challenge's scope
// is the minimal set a client should ask for (mcp:read mcp:write); the
// protected resource metadata lists every scope.
func (s *Server) refuse(c echo.Context, err error) error {
	return s.refuseWith(c, err, []string{identity.ScopeRead, identity.ScopeWrite})
}

// refuseWith is refuse with the challenge naming scope.
func (s *Server) refuseWith(c echo.Context, err error, scope []string) error {
	req := c.Request()
	a := authAnswer{http.StatusUnauthorized, "invalid_request", "no bearer token: send Authorization: Bearer <token>"}
	if s.opts.ClientCerts != nil {
		a.description = "no credential: send Authorization: Bearer <token>, or a client certificate"
	}
	if err != nil {
		a = authFailure(err)
	}
	ri := httpx.RequestInfo(c)
	s.metrics.authFailures.WithLabelValues(a.code).Inc()
	if a.status == http.StatusUnauthorized && err != nil {
		s.chargeAuthFailure(c) // a missing token is not a guess; a wrong one is
	}
	if a.status != http.StatusInternalServerError {
		keyID := ""
		if tok, ok := bearerToken(req); ok && a.status == http.StatusUnauthorized && err != nil {
			keyID, _ = apikey.ParseID(tok) // public; says which key someone tried, never that it was used
		}
		s.audit.authFailed(c.RealIP(), a.description, req.UserAgent(), keyID)
	}
	if a.status == http.StatusInternalServerError {
		s.log.Error("authentication failed", "request_id", ri.ID, "error", err)
	} else {
		attrs := []any{"request_id", ri.ID, "status", a.status, "code", a.code, "reason", a.description, "client_ip", c.RealIP()}
		if tok, ok := bearerToken(req); ok {
			if _, iss, ok := identity.PeekJWT(tok); ok { // the issuer is not secret, and names the provider at fault
				attrs = append(attrs, "token_iss", identity.ShortIssuer(iss))
			}
		}
		s.log.Info("request refused", attrs...)
	}
	h := c.Response().Header()
	params := []string{`realm="gatehouse"`}
	if err != nil && (a.status == http.StatusUnauthorized || a.code == "insufficient_scope") {
		params = append(params, fmt.Sprintf(`error=%q`, a.code), fmt.Sprintf(`error_description=%q`, a.description))
	}
	params = append(params,
		fmt.Sprintf(`resource_metadata=%q`, s.resourceMetadataURL()),
		fmt.Sprintf(`scope=%q`, strings.Join(scope, " ")))
	if a.status == http.StatusUnauthorized || a.status == http.StatusForbidden {
		h.Set("WWW-Authenticate", "Bearer "+strings.Join(params, ", "))
	}
	if a.status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "5")
	}
	h.Set("Cache-Control", "no-store")
	return c.JSON(a.status, map[string]string{"error": a.code, "error_description": a.description, "request_id": ri.ID})
}

// metricsAuth requires Options.MetricsToken as a bearer token on /metrics
// when one is configured (RFC 6750 §3 challenge otherwise).
func (s *Server) metricsAuth(next echo.HandlerFunc) echo.HandlerFunc {
	want := []byte(s.opts.MetricsToken)
	return func(c echo.Context) error {
		if len(want) == 0 {
			return next(c)
		}
		got, _ := bearerToken(c.Request())
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="gatehouse-metrics"`)
			return c.JSON(http.StatusUnauthorized, map[string]string{"error": "invalid_token",
				"error_description": "/metrics needs Authorization: Bearer <GATEHOUSE_METRICS_TOKEN>"})
		}
		return next(c)
	}
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok", "version": s.opts.Version})
}

// readyz reports whether this replica should receive traffic: not draining,
// the database answers, and its migrations are current.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 3*time.Second)
	defer cancel()
	notReady := func(reason string) error {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": reason})
	}
	if s.draining.Load() {
		return notReady("shutting down")
	}
	busy := false
	if err := s.db.Ping(ctx); err != nil {
		// The control pool is never taken by tool calls; all of it in use
		// and no answer within the time limit is load, not an outage: the
		// replica stays in rotation (taking it out would move the load).
		if !s.db.ControlBusy() || store.Unavailable(err) {
			s.log.Warn("readiness: database unreachable", "error", err)
			return notReady("database unreachable")
		}
		busy = true
	}
	if busy {
		return c.JSON(http.StatusOK, map[string]string{"status": "ready", "database": "busy: every control connection is in use"})
	}
	st, err := s.db.MigrationStatus(ctx)
	if err != nil {
		s.log.Warn("readiness: migration status", "error", err)
		return notReady("cannot read migration status")
	}
	if st.Control < st.ControlWant {
		return notReady("migrations pending: " + st.String())
	}
	detail := map[string]string{"status": "ready", "tenant_isolation": "schema and role", "query_tool": "on"}
	if st.TenantsBehind > 0 {
		// Tenants the previous release created during a rolling deploy:
		// each is brought up to date on its first request here, and all
		// of them by the maintenance loop within a minute.
		detail["tenant_schemas_catching_up"] = strconv.Itoa(st.TenantsBehind)
	}
	detail["semantic_search"] = s.semantic.ranking
	if !s.canQuery {
		detail["tenant_isolation"], detail["query_tool"] = "schema only", "off: the database account cannot create roles"
	}
	if s.opts.ReadyNotes != nil {
		for k, v := range s.opts.ReadyNotes() {
			detail[k] = v
		}
	}
	return c.JSON(http.StatusOK, detail)
}
