package mcp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/internal/embeddings"
	"github.com/gatehouse-mcp/gatehouse/internal/httpx"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Options configure a [Server].
type Options struct {
	DB       *store.DB
	Resolver *identity.Resolver
	Tenancy  *tenancy.Service
	// Limiter enforces rate limits; nil means none.
	Limiter *tenancy.Limiter
	// PublicURL is the canonical external URL (scheme://host[:port], no
	// trailing slash); the MCP resource is PublicURL + "/mcp".
	PublicURL string
	// TrustedProxies are the networks whose X-Forwarded-For is believed.
	TrustedProxies []*net.IPNet
	// AllowedOrigins may send browser requests to /mcp from another origin.
	AllowedOrigins []string
	// ToolTimeout bounds one tool call (default 30s).
	ToolTimeout time.Duration
	// Admission bounds the calls in flight; nil means
	// DefaultAdmission(the tenant-work pool's size), and so do its zero
	// counts (its Wait is taken as it is).
	Admission *Admission
	// ReadHeaderTimeout, BodyTimeout and MaxPendingPerIP bound slow clients
	// (see conns.go); zero means the Default of each.
	ReadHeaderTimeout time.Duration
	BodyTimeout       time.Duration
	MaxPendingPerIP   int
	// ToolPolicy overrides the compiled-in role and scope of some tools
	// (by name) and prompts (by "prompts/" + name).
	ToolPolicy ToolPolicy
	// AuthServer, when set, is Gatehouse's OAuth authorization server for
	// MCP clients: when people can sign in with it, its endpoints are
	// mounted here and the protected resource metadata names it; its keys
	// are rotated by RunMaintenance. (Its Verifier is the Resolver's
	// business.)
	AuthServer *authserver.Server
	// TLS, when set, serves HTTPS (TLS 1.3) instead of plain HTTP; its
	// GetCertificate/GetConfigForClient can swap certificates at run time.
	TLS *tls.Config
	// ClientCerts, when set, maps a verified client certificate to the
	// caller of a request that carries no bearer token (mutual TLS). TLS
	// must ask for client certificates for there to be any.
	ClientCerts ClientCertMapper
	// AuditKey keys the audit chain and argument digests.
	AuditKey store.AuditKey
	// AuditCommitWindow is the shortest time between the starts of two
	// group commits of audit records while records arrive fast enough to
	// expect another within it (see groupCommitter): up to this much
	// latency per call, for fewer commits. Zero means
	// DefaultAuditCommitWindow; negative, none.
	AuditCommitWindow time.Duration
	// AuditLog receives one JSON line per audit record (stdout in serve);
	// nil discards them.
	AuditLog *slog.Logger
	// ReadyNotes, when set, adds notes to /readyz's detail: configuration
	// warnings and identity providers that failed their check. They are
	// for the operator; they do not make the replica unready.
	ReadyNotes func() map[string]string
	// MetricsToken, when set, is the bearer token /metrics requires
	// (Prometheus: authorization.credentials); empty leaves /metrics open.
	MetricsToken string
	// Alerts configure anomaly alerts (alerts.go); nil means the defaults
	// (on, no key suspension).
	Alerts *AlertOptions
	// Embeddings, when set, is the provider semantic search embeds with;
	// nil: semantic search is not configured. Embedder tunes the worker
	// (RunEmbedder) that embeds documents.
	Embeddings *embeddings.Client
	Embedder   EmbedderOptions
	// Surface is the HTTP surface to hang the routes off, shared with
	// the other parts of Gatehouse (the console); nil makes one.
	Surface *httpx.Surface
	Logger  *slog.Logger
	Version string
}

// ClientCertMapper says which principal a verified client certificate chain
// (leaf first) stands for; an error wrapping identity.ErrInvalidToken
// refuses it.
type ClientCertMapper interface {
	Principal(chain []*x509.Certificate) (*identity.Principal, error)
}

// Server is Gatehouse's MCP server and HTTP surface.
type Server struct {
	opts      Options
	log       *slog.Logger
	db        *store.DB
	sdk       *sdk.Server
	tools     map[string]*Tool
	prompts   map[string]*Prompt // prompts.go
	echo      *httpx.Surface
	handler   http.Handler // echo behind the fast refusal of remembered denials
	denied    deniedTokens
	metrics   *metrics
	audit     *auditor
	alerts    *detector // nil when alerts are off
	admit     *admitter
	cursorKey cursorKey
	draining  atomic.Bool
	semantic  *semantic

	stdioToken string // the credential of a stdio session; empty over HTTP
	canQuery   bool   // the database can confine the query tool

	// catchUps runs one catch-up migration per tenant at a time (http.go,
	// catchUp); catchUpLocked holds, by tenant id, until when a tenant
	// whose catch-up was held up by a lock is refused without a new try.
	catchUps      singleflight.Group
	catchUpLocked sync.Map
}

// New assembles the server. One *sdk.Server is shared by every request.
func New(opts Options) (*Server, error) {
	if opts.DB == nil || opts.Resolver == nil || opts.Tenancy == nil {
		return nil, errors.New("mcp: DB, Resolver and Tenancy are required")
	}
	if opts.PublicURL == "" {
		return nil, errors.New("mcp: PublicURL is required")
	}
	opts.PublicURL = strings.TrimSuffix(opts.PublicURL, "/")
	if opts.ToolTimeout <= 0 {
		opts.ToolTimeout = 30 * time.Second
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = DefaultBodyTimeout
	}
	if opts.MaxPendingPerIP <= 0 {
		opts.MaxPendingPerIP = DefaultMaxPendingPerIP
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.AuditLog == nil {
		opts.AuditLog = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		db:      opts.DB,
		tools:   map[string]*Tool{},
		metrics: newMetrics(),
		audit:   newAuditor(opts.DB, opts.AuditKey, opts.AuditLog, opts.Logger),
	}
	s.cursorKey = opts.AuditKey.Derive("pagination cursors")
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	sem, err := newSemantic(sctx, opts.DB, opts.Embeddings, opts.Embedder, s.metrics.reg)
	scancel()
	if err != nil {
		return nil, err
	}
	sem.log = s.log
	s.semantic = sem
	adm := DefaultAdmission(int(opts.DB.Limits().TenantConns))
	if a := opts.Admission; a != nil {
		for _, f := range []struct {
			dst *int
			v   int
		}{{&adm.Total, a.Total}, {&adm.Tenant, a.Tenant}, {&adm.Principal, a.Principal}, {&adm.TenantQueue, a.TenantQueue}} {
			if f.v > 0 {
				*f.dst = f.v
			}
		}
		if a.Tenant > 0 && a.Principal == 0 {
			adm.Principal = min(adm.Tenant, max(4, adm.Tenant/2))
		}
		adm.Wait = a.Wait
	}
	s.log.Info("admission", "calls_in_flight", adm.Total, "per_tenant", adm.Tenant, "per_principal", adm.Principal,
		"tenant_queue", adm.TenantQueue, "wait", adm.Wait.String())
	s.admit = newAdmitter(adm)
	s.audit.group.inFlight = s.admit.inFlight
	switch w := opts.AuditCommitWindow; {
	case w == 0:
		s.audit.group.window = DefaultAuditCommitWindow
	case w > 0:
		s.audit.group.window = w
	}
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_calls_in_flight", Help: "Calls doing database work (tools/call, resources/read, prompts/get, completion/complete) admitted and not finished (not counting those waiting only for their audit record's group commit).",
	}, func() float64 { return float64(s.admit.inFlight()) }))
	s.sdk = sdk.NewServer(&sdk.Implementation{Name: "gatehouse", Title: "Gatehouse", Version: opts.Version}, &sdk.ServerOptions{
		Instructions: "Gatehouse gives you your organisation's shared workspace. Call whoami to see who you are acting as.",
		Logger:       sdkLogger(opts.Logger),
		// A stateless server has no stream to announce list changes on:
		// advertise no listChanged (the SDK's default says true). Logging
		// stays advertised as before: the revisions served before
		// 2026-07-28 define logging/setLevel.
		//lint:ignore SA1019 logging is deprecated only from protocol 2026-07-28
		Capabilities: &sdk.ServerCapabilities{Logging: &sdk.LoggingCapabilities{}, Tools: &sdk.ToolCapabilities{}, Resources: &sdk.ResourceCapabilities{},
			Prompts: &sdk.PromptCapabilities{}},
		CompletionHandler: s.complete, // completion.go
	})
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	s.canQuery = opts.DB.CanCreateRoles(rctx)
	cancel()
	if !s.canQuery {
		s.log.Warn("the database account cannot create roles: tenants are isolated by schema only, and the query tool is off")
	}
	for _, t := range tools() {
		if t.Name == "query" && !s.canQuery {
			continue
		}
		if rule, ok := opts.ToolPolicy[t.Name]; ok {
			t.Role, t.Scope = rule.Role, rule.Scope
		}
		s.register(t)
	}
	for name := range opts.ToolPolicy {
		if s.tools[name] == nil && name != "query" && !strings.HasPrefix(name, promptPolicyPrefix) {
			return nil, fmt.Errorf("mcp: tool policy names unknown tool %q", name)
		}
	}
	if opts.Alerts == nil || !opts.Alerts.Off {
		d, err := newDetector(s, opts.Alerts)
		if err != nil {
			return nil, err
		}
		s.alerts = d
	}
	s.sdk.AddReceivingMiddleware(s.filterTools)
	s.registerResources()
	if err := s.registerPrompts(opts.ToolPolicy); err != nil {
		return nil, err
	}
	s.echo = opts.Surface
	if s.echo == nil {
		s.echo = httpx.New(httpx.Options{PublicURL: opts.PublicURL, TrustedProxies: opts.TrustedProxies, Logger: opts.Logger})
	}
	s.routes(s.echo)
	s.handler = s.fastRefusal(s.echo)
	return s, nil
}

func (s *Server) register(t *Tool) {
	if _, dup := s.tools[t.Name]; dup {
		panic("mcp: duplicate tool " + t.Name)
	}
	s.tools[t.Name] = t
	s.sdk.AddTool(t.def, s.pipeline(t))
}

// Handler returns the HTTP handler for every route.
func (s *Server) Handler() http.Handler { return s.handler }

// ResourceURL is the MCP resource identifier: PublicURL + "/mcp".
func (s *Server) ResourceURL() string { return s.opts.PublicURL + "/mcp" }

// pipeline wraps a tool with the per-call steps every tool passes:
// authorize, validate, execute in the tenant, account.
func (s *Server) pipeline(t *Tool) sdk.ToolHandler {
	return func(ctx context.Context, req *sdk.CallToolRequest) (*sdk.CallToolResult, error) {
		c, err := s.callerOf(ctx, req.Extra)
		if err != nil {
			// Over HTTP the middleware has refused this already; over stdio
			// the key was revoked or expired during the session.
			return nil, err
		}
		if req.Extra == nil || req.Extra.TokenInfo == nil {
			if err := s.limitStdio(ctx, c, t.Name); err != nil {
				return nil, err
			}
		}
		start := time.Now()
		res, outcome, err := s.call(ctx, t, c, req.Params.Arguments)
		s.metrics.toolCall(t.Name, outcome, time.Since(start))
		var busy *store.BusyError
		switch {
		case outcome == "unavailable":
			return nil, s.reportOutage(c, databaseOutage(err))
		case errors.As(err, &busy):
			return nil, s.reportOutage(c, outage{busy: busy})
		}
		return res, nil
	}
}

// call decides and runs one tool call and audits it. A call that changes
// data writes its record in the same transaction as its effect, so no
// effect exists without its record. A call that changes nothing (a
// refusal by role or scope, whoami, a read) has its record group-committed
// with other calls' records (groupCommitter) after it ran: whoami opens no
// transaction at all, reads run in a READ ONLY one. Either way the call
// answers only once its record is durable. A call that fails rolls its
// transaction back and is recorded in a fresh one, so every call leaves a
// record — one: a tool failing after its final statement (store.Final)
// had committed its effect with the ALLOWED record keeps that record
// alone (store.ErrWriteCommitted), and is answered with its error. A tool with its own connection (query) runs before its record is
// written, never inside a tenant transaction: a call holds at most one
// tenant connection at a time. outcome "unavailable" means the database
// could not be reached; err is the failure, if any.
func (s *Server) call(ctx context.Context, t *Tool, c *Caller, raw []byte) (*sdk.CallToolResult, string, error) {
	rec := s.audit.base(c, t.Name, raw)
	var res *sdk.CallToolResult
	outcome := "ok"
	var after []func()
	var err error
	allowed := t.allows(c)
	commit := func() error { return s.commitAudit(c, rec) }
	var ownDone func() // see awayFromGroupCommit
	ownRecord := func() {
		if ownDone == nil {
			ownDone = s.awayFromGroupCommit(c)
		}
	}
	defer func() {
		if ownDone != nil {
			ownDone()
		}
	}()
	switch {
	case !allowed:
		rec.Decision, rec.Reason = store.Denied, fmt.Sprintf("needs role %s and scope %s; has role %s", t.Role, t.Scope, c.Role)
		res, outcome = denial(t, c), "denied"
		err = commit()
	case t.ownConn || t.noTenantData:
		back := func() {}
		if t.ownConn {
			// It may run for the tool time limit before its record comes.
			back = s.awayFromGroupCommit(c)
			defer back() // (a no-op once called; here if the tool panics)
		}
		err = s.execute(ctx, nil, t, c, raw, &res, &after, rec)
		back()
		if err == nil {
			rec.Decision = store.Allowed
			err = commit()
		}
	case t.readOnly:
		if t.readsAudit {
			err = s.db.SettleAudit(ctx, c.Tenant)
		}
		if err != nil {
			break
		}
		err = s.db.InTenantReadOnly(ctx, c.Tenant, func(ctx context.Context, tx pgx.Tx) error {
			after = nil
			return s.execute(ctx, tx, t, c, raw, &res, &after, rec)
		})
		if err == nil {
			rec.Decision = store.Allowed
			err = commit()
		}
	default:
		// The record travels with COMMIT, the transaction's opening with
		// the tool's first statement (store.InTenantWrite).
		ownRecord()
		rec.Decision = store.Allowed
		err = s.db.InTenantWrite(ctx, c.Tenant, func(ctx context.Context, tx pgx.Tx) error {
			after = nil
			return s.execute(ctx, tx, t, c, raw, &res, &after, rec)
		}, rec)
	}
	if err == nil {
		for _, f := range after {
			f()
		}
	}
	if err != nil {
		var internal bool
		res, outcome, internal = toolFailure(c.RequestID, err)
		if internal {
			s.log.Error("tool call failed", "tool", t.Name, "request_id", c.RequestID, "tenant", c.Tenant.Key, "subject", c.Principal.Subject, "error", err)
		} else if outcome == "unavailable" && store.Locked(err) {
			s.log.Warn("tool call refused for a moment: the tenant's tables are locked by another session", "tool", t.Name, "request_id", c.RequestID, "tenant", c.Tenant.Key, "error", err)
		} else if outcome == "unavailable" {
			s.log.Warn("tool call failed: the database is unavailable", "tool", t.Name, "request_id", c.RequestID, "tenant", c.Tenant.Key, "error", err)
		}
		if errors.Is(err, store.ErrWriteCommitted) {
			// The tool failed after its final statement committed the
			// effect with the call's ALLOWED record (store.Final): that
			// record stays the call's only one.
			s.audit.written(c.Tenant, rec)
			return res, outcome, err
		}
		rec.Decision, rec.Reason = store.Failed, outcome
		if rf := (*ruleRefusal)(nil); errors.As(err, &rf) {
			rec.Decision, rec.Reason = store.Denied, rf.msg
		} else if refusedByInput(outcome) {
			// The caller's input broke a rule: a refusal, not a failure.
			rec.Decision, rec.Reason = store.Denied, errorText(res)
		}
		ownRecord()
		s.recordAlone(ctx, c, rec)
	}
	s.audit.written(c.Tenant, rec)
	return res, outcome, err
}

// recordAlone writes rec, the record of c's request that failed, in a
// transaction of its own (the failure may be the group commit's, or the
// call's transaction's). A record the database does not take (the outage
// or the lock that failed the request refuses its record too) is kept and
// tried again by the auditor (audit_held.go), not dropped; only beyond the
// bound of records kept is it lost, and its reason, on the audit stream,
// says so.
func (s *Server) recordAlone(ctx context.Context, c *Caller, rec *store.AuditRecord) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := s.db.InsertAuditRecord(rctx, c.Tenant, rec)
	if err != nil {
		// Not stored: no id, whatever a rolled-back attempt returned (the
		// audit stream's line says so).
		rec.ID, rec.At = 0, time.Time{}
	}
	switch {
	case err == nil:
	case s.audit.hold(c.Tenant, rec):
		s.log.Warn("audit record not stored yet; kept, and tried again shortly", "what", rec.Tool, "request_id", c.RequestID, "tenant", c.Tenant.Key, "error", err)
	default:
		rec.Reason += "; audit record not stored"
		s.audit.lostRecords(c.Tenant, 1, "too many records kept", err)
	}
}

// execute validates the arguments and runs the tool in tx, within the tool
// time limit; rec is the call's audit record (see Call.auditReason).
func (s *Server) execute(ctx context.Context, tx pgx.Tx, t *Tool, c *Caller, raw []byte, res **sdk.CallToolResult, after *[]func(), rec *store.AuditRecord) error {
	args, err := t.validate(raw)
	if err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, s.opts.ToolTimeout)
	defer cancel()
	call := &Call{Caller: c, Tx: tx, cursors: s.cursorKey, srv: s, rec: rec}
	*res, err = t.run(tctx, call, args)
	*after = call.afterCommit
	return err
}

// FollowInvalidations applies changes made by any Gatehouse process sharing
// the database (revoked keys, changed tenants) to this one's caches, until
// ctx ends.
func (s *Server) FollowInvalidations(ctx context.Context) {
	s.db.Listen(ctx, func(inv store.Invalidation) {
		switch inv.Kind {
		case store.InvalidateAPIKey:
			n := s.opts.Resolver.Forget(func(p *identity.Principal) bool { return p.APIKeyID == inv.ID })
			s.log.Info("API key revoked: forgot its cached validations", "api_key_id", inv.ID, "entries", n)
		case store.InvalidateTenant:
			s.opts.Tenancy.Forget(inv.ID)
		case store.InvalidateFamily:
			n := s.opts.Resolver.Forget(func(p *identity.Principal) bool { return p.Claims[authserver.FamilyClaim] == inv.ID })
			s.log.Info("sign-in revoked: forgot its access tokens' cached validations", "entries", n)
		case "*": // (re)connected: anything may have changed while we were not listening
			s.opts.Resolver.Forget(func(p *identity.Principal) bool { return p.APIKeyID != "" || p.Claims[authserver.FamilyClaim] != nil })
			s.opts.Tenancy.Forget("")
		}
	})
}

// Drain makes /readyz fail so load balancers stop sending new requests;
// call it when shutdown begins.
func (s *Server) Drain() { s.draining.Store(true) }

// ListenAndServe serves on addr until ctx ends, then drains: /readyz fails,
// the listener closes, and in-flight requests get up to grace to finish.
func (s *Server) ListenAndServe(ctx context.Context, addr string, grace time.Duration) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln, grace)
}

// Serve is ListenAndServe on a listener the caller bound, so that a busy
// port is known before anything else starts (the command binds first). It
// closes ln. The error is the listener's or the shutdown's; nil after a
// clean drain.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	srv, ln := s.httpServer(ln)
	srv.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	errc := make(chan error, 1)
	if srv.TLSConfig = s.opts.TLS; srv.TLSConfig != nil {
		s.log.Info("listening (TLS 1.3)", "addr", ln.Addr().String(), "mcp", s.ResourceURL(), "client_certificates", s.opts.ClientCerts != nil)
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		s.log.Info("listening", "addr", ln.Addr().String(), "mcp", s.ResourceURL())
		go func() { errc <- srv.Serve(ln) }()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.Drain()
	s.log.Info("shutting down: draining in-flight requests", "grace", grace.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// sdkLogger passes the SDK's warnings and errors to our log. Its INFO lines
// are per-session lifecycle events, three per stateless request: noise.
func sdkLogger(log *slog.Logger) *slog.Logger {
	return slog.New(minLevel{log.Handler(), slog.LevelWarn}).With("component", "mcp-sdk")
}

type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
