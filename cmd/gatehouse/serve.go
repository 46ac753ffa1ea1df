package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse-mcp/gatehouse/console"
	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/internal/embeddings"
	"github.com/gatehouse-mcp/gatehouse/internal/httpx"
	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// maintainConsole drops expired console sessions every few minutes.
func maintainConsole(ctx context.Context, con *console.Console, log *slog.Logger) {
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		if err := con.MaintainSessions(ctx); err != nil && ctx.Err() == nil {
			log.Warn("console: dropping expired sessions failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func serveCmd(ctx context.Context, e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the MCP server (DATABASE_URL, or the embedded PostgreSQL)",
		Long: `Run the MCP server: Streamable HTTP at /mcp, OAuth sign-in for MCP clients,
/healthz, /readyz and /metrics.

It listens on GATEHOUSE_ADDR, else :$PORT, else :8080, and uses DATABASE_URL, or
without it the embedded PostgreSQL in GATEHOUSE_DATA_DIR (for trying Gatehouse on
one machine). The first start on an empty database prints an admin API key once,
when the server is serving. Every setting is an environment variable: gatehouse
config lists them. SIGTERM drains in-flight requests.`,
		Example: `  gatehouse serve
  GATEHOUSE_ADDR=localhost:8080 gatehouse serve
  DATABASE_URL=postgres://gatehouse@db/gatehouse GATEHOUSE_PUBLIC_URL=https://mcp.example.com gatehouse serve`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error { return serve(ctx, e) },
	}
}

func serve(ctx context.Context, e *env) error {
	cfg, log, err := setup(e)
	if err != nil {
		return err
	}
	// Bind first: a busy port ends the start before anything is made or
	// printed (DESIGN §4: the bootstrap key is shown once, when serving).
	ln, err := e.listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w (another process has the port? set PORT or GATEHOUSE_ADDR)", cfg.Addr, err)
	}
	defer ln.Close()
	log.Info("starting gatehouse", "version", buildVersion(), "public_url", cfg.PublicURL)
	reportPublicURL(cfg, log)
	tuneGC(ctx, e.getenv, log)
	db, err := openDatabase(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	defer db.close(ctx, log)
	db.CheckConnectionBudget(ctx)
	if err := startMigrations(db.MigrateTenants(ctx, 4, logMigrationProgress(log)), log); err != nil {
		return err
	}
	if err := db.SetServedURL(ctx, cfg.PublicURL); err != nil {
		return err
	}
	first, err := issueBootstrapKey(ctx, db, e, log)
	if err != nil {
		return err
	}
	srv, stop, err := startServer(ctx, cfg, db, log, e.stdout)
	if err != nil {
		undoBootstrap(ctx, db, first, log)
		return err
	}
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, cfg.ShutdownGrace) }()
	if first == nil {
		return <-served
	}
	if err, done := awaitServing(ctx, ln.Addr(), cfg.TLSCert != "", served); err != nil || done {
		undoBootstrap(ctx, db, first, log)
		if !done {
			err = cmp.Or(<-served, err)
		}
		return err
	}
	log.Info("first start: issued the bootstrap admin API key for tenant dev (printed on stdout, once)", "api_key_id", first.keyID)
	first.print(e.stdout, cfg.PublicURL+"/mcp")
	return <-served
}

// startServer builds the MCP server and starts its background work
// (invalidations, audit chaining, housekeeping). stop ends the background
// work, waiting for the last audit flush, and must run before the database
// closes. Audit lines go to auditOut.
func startServer(ctx context.Context, cfg *Config, db *database, log *slog.Logger, auditOut io.Writer) (*mcp.Server, func(), error) {
	ropts, err := cfg.Providers.resolverOptions(apikey.NewVerifier(db, log), cfg.AuthCacheTTL, cfg.DefaultScopes)
	if err != nil {
		return nil, nil, fmt.Errorf("%w:\n%s", errConfig, indent(err))
	}
	log.Info("identity providers", "enabled", append([]string{"apikey"}, cfg.Providers.names()...),
		"tenant_signup", cfg.Policy.Signup, "default_role", cfg.Policy.DefaultRole)
	log.Info("rate limits", "tenant", cfg.Limits.Tenant.String(), "principal", cfg.Limits.Principal.String(),
		"auth_failures_per_ip", cfg.Limits.AuthFailure.String(), "registrations_per_ip", cfg.Limits.Registration.String())
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	akeys, err := auditKeys(ctx, db, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	akey := akeys[0] // the newest chains; older ones only verify
	tenants := tenancy.NewService(db, tenancy.ServiceOptions{Policy: cfg.Policy})
	limiter := tenancy.NewLimiter(db, cfg.Limits)
	as, err := newAuthServer(ctx, cfg, db, tenants, limiter, log)
	if err != nil {
		limiter.Close()
		tenants.Close()
		return nil, nil, err
	}
	// Gatehouse's own tokens are routed by their issuer, the public URL.
	ropts.Issuers[cfg.PublicURL] = as.Verifier()
	resolver := identity.NewResolver(ropts)
	closeAll := func() { limiter.Close(); tenants.Close(); resolver.Close() }
	tlsConfig, clientCerts, err := serverTLS(cfg, log)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	var embedder *embeddings.Client
	if cfg.Embeddings != nil {
		if embedder, err = embeddings.New(*cfg.Embeddings); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("%w: %w", errConfig, err)
		}
		log.Info("semantic search: embeddings provider configured (each tenant's admin turns it on)", "endpoint", embedder.Endpoint(), "model", embedder.Model())
	}
	logAlerts(log, cfg.Alerts)
	surface := httpx.New(httpx.Options{PublicURL: cfg.PublicURL, TrustedProxies: cfg.TrustedProxies, Logger: log})
	srv, err := mcp.New(mcp.Options{
		Embeddings: embedder,
		Surface:    surface, TLS: tlsConfig, ClientCerts: clientCerts,
		DB: db.DB, Resolver: resolver, Tenancy: tenants, Limiter: limiter, AuthServer: as,
		PublicURL: cfg.PublicURL, TrustedProxies: cfg.TrustedProxies, AllowedOrigins: cfg.AllowedOrigins,
		ToolTimeout: cfg.ToolTimeout, AuditCommitWindow: cfg.AuditCommitWindow, ToolPolicy: cfg.ToolPolicy, Admission: &cfg.Admission, Alerts: &cfg.Alerts,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout, BodyTimeout: cfg.BodyTimeout, MaxPendingPerIP: cfg.MaxPendingPerIP,
		AuditKey: akey, AuditLog: slog.New(slog.NewJSONHandler(auditOut, nil)),
		ReadyNotes: cfg.notes.snapshot, MetricsToken: cfg.MetricsToken, Logger: log, Version: buildVersion(),
	})
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	con, err := console.New(console.Options{
		PublicURL: cfg.PublicURL, DB: db.DB, Tenancy: tenants, SignIn: as, Tools: srv, Limiter: limiter,
		RoleScopes: func(r tenancy.Role) []string { return mcp.RoleScopes(r, cfg.ToolPolicy) },
		Operators:  cfg.Operators,
		VerifyAudit: func(ctx context.Context, t *tenancy.Tenant) (*store.AuditReport, error) {
			return db.VerifyAudit(ctx, t, akeys...)
		},
		Logger: log,
	})
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	con.Mount(surface)
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup
	bg.Go(func() { maintainConsole(bctx, con, log) })
	bg.Go(func() { srv.FollowInvalidations(bctx) })
	bg.Go(func() { srv.RunMaintenance(bctx, 5*time.Minute) })
	bg.Go(func() { srv.RunEmbedder(bctx) })
	bg.Go(func() { checkIssuers(bctx, cfg.Providers.issuerChecks(), cfg.notes, log) })
	bg.Go(func() { watchBackupLocks(bctx, db.BackupLocks, cfg.notes, log, backupLocksEvery) })
	return srv, func() { cancel(); bg.Wait(); closeAll() }, nil
}

// newAuthServer builds the OAuth authorization server: sign-in for MCP
// clients when a provider has a client secret, and in any case the keys
// that sign (and verify) Gatehouse's own access tokens.
func newAuthServer(ctx context.Context, cfg *Config, db *database, tenants *tenancy.Service, limiter *tenancy.Limiter, log *slog.Logger) (*authserver.Server, error) {
	keys, err := signingKeys(ctx, cfg, db, log)
	if err != nil {
		return nil, err
	}
	as, err := authserver.New(authserver.Config{
		Issuer: cfg.PublicURL, Resource: cfg.PublicURL + "/mcp", Store: db.DB, Keys: keys,
		Upstreams: cfg.Providers.signin, Place: mcp.Placer(tenants, cfg.ToolPolicy),
		TokenTTL: cfg.TokenTTL, RefreshTTL: cfg.RefreshTTL, Dev: cfg.Dev,
		AllowRegistration: func(ctx context.Context, ip string) (bool, time.Duration) {
			d, err := limiter.AllowRegistration(ctx, ip)
			if err != nil {
				log.Warn("registration rate limit unavailable; allowing", "error", err)
			}
			return d.Allowed, d.RetryAfter
		},
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	if as.SignIn() {
		var names []string
		for _, u := range cfg.Providers.signin {
			names = append(names, u.Name)
		}
		log.Info("sign-in for MCP clients", "providers", names, "authorization_server", cfg.PublicURL)
		if !strings.HasPrefix(cfg.PublicURL, "https://") && !isLoopbackURL(cfg.PublicURL) {
			log.Warn("GATEHOUSE_PUBLIC_URL is plain http on a non-local host: sign-in cookies and tokens travel unencrypted; put TLS in front and set an https public URL")
		}
	} else {
		log.Info("sign-in for MCP clients is off: give Google, GitHub, Auth0 or an OIDC issuer a client secret to turn it on (docs/clients.md)")
	}
	return as, nil
}

// signingKeys opens the access-token signing keys and makes sure one is
// active.
func signingKeys(ctx context.Context, cfg *Config, db *database, log *slog.Logger) (*authserver.Keys, error) {
	secrets := cfg.SigningKeys
	if len(secrets) == 0 {
		s, err := db.Secret(ctx, "signing-key")
		if err != nil {
			return nil, err
		}
		secrets = [][]byte{s}
		if db.embedded == nil {
			log.Warn("GATEHOUSE_SIGNING_KEY is not set: token signing keys are encrypted with a secret kept in the same database; set GATEHOUSE_SIGNING_KEY so a database dump alone cannot sign tokens")
		}
	}
	keys, err := authserver.NewKeys(db.DB, secrets...)
	if err != nil {
		return nil, fmt.Errorf("%w: GATEHOUSE_SIGNING_KEY: %w", errConfig, err)
	}
	if err := keys.Rotate(ctx); err != nil {
		return nil, err
	}
	return keys, nil
}

func isLoopbackURL(u string) bool {
	p, err := url.Parse(u)
	if err != nil {
		return false
	}
	h := p.Hostname()
	return h == "localhost" || h == "127.0.0.1" || h == "::1"
}

// firstStart is the bootstrap admin key of a first start, held in memory
// only until it is printed (the database keeps its hash).
type firstStart struct {
	keyID, secret string
}

// issueBootstrapKey issues the first admin key on an empty database (nil if
// the database is not empty). The key is printed only where a person reads
// it (a terminal, or the embedded development database); elsewhere stdout
// usually feeds a log drain, so nothing is issued and the log says how to
// create a key.
func issueBootstrapKey(ctx context.Context, db *database, e *env, log *slog.Logger) (*firstStart, error) {
	if db.embedded == nil && !e.stdoutTTY {
		if ts, err := db.FindTenants(ctx); err == nil && len(ts) == 0 {
			log.Info("no tenants yet: create an admin API key with `gatehouse apikey create --tenant <your-domain> --role admin`")
		}
		return nil, nil
	}
	var f firstStart
	did, err := db.Bootstrap(ctx, "dev", func(tenantID string) *apikey.Key {
		var k *apikey.Key
		f.secret, k = apikey.New(tenantID, string(tenancy.Admin), identity.AllScopes, "bootstrap", "gatehouse serve (first start)", time.Time{})
		f.keyID = k.ID
		return k
	})
	if err != nil || !did {
		return nil, err
	}
	return &f, nil
}

// undoBootstrap revokes a bootstrap key that was never shown, because the
// server stopped before it served, so the next first start issues a fresh
// one (the secret itself is not kept anywhere to print later).
func undoBootstrap(ctx context.Context, db *database, f *firstStart, log *slog.Logger) {
	if f == nil {
		return
	}
	f.secret = ""
	if err := db.UndoBootstrap(context.WithoutCancel(ctx), f.keyID); err != nil {
		log.Error("the server stopped before serving and its unseen bootstrap key could not be revoked: revoke it with `gatehouse apikey revoke "+f.keyID+"`", "error", err)
		return
	}
	log.Warn("the server stopped before serving: its bootstrap admin key was revoked unseen; the next successful start issues a fresh one", "api_key_id", f.keyID)
}

// awaitServing waits until the server on addr answers /healthz (it is then
// serving), serving ends (its error, done true), or ctx ends.
func awaitServing(ctx context.Context, addr net.Addr, useTLS bool, served <-chan error) (err error, done bool) {
	host, port, _ := net.SplitHostPort(addr.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	scheme, client := "http://", &http.Client{Timeout: time.Second}
	if useTLS {
		// This process's own server on a loopback address: its certificate
		// names the public host, and no credential is sent.
		scheme = "https://"
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	url := scheme + net.JoinHostPort(host, port) + "/healthz"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if res, err := client.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil, false
			}
		}
		select {
		case err := <-served:
			return cmp.Or(err, errors.New("the server stopped before it served")), true
		case <-ctx.Done():
			return ctx.Err(), false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// inspectorVersion is the MCP Inspector the banner's command runs: the one
// the end-to-end tests use (testdata/e2e/package.json; a test keeps them
// equal). Inspector 2.x needs Node.js 22.19 or later.
const inspectorVersion = "2.12.0"

// print shows the bootstrap key with ready-to-paste client configuration
// for the MCP endpoint mcpURL, once.
func (f *firstStart) print(w io.Writer, mcpURL string) {
	fmt.Fprintf(w, `
Gatehouse is running for the first time. An admin API key for tenant "dev"
(shown once; it cannot be shown again, store it now):

    %[2]s

Connect a client:

  Claude Code
    claude mcp add --transport http gatehouse %[1]s --header "Authorization: Bearer %[2]s"

  MCP Inspector (CLI; needs Node.js 22.19 or later)
    npx -y @modelcontextprotocol/inspector@%[3]s --cli %[1]s --transport http --header "Authorization: Bearer %[2]s" --method tools/list

  Cursor (~/.cursor/mcp.json)
    {"mcpServers": {"gatehouse": {"url": "%[1]s", "headers": {"Authorization": "Bearer %[2]s"}}}}

  VS Code (.vscode/mcp.json)
    {"servers": {"gatehouse": {"type": "http", "url": "%[1]s", "headers": {"Authorization": "Bearer %[2]s"}}}}

More keys: gatehouse apikey create --tenant <domain> --role admin|developer|viewer

`, mcpURL, f.secret, inspectorVersion)
	f.secret = ""
}

// logAlerts says at start-up whether anomaly alerts run and how often, and
// warns when some kinds revoke the key behind them
// (GATEHOUSE_ALERT_SUSPEND): an operator must know that keys may be
// revoked without anyone's action (docs/alerts.md).
func logAlerts(log *slog.Logger, a mcp.AlertOptions) {
	if a.Off {
		log.Info("anomaly alerts are off (GATEHOUSE_ALERTS=off)")
		return
	}
	if len(a.Suspend) == 0 {
		log.Info("anomaly alerts are on; they never revoke a key", "interval", a.Interval.String(), "suspend", "none (GATEHOUSE_ALERT_SUSPEND)")
		return
	}
	kinds := make([]string, len(a.Suspend))
	for i, k := range a.Suspend {
		kinds[i] = string(k)
	}
	log.Warn("anomaly alerts are on and revoke the API key behind alerts of these kinds (GATEHOUSE_ALERT_SUSPEND)",
		"interval", a.Interval.String(), "suspend", strings.Join(kinds, ", "))
}
