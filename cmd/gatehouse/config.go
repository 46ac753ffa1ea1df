package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/internal/embeddings"
	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// envVar documents one environment variable. The table is the single source
// for parsing, for `gatehouse config` and for the README's list.
type envVar struct {
	Name    string
	Default string
	Secret  bool
	Help    string
}

var envVars = []envVar{
	{Name: "GATEHOUSE_ADDR", Help: "listen address (host:port); default :$PORT, else :8080"},
	{Name: "PORT", Help: "listen port when GATEHOUSE_ADDR is unset (set by Railway, Render, Fly)"},
	{Name: "DATABASE_URL", Secret: true, Help: "PostgreSQL connection string; unset: embedded PostgreSQL in GATEHOUSE_DATA_DIR"},
	{Name: "GATEHOUSE_PGBOUNCER", Default: "auto", Help: "DATABASE_URL leads to PgBouncer in transaction mode: true, false, or auto (ports 6432 and 6543, hosts named *pgbouncer* or *pooler*)"},
	{Name: "GATEHOUSE_DATA_DIR", Default: "./.gatehouse", Help: "data directory of the embedded PostgreSQL"},
	{Name: "GATEHOUSE_PUBLIC_URL", Help: "canonical external URL, e.g. https://mcp.example.com (set it for a custom domain); default: the platform's own URL (RENDER_EXTERNAL_URL, RAILWAY_PUBLIC_DOMAIN, FLY_APP_NAME), else http://localhost:<port>"},
	{Name: "RENDER_EXTERNAL_URL", Help: "set by Render: the service's URL, the default GATEHOUSE_PUBLIC_URL there"},
	{Name: "RAILWAY_PUBLIC_DOMAIN", Help: "set by Railway: the service's public domain; https://<it> is the default GATEHOUSE_PUBLIC_URL there"},
	{Name: "RENDER_GIT_COMMIT", Help: "set by Render: the commit deployed, the version reported when the binary was built without one"},
	{Name: "RAILWAY_GIT_COMMIT_SHA", Help: "set by Railway: the commit deployed, the version reported when the binary was built without one"},
	{Name: "FLY_APP_NAME", Help: "set by Fly.io: the app's name; https://<it>.fly.dev is the default GATEHOUSE_PUBLIC_URL there"},
	{Name: "GATEHOUSE_LOG_LEVEL", Default: "info", Help: "debug, info, warn or error"},
	{Name: "GATEHOUSE_AUTH_CACHE_TTL", Default: "60s", Help: "how long a validated credential is reused after it was last confirmed (never past its expiry); API keys in use are confirmed again in bulk every third of it"},
	{Name: "GATEHOUSE_TOOL_TIMEOUT", Default: "30s", Help: "time limit of one tool call"},
	{Name: "GATEHOUSE_SHUTDOWN_GRACE", Default: "25s", Help: "how long in-flight requests may finish after SIGTERM"},
	{Name: "GATEHOUSE_READ_HEADER_TIMEOUT", Default: "10s", Help: "time a client has to send a request's headers; slower connections are closed"},
	{Name: "GATEHOUSE_BODY_TIMEOUT", Default: "30s", Help: "time a client has to send a request's body after its headers; slower connections are closed"},
	{Name: "GATEHOUSE_MAX_PENDING_PER_IP", Default: "32", Help: "connections one client address may have still sending their request; more are closed on accept (trusted proxies exempt)"},
	{Name: "GATEHOUSE_TRUSTED_PROXIES", Help: "comma-separated CIDRs whose X-Forwarded-For is believed"},
	{Name: "GATEHOUSE_TLS_CERT", Help: "PEM certificate (chain) to serve TLS 1.3 with, for self-hosting; re-read when it changes. Unset: plain HTTP behind the platform's TLS"},
	{Name: "GATEHOUSE_TLS_KEY", Help: "PEM private key of GATEHOUSE_TLS_CERT"},
	{Name: "GATEHOUSE_CLIENT_CA", Help: "PEM bundle of the CAs whose client certificates are verified (mutual TLS; needs GATEHOUSE_TLS_CERT)"},
	{Name: "GATEHOUSE_CLIENT_CERT_MAP", Help: "YAML file mapping client certificates (URI SAN or subject) to a service's tenant and role, with revoked certificates; re-read when it changes"},
	{Name: "GATEHOUSE_ALLOWED_ORIGINS", Help: "comma-separated origins allowed to call /mcp from a browser"},
	{Name: "GATEHOUSE_TENANT_RATE", Default: "1200/m", Help: "requests a tenant may make (600/m, 10/s, 3600/h or off); per-tenant: gatehouse tenant limits set"},
	{Name: "GATEHOUSE_TENANT_BURST", Default: "200", Help: "requests a tenant may make at once"},
	{Name: "GATEHOUSE_PRINCIPAL_RATE", Default: "600/m", Help: "requests one person or key may make in a tenant"},
	{Name: "GATEHOUSE_PRINCIPAL_BURST", Default: "100", Help: "requests one person or key may make at once"},
	{Name: "GATEHOUSE_AUTH_FAILURE_RATE", Default: "20/m", Help: "failed authentications allowed from one client IP before 429"},
	{Name: "GATEHOUSE_AUTH_FAILURE_BURST", Default: "10", Help: "failed authentications allowed from one client IP at once"},
	{Name: "GATEHOUSE_REGISTRATION_RATE", Default: "30/h", Help: "OAuth client registrations (RFC 7591) allowed from one client IP"},
	{Name: "GATEHOUSE_REGISTRATION_BURST", Default: "10", Help: "OAuth client registrations allowed from one client IP at once"},
	{Name: "GATEHOUSE_DB_TENANT_CONNS", Default: "auto", Help: "tool calls' transactions at once, each on a database connection of its own (the pool has GATEHOUSE_DB_AFFINITY_CONNS more); auto: max(8, 2 × cores): 8 on 2 cores, 32 on 16"},
	{Name: "GATEHOUSE_DB_AFFINITY_CONNS", Default: "auto", Help: "tool-call connections beyond GATEHOUSE_DB_TENANT_CONNS, so that with every admitted call in flight a tenant still finds a free connection among those it used before (tenant affinity keeps each connection's PostgreSQL caches to its share of the tenants); auto: as many as GATEHOUSE_DB_TENANT_CONNS, at most 16, none behind PgBouncer; off: none"},
	{Name: "GATEHOUSE_DB_TENANT_LANES", Default: "auto", Help: "lanes the tool-call connections are split into; each tenant prefers its own lanes and takes any free connection when they are busy, never waiting while one is free; auto: one per two connections; off: one lane (no affinity)"},
	{Name: "GATEHOUSE_DB_CONN_MAX_TENANTS", Default: "600", Help: "different tenants after which a tool-call connection is replaced: PostgreSQL keeps ~90 KB per tenant a connection has served (caches, prepared statements, the buffers it read) and never gives them back, so 600 keep one under ~55 MB; off: never"},
	{Name: "GATEHOUSE_DB_PREPARED_STATEMENTS", Default: "384", Help: "tool statements each tool-call connection keeps prepared for the tenants it serves (~43 KB of PostgreSQL memory each; prepared on their second use there; when full, a statement takes the place of a prepared one only if it has been used more); never behind GATEHOUSE_PGBOUNCER; off: none"},
	{Name: "GATEHOUSE_DB_GENERIC_PLANS", Default: "on", Help: "the tools' statements whose plan does not depend on their arguments (lists of todos and projects, look-ups by id, inserts; not the searches) are planned once per tenant and connection when prepared, not at each of their first five executions; off: every statement as PostgreSQL's plan_cache_mode says"},
	{Name: "GATEHOUSE_DB_CONN_MAX_USES", Default: "off", Help: "transactions after which a tool-call connection is replaced (GATEHOUSE_DB_CONN_MAX_TENANTS is what bounds its memory); off: never"},
	{Name: "GATEHOUSE_DB_CONTROL_CONNS", Default: "auto", Help: "database connections for the control plane (credentials, rate limits, audit, readiness), never taken by tool calls; auto: max(4, cores): 4 on 2 cores, 16 on 16"},
	{Name: "GATEHOUSE_DB_CONTROL_LANES", Default: "auto", Help: "lanes of two control-plane connections each (one for the group commit, one for the chainer and the anomaly detector), beyond GATEHOUSE_DB_CONTROL_CONNS, that write, chain and scan the audit logs in the tenants' schemas; while more tenants are busy than a lane's share (half of GATEHOUSE_DB_CONTROL_CONN_MAX_TENANTS, at most 500: 250 by default) each tenant's audit work keeps to a lane of its own, so that each connection serves a share of the tenants and keeps their PostgreSQL caches warm (the group commit then commits once per lane, in parallel); auto: max(8, cores/4): 8 up to 35 cores, enough for 2,000 busy tenants within GATEHOUSE_DB_CONTROL_CONN_MAX_TENANTS; off: as many, without affinity (every tenant's work on the first lane, the others taking it while that one's connections are busy, as the control pool did; always so behind GATEHOUSE_PGBOUNCER, which chooses the backends)"},
	{Name: "GATEHOUSE_DB_CONTROL_PREPARED_STATEMENTS", Default: "256", Help: "audit statements each control-lane connection keeps prepared for the tenants it serves (a tenant's group-committed INSERT and its chain pass's SELECT and UPDATE, ~40 KB of PostgreSQL memory each; prepared on their second use there, the chain pass's once two passes have chained records of the tenant there, until the bound is reached, nothing evicted); planned at every run they cost PostgreSQL 2–5× as much; 256 keeps a control connection under ~40 MB after one call in each of 12,600 tenants (docs/scaling.md); never behind GATEHOUSE_PGBOUNCER; off: none"},
	{Name: "GATEHOUSE_DB_CONTROL_CONN_MAX_TENANTS", Default: "500", Help: "different tenants after which a control-plane connection is replaced: PostgreSQL keeps 20–40 KB of caches per tenant whose audit log a connection has written or chained, and never gives them back (smaps also counts as the backend's Private_Dirty the shared buffers it alone has read); with 500, the largest control backend held 21–33 MB of Private_Dirty after one call in each of 10,200 tenants (docs/scaling.md); the lanes keep each connection to its share of the busy tenants, half of this; off: never"},
	{Name: "GATEHOUSE_QUERY_CONNS", Default: "auto", Help: "the query tool's own logins open at once, all tenants together; auto: max(4, cores): 4 on 2 cores, 16 on 16"},
	{Name: "GATEHOUSE_TENANT_QUERY_CONNS", Default: "2", Help: "the query tool's logins one tenant may have open at once (the role's own limit over all replicas is 4)"},
	{Name: "GATEHOUSE_TENANT_CONCURRENCY", Default: "auto", Help: "tool calls one tenant may have in progress; auto: half of GATEHOUSE_DB_TENANT_CONNS, at least 2: 4 on 2 cores, 16 on 16"},
	{Name: "GATEHOUSE_PRINCIPAL_CONCURRENCY", Default: "auto", Help: "tool calls one person or key may have in progress; auto: half the tenant's, at least 4 (at most the tenant's): 4 on 2 cores, 8 on 16"},
	{Name: "GATEHOUSE_TENANT_QUEUE", Default: "64", Help: "a tenant's calls that may wait for a free slot (beyond them: 429 at once); also how many of its calls may give their slot back while they wait only for their audit record's commit"},
	{Name: "GATEHOUSE_ADMISSION_WAIT", Default: "2s", Help: "longest a call waits for a free slot before 429; waiting tenants are served fewest-in-progress first"},
	{Name: "GATEHOUSE_AUDIT_INTAKE", Default: "on", Help: "the audit records of calls that change nothing are committed into one table for every tenant (gatehouse.audit_intake), one statement per commit, and moved into each tenant's audit log already chained within seconds; off: each commit writes into every tenant's own audit log, a statement per tenant (before rolling back to a release without the intake: docs/operations.md)"},
	{Name: "GATEHOUSE_AUDIT_COMMIT_WINDOW", Default: "3ms", Help: "the audit records of calls that change nothing are committed together; while calls overlap and arrive fast enough, the commit waits for the calls answered a moment ago to come back, up to this long after the previous commit began: fewer database commits per call for up to this much more latency (PostgreSQL's commit_delay idea; a client calling one call after another waits at most once, just after others' burst); off: commit as soon as the calls in flight have queued their records"},
	{Name: "GATEHOUSE_METRICS_TOKEN", Secret: true, Help: "bearer token /metrics requires, 32+ bytes (openssl rand -base64 32); unset: /metrics is open (keep it off the public network)"},
	{Name: "GATEHOUSE_OPERATORS", Help: "people allowed on the console's operator pages (/console/operator), by provider-qualified subject: google:1234,github:5678"},
	{Name: "GATEHOUSE_API_KEY", Secret: true, Help: "the API key `gatehouse stdio` acts with"},
	{Name: "GATEHOUSE_AUDIT_KEY", Secret: true, Help: "key of the audit hash chain, 32+ bytes (openssl rand -base64 32); comma-separated, newest first, after rotating it (the first chains, all verify); unset: a random key kept in the database (weaker: see README)"},
	{Name: "GATEHOUSE_ALERTS", Default: "on", Help: "anomaly alerts on access patterns (docs/alerts.md): on or off"},
	{Name: "GATEHOUSE_ALERT_INTERVAL", Default: "60s", Help: "time between the anomaly detector's passes over new audit records (one replica at a time runs them)"},
	{Name: "GATEHOUSE_ALERT_LEARNING", Default: "168h", Help: "history a principal needs before new-network and off-hours alerts fire for it"},
	{Name: "GATEHOUSE_ALERT_NEW_NETWORK", Default: "keys", Help: "who gets new-network alerts (an IPv4 /24 or IPv6 /48 never used before): keys (API keys and client certificates) or all (people signing in too)"},
	{Name: "GATEHOUSE_ALERT_DENIALS", Default: "20/10m", Help: "denials plus failed authentications naming a key, per principal, that raise a denial_burst alert: count/window"},
	{Name: "GATEHOUSE_ALERT_VOLUME_FACTOR", Default: "10", Help: "a volume alert fires when a principal's calls in a clock hour exceed this many times its baseline (an average over its active hours)..."},
	{Name: "GATEHOUSE_ALERT_VOLUME_FLOOR", Default: "300", Help: "...and this many calls"},
	{Name: "GATEHOUSE_ALERT_ADMIN_HISTORY", Default: "10", Help: "admin actions a principal needs before an admin action outside its usual hours raises an alert"},
	{Name: "GATEHOUSE_ALERT_COOLDOWN", Default: "1h", Help: "at most one alert of each kind per principal in this time"},
	{Name: "GATEHOUSE_ALERT_SUSPEND", Help: "alert kinds that revoke the API key that caused them: new_network, volume, off_hours_admin (comma separated); denial_burst cannot (anyone can name a key id)"},
	{Name: "GATEHOUSE_POLICY_FILE", Help: "YAML file overriding the role and scope each tool or prompt needs (tools: {name: {role, scope}}, prompts: {name: {role, scope}})"},
	{Name: "GATEHOUSE_CONFIG_FILE", Help: "YAML file with settings beyond the environment (more OIDC issuers: oidc_issuers)"},
	{Name: "GATEHOUSE_ALLOW_INSECURE_ISSUERS", Default: "false", Help: "accept plain-http issuer URLs (local identity providers and tests only)"},
	{Name: "GATEHOUSE_DEFAULT_SCOPES", Default: "mcp:read mcp:write", Help: "scopes given to tokens that carry no Gatehouse scope (space or comma separated)"},
	{Name: "GATEHOUSE_SIGNING_KEY", Secret: true, Help: "secret, 32+ bytes (openssl rand -base64 32; 16-byte ones from earlier releases work, with a warning), encrypting the access-token signing keys in the database; comma-separated, newest first, while rotating; unset: a secret kept in the database"},
	{Name: "GATEHOUSE_TOKEN_TTL", Default: "1h", Help: "lifetime of the access tokens Gatehouse issues (at most 1h)"},
	{Name: "GATEHOUSE_REFRESH_TTL", Default: "720h", Help: "lifetime of a refresh token (each use issues a new one)"},
	{Name: "GATEHOUSE_DEV", Default: "false", Help: "developer mode: client metadata documents on private addresses, `gatehouse token mint`; never in production"},
	{Name: "GATEHOUSE_GOOGLE_CLIENT_ID", Help: "Google OAuth client id: enables Google ID tokens and access tokens issued to this client"},
	{Name: "GATEHOUSE_GOOGLE_CLIENT_SECRET", Secret: true, Help: "Google OAuth client secret: lets people sign in with Google from MCP clients"},
	{Name: "GATEHOUSE_GOOGLE_ISSUER", Default: "https://accounts.google.com", Help: "Google's issuer (override for tests)"},
	{Name: "GATEHOUSE_GOOGLE_TOKENINFO_URL", Default: "https://oauth2.googleapis.com/tokeninfo", Help: "Google's tokeninfo endpoint (override for tests)"},
	{Name: "GATEHOUSE_GOOGLE_USERINFO_URL", Default: "https://openidconnect.googleapis.com/v1/userinfo", Help: "Google's userinfo endpoint (override for tests)"},
	{Name: "GATEHOUSE_AUTH0_DOMAIN", Help: "Auth0 tenant domain, such as example.eu.auth0.com: enables Auth0 (with GATEHOUSE_AUTH0_AUDIENCE)"},
	{Name: "GATEHOUSE_AUTH0_AUDIENCE", Help: "the Auth0 API identifier access tokens must be issued for"},
	{Name: "GATEHOUSE_AUTH0_EMAIL_CLAIM", Help: "namespaced claim carrying the email (its flag: <claim>_verified); unset: Auth0's /userinfo, cached"},
	{Name: "GATEHOUSE_AUTH0_ISSUER", Help: "Auth0 issuer; default https://<domain>/"},
	{Name: "GATEHOUSE_AUTH0_CLIENT_ID", Help: "Auth0 application (Regular Web Application) client id: lets people sign in with Auth0 (with the secret)"},
	{Name: "GATEHOUSE_AUTH0_CLIENT_SECRET", Secret: true, Help: "that Auth0 application's client secret"},
	{Name: "GATEHOUSE_GITHUB_CLIENT_ID", Help: "GitHub OAuth app client id: enables GitHub user tokens issued to this app (with the secret)"},
	{Name: "GATEHOUSE_GITHUB_CLIENT_SECRET", Secret: true, Help: "GitHub OAuth app client secret (proves tokens were issued to this app)"},
	{Name: "GATEHOUSE_GITHUB_API_URL", Default: "https://api.github.com", Help: "GitHub REST API (GitHub Enterprise: https://HOST/api/v3)"},
	{Name: "GATEHOUSE_GITHUB_WEB_URL", Default: "https://github.com", Help: "GitHub web host people sign in at (GitHub Enterprise: https://HOST)"},
	{Name: "GATEHOUSE_OIDC_ISSUER", Help: "an OpenID Connect issuer (Keycloak, Okta, Entra, Dex): enables it (with GATEHOUSE_OIDC_AUDIENCE)"},
	{Name: "GATEHOUSE_OIDC_AUDIENCE", Help: "audiences accepted from that issuer (comma separated)"},
	{Name: "GATEHOUSE_OIDC_NAME", Default: "oidc", Help: "short name of that issuer, used in subjects (<name>:<sub>)"},
	{Name: "GATEHOUSE_OIDC_CLIENT_ID", Help: "client id at that issuer: lets people sign in with it from MCP clients (with the secret)"},
	{Name: "GATEHOUSE_OIDC_CLIENT_SECRET", Secret: true, Help: "that client's secret"},
	{Name: "GATEHOUSE_OIDC_LABEL", Help: "that issuer's name on the sign-in page; default GATEHOUSE_OIDC_NAME"},
	{Name: "GATEHOUSE_TENANT_SIGNUP", Default: "open", Help: "which new tenants may be created on first sign-in: open, allowlist or closed"},
	{Name: "GATEHOUSE_TENANT_ALLOWLIST", Help: "tenants that may sign up under allowlist (comma separated; 'personal' admits personal tenants)"},
	{Name: "GATEHOUSE_TENANT_ALIASES", Help: "email domains mapped to a tenant, such as acme.io=acme.com (comma separated)"},
	{Name: "GATEHOUSE_CONSUMER_DOMAINS", Help: "replaces the built-in list of consumer mail domains (whose users get personal tenants); gmx.* style wildcards"},
	{Name: "GATEHOUSE_DEFAULT_ROLE", Default: "developer", Help: "role of an organisation's members after its first (who is admin)"},
	{Name: "GATEHOUSE_EMBEDDINGS_URL", Help: "base URL of an OpenAI-compatible embeddings API (POST <url>/embeddings): https://api.openai.com/v1, Ollama http://localhost:11434/v1, Text Embeddings Inference, vLLM; enables semantic search, which each tenant's admin then turns on (set_semantic_search). No credentials, query or fragment in it (it is logged and shown to admins; the key goes in GATEHOUSE_EMBEDDINGS_API_KEY). Unset: semantic search is off"},
	{Name: "GATEHOUSE_EMBEDDINGS_MODEL", Help: "the embedding model, such as text-embedding-3-small or nomic-embed-text (required with GATEHOUSE_EMBEDDINGS_URL); changing it (or the dimensions) embeds every document again"},
	{Name: "GATEHOUSE_EMBEDDINGS_DIMENSIONS", Help: "vector size to ask for (sent as dimensions; text-embedding-3 models can shorten theirs); needed for pgvector's HNSW index (at most 2000). Unset: the model's own size, and exact ranking"},
	{Name: "GATEHOUSE_EMBEDDINGS_API_KEY", Secret: true, Help: "API key sent to the embeddings API (Authorization: Bearer); unset: none (local servers)"},
	{Name: "GOGC", Default: "400", Help: "Go garbage collector target (Go's own variable); Gatehouse's default is chosen by benchmark"},
	{Name: "GOMEMLIMIT", Help: "Go soft memory limit (Go's own variable); default: 112 MiB, or twice the live heap and 16 MiB when that is more, followed every second, at most 90% of the container's memory limit, if any"},
}

// Config is the parsed environment.
type Config struct {
	Addr      string
	PublicURL string
	// PublicURLFrom names the variable PublicURL came from; empty: the
	// listen address (a local default).
	PublicURLFrom string
	AddrFrom      string // GATEHOUSE_ADDR, PORT, or "" (the default :8080)
	DatabaseURL   string
	DataDir       string
	LogLevel      slog.Level
	AuthCacheTTL  time.Duration
	ToolTimeout   time.Duration
	// AuditCommitWindow is mcp.Options.AuditCommitWindow (-1: off).
	AuditCommitWindow time.Duration
	ShutdownGrace     time.Duration
	// Slow clients (mcp.Options).
	ReadHeaderTimeout time.Duration
	BodyTimeout       time.Duration
	MaxPendingPerIP   int
	TrustedProxies    []*net.IPNet
	AllowedOrigins    []string
	DefaultScopes     []string
	Providers         *providers
	Policy            *tenancy.Policy
	ToolPolicy        mcp.ToolPolicy
	Limits            tenancy.Limits
	SigningKeys       [][]byte // GATEHOUSE_SIGNING_KEY, newest first; nil: a database secret
	AuditKeys         [][]byte // GATEHOUSE_AUDIT_KEY, newest first; nil: a database secret
	MetricsToken      string   // GATEHOUSE_METRICS_TOKEN; empty: /metrics is open
	Operators         []string // GATEHOUSE_OPERATORS: provider-qualified subjects
	// Warnings are problems that do not stop the server; serve logs them.
	Warnings      []string
	TokenTTL      time.Duration
	RefreshTTL    time.Duration
	Dev           bool
	PgBouncer     string // "auto", "true" or "false"
	TLSCert       string // files; see tls.go
	TLSKey        string
	ClientCA      string
	ClientCertMap string
	// Embeddings configures semantic search's provider; nil: off.
	Embeddings *embeddings.Config
	// notes collects what /readyz reports beyond readiness (see readyNotes).
	notes     *readyNotes
	DB        store.Options // connection bounds (see bulkheads.go)
	Admission mcp.Admission
	Alerts    mcp.AlertOptions // anomaly alerts (see alerts.go)
}

// loadConfig reads the environment and reports every problem at once.
func loadConfig(getenv func(string) string) (*Config, error) {
	get := func(name string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		for _, e := range envVars {
			if e.Name == name {
				return e.Default
			}
		}
		return ""
	}
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
	c := &Config{DatabaseURL: get("DATABASE_URL"), DataDir: get("GATEHOUSE_DATA_DIR"), notes: &readyNotes{}}

	c.Addr = get("GATEHOUSE_ADDR")
	if c.Addr != "" {
		c.AddrFrom = "GATEHOUSE_ADDR"
	} else {
		if port := get("PORT"); port != "" {
			c.AddrFrom = "PORT"
			if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
				bad("PORT", "%q is not a port number", port)
			}
			c.Addr = ":" + port
		} else {
			c.Addr = ":8080"
		}
	}
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		bad("GATEHOUSE_ADDR", "%q is not host:port (for example :8080 or 127.0.0.1:8080)", c.Addr)
	}

	c.TLSCert, c.TLSKey = get("GATEHOUSE_TLS_CERT"), get("GATEHOUSE_TLS_KEY")
	c.ClientCA, c.ClientCertMap = get("GATEHOUSE_CLIENT_CA"), get("GATEHOUSE_CLIENT_CERT_MAP")
	errs = append(errs, checkTLSConfig(c)...)

	c.PublicURL, c.PublicURLFrom = publicURL(get)
	if c.PublicURL == "" && err == nil {
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "localhost"
		}
		scheme := "http://"
		if c.TLSCert != "" {
			scheme = "https://"
		}
		c.PublicURL = scheme + net.JoinHostPort(host, port)
	} else if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		bad(c.PublicURLFrom, "%q must be an absolute http(s) URL with no path, such as https://mcp.example.com", c.PublicURL)
	}

	if err := c.LogLevel.UnmarshalText([]byte(get("GATEHOUSE_LOG_LEVEL"))); err != nil {
		bad("GATEHOUSE_LOG_LEVEL", "%q is not debug, info, warn or error", get("GATEHOUSE_LOG_LEVEL"))
	}
	boolean := func(name string) bool {
		switch v := strings.ToLower(get(name)); v {
		case "true", "1", "yes":
			return true
		case "false", "0", "no", "":
			return false
		default:
			bad(name, "%q is not true or false", v)
			return false
		}
	}
	duration := func(name string, dst *time.Duration) {
		d, err := time.ParseDuration(get(name))
		if err != nil || d <= 0 {
			bad(name, "%q is not a positive duration such as 30s or 5m", get(name))
		}
		*dst = d
	}
	duration("GATEHOUSE_AUTH_CACHE_TTL", &c.AuthCacheTTL)
	duration("GATEHOUSE_TOOL_TIMEOUT", &c.ToolTimeout)
	duration("GATEHOUSE_SHUTDOWN_GRACE", &c.ShutdownGrace)
	duration("GATEHOUSE_READ_HEADER_TIMEOUT", &c.ReadHeaderTimeout)
	duration("GATEHOUSE_BODY_TIMEOUT", &c.BodyTimeout)
	if v := strings.ToLower(strings.TrimSpace(get("GATEHOUSE_AUDIT_COMMIT_WINDOW"))); v == "off" {
		c.AuditCommitWindow = -1
	} else if d, err := time.ParseDuration(v); err == nil && d == 0 && !strings.ContainsAny(v, "123456789") {
		c.AuditCommitWindow = -1
	} else if err != nil || d <= 0 || d > 100*time.Millisecond {
		bad("GATEHOUSE_AUDIT_COMMIT_WINDOW", "%q is not off or a duration up to 100ms such as 3ms", get("GATEHOUSE_AUDIT_COMMIT_WINDOW"))
	} else {
		c.AuditCommitWindow = d
	}
	if n, err := strconv.Atoi(get("GATEHOUSE_MAX_PENDING_PER_IP")); err != nil || n < 1 {
		bad("GATEHOUSE_MAX_PENDING_PER_IP", "%q is not a positive number", get("GATEHOUSE_MAX_PENDING_PER_IP"))
	} else {
		c.MaxPendingPerIP = n
	}
	duration("GATEHOUSE_TOKEN_TTL", &c.TokenTTL)
	if c.TokenTTL > time.Hour {
		bad("GATEHOUSE_TOKEN_TTL", "%s is longer than 1h; access tokens are short-lived, refresh tokens keep people signed in", c.TokenTTL)
	}
	duration("GATEHOUSE_REFRESH_TTL", &c.RefreshTTL)
	c.SigningKeys, c.AuditKeys = checkSecrets(getenv, bad, &c.Warnings)
	c.MetricsToken = strings.TrimSpace(getenv("GATEHOUSE_METRICS_TOKEN"))
	c.Dev = boolean("GATEHOUSE_DEV")
	c.DB, c.Admission = loadBulkheads(get, bad)
	c.Alerts = loadAlerts(get, bad)
	switch c.PgBouncer = strings.ToLower(get("GATEHOUSE_PGBOUNCER")); c.PgBouncer {
	case "auto", "true", "false":
	default:
		bad("GATEHOUSE_PGBOUNCER", "%q is not auto, true or false", c.PgBouncer)
	}

	for _, entry := range splitList(get("GATEHOUSE_TRUSTED_PROXIES")) {
		s := entry
		if !strings.Contains(s, "/") {
			if ip := net.ParseIP(s); ip != nil && ip.To4() != nil {
				s += "/32"
			} else {
				s += "/128"
			}
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			bad("GATEHOUSE_TRUSTED_PROXIES", "%q is not an IP address or CIDR", entry)
			continue
		}
		c.TrustedProxies = append(c.TrustedProxies, n)
	}
	for _, op := range splitList(get("GATEHOUSE_OPERATORS")) {
		if p, id, ok := strings.Cut(op, ":"); !ok || p == "" || id == "" || strings.ContainsAny(op, " \t") {
			bad("GATEHOUSE_OPERATORS", "%q is not a provider-qualified subject such as github:5678", op)
			continue
		}
		c.Operators = append(c.Operators, op)
	}
	for _, o := range splitList(get("GATEHOUSE_ALLOWED_ORIGINS")) {
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" {
			bad("GATEHOUSE_ALLOWED_ORIGINS", "%q is not an origin such as https://app.example.com", o)
			continue
		}
		c.AllowedOrigins = append(c.AllowedOrigins, o)
	}
	for _, sc := range strings.FieldsFunc(get("GATEHOUSE_DEFAULT_SCOPES"), func(r rune) bool { return r == ' ' || r == ',' }) {
		if !slices.Contains(identity.AllScopes, sc) {
			bad("GATEHOUSE_DEFAULT_SCOPES", "unknown scope %q (want %s)", sc, strings.Join(identity.AllScopes, ", "))
		}
		c.DefaultScopes = append(c.DefaultScopes, sc)
	}
	insecure := boolean("GATEHOUSE_ALLOW_INSECURE_ISSUERS")
	fc, err := readConfigFile(get("GATEHOUSE_CONFIG_FILE"))
	if err != nil {
		bad("GATEHOUSE_CONFIG_FILE", "%v", err)
		fc = &fileConfig{}
	}
	var perrs []error
	c.Providers, perrs = loadProviders(get, insecure, fc)
	errs = append(errs, perrs...)
	if ropts, err := c.Providers.resolverOptions(nil, 0, nil); err != nil {
		errs = append(errs, err) // two providers claiming one issuer
	} else if _, taken := ropts.Issuers[c.PublicURL]; taken {
		bad("GATEHOUSE_PUBLIC_URL", "an identity provider's issuer is %s, which is Gatehouse's own", c.PublicURL)
	}
	c.Policy, perrs = loadPolicy(get)
	errs = append(errs, perrs...)
	rate := func(prefix string) tenancy.Rate {
		burst, err := strconv.Atoi(get(prefix + "_BURST"))
		if err != nil || burst < 1 {
			bad(prefix+"_BURST", "%q is not a positive number", get(prefix+"_BURST"))
		}
		r, err := tenancy.ParseRate(get(prefix+"_RATE"), max(burst, 1))
		if err != nil {
			bad(prefix+"_RATE", "%v", err)
		}
		return r
	}
	c.Limits = tenancy.Limits{
		Tenant:       rate("GATEHOUSE_TENANT"),
		Principal:    rate("GATEHOUSE_PRINCIPAL"),
		AuthFailure:  rate("GATEHOUSE_AUTH_FAILURE"),
		Registration: rate("GATEHOUSE_REGISTRATION"),
	}
	c.Embeddings = loadEmbeddings(get, bad)
	if path := get("GATEHOUSE_POLICY_FILE"); path != "" {
		if f, err := os.Open(path); err != nil {
			bad("GATEHOUSE_POLICY_FILE", "%v", err)
		} else {
			c.ToolPolicy, err = mcp.LoadToolPolicy(f)
			f.Close()
			if err != nil {
				bad("GATEHOUSE_POLICY_FILE", "%s: %v", path, err)
			}
		}
	}
	return c, errors.Join(errs...)
}

// loadEmbeddings reads the embeddings provider's settings: nil when
// GATEHOUSE_EMBEDDINGS_URL is unset.
func loadEmbeddings(get func(string) string, bad func(name, format string, args ...any)) *embeddings.Config {
	u := get("GATEHOUSE_EMBEDDINGS_URL")
	if u == "" {
		for _, name := range []string{"GATEHOUSE_EMBEDDINGS_MODEL", "GATEHOUSE_EMBEDDINGS_DIMENSIONS", "GATEHOUSE_EMBEDDINGS_API_KEY"} {
			if get(name) != "" {
				bad(name, "is set but GATEHOUSE_EMBEDDINGS_URL is not: set the URL too, or unset it")
			}
		}
		return nil
	}
	cfg := &embeddings.Config{URL: u, Model: get("GATEHOUSE_EMBEDDINGS_MODEL"), APIKey: get("GATEHOUSE_EMBEDDINGS_API_KEY")}
	// The URL is logged at start-up and shown to tenants' admins
	// (set_semantic_search), so it must hold no secret: credentials, a
	// query (where some APIs take a key) and a fragment (which would cut
	// "/embeddings" off the path) are refused, and messages repeat the URL
	// without them.
	if pu, err := url.Parse(u); err != nil {
		bad("GATEHOUSE_EMBEDDINGS_URL", "is not a URL such as https://api.openai.com/v1")
	} else {
		shown := (&url.URL{Scheme: pu.Scheme, Host: pu.Host, Path: pu.Path}).String()
		switch {
		case (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "":
			bad("GATEHOUSE_EMBEDDINGS_URL", "%q is not an http(s) URL such as https://api.openai.com/v1", shown)
		case pu.User != nil:
			bad("GATEHOUSE_EMBEDDINGS_URL", "%q carries a user name or password (user:password@), which would be logged and shown to admins: put the provider's key in GATEHOUSE_EMBEDDINGS_API_KEY (sent as Authorization: Bearer, never shown)", shown)
		case pu.RawQuery != "" || pu.ForceQuery:
			bad("GATEHOUSE_EMBEDDINGS_URL", "%q has a query (?…): give the API's base URL alone, such as https://api.openai.com/v1 (a key goes in GATEHOUSE_EMBEDDINGS_API_KEY)", shown)
		case pu.Fragment != "" || strings.Contains(u, "#"):
			bad("GATEHOUSE_EMBEDDINGS_URL", "%q has a fragment (#…): give the API's base URL alone, such as https://api.openai.com/v1", shown)
		}
	}
	if cfg.Model == "" {
		bad("GATEHOUSE_EMBEDDINGS_MODEL", "is required with GATEHOUSE_EMBEDDINGS_URL (the model to embed with)")
	}
	if d := get("GATEHOUSE_EMBEDDINGS_DIMENSIONS"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 || n > 16000 {
			bad("GATEHOUSE_EMBEDDINGS_DIMENSIONS", "%q is not a vector size from 1 to 16000", d)
		}
		cfg.Dimensions = n
	}
	return cfg
}

// minSecretBytes is the least length, as given, of the secrets the operator
// generates (GATEHOUSE_AUDIT_KEY, GATEHOUSE_SIGNING_KEY, GATEHOUSE_METRICS_TOKEN): 32 bytes, what
// `openssl rand -base64 32` prints 44 of. Third-party secrets (provider
// client secrets) are not judged.
const minSecretBytes = 32

// checkSecrets applies one rule to the secrets the operator generates: at
// least minSecretBytes as given. Signing secrets of 16 to 31 bytes, which
// earlier releases accepted, keep working with a warning and the rotation
// steps; an audit key shorter than 32 may stay as a retired (verify-only)
// key after the first.
func checkSecrets(getenv func(string) string, bad func(name, format string, args ...any), warnings *[]string) (signing, audit [][]byte) {
	const howTo = "openssl rand -base64 32"
	for i, k := range splitList(getenv("GATEHOUSE_SIGNING_KEY")) {
		switch {
		case len(k) >= minSecretBytes:
		case len(k) < 16:
			bad("GATEHOUSE_SIGNING_KEY", "secret %d is %d bytes; use %d or more (%s)", i+1, len(k), minSecretBytes, howTo)
		case i == 0:
			*warnings = append(*warnings, fmt.Sprintf("GATEHOUSE_SIGNING_KEY is %d bytes; %d or more are wanted. It keeps working; to replace it, "+
				"deploy GATEHOUSE_SIGNING_KEY=<new>,<old> with <new> from `%s` (replicas re-encrypt the signing keys with <new>, tokens stay valid), then <new> alone", len(k), minSecretBytes, howTo))
		default:
			*warnings = append(*warnings, fmt.Sprintf("GATEHOUSE_SIGNING_KEY: the older secret %d is %d bytes; drop it once every replica runs with the new one", i+1, len(k)))
		}
		signing = append(signing, []byte(k))
	}
	if t := strings.TrimSpace(getenv("GATEHOUSE_METRICS_TOKEN")); t != "" && len(t) < minSecretBytes {
		bad("GATEHOUSE_METRICS_TOKEN", "is %d bytes; use %d or more (%s)", len(t), minSecretBytes, howTo)
	}
	for i, k := range splitList(getenv("GATEHOUSE_AUDIT_KEY")) {
		switch {
		case len(k) >= minSecretBytes:
		case i == 0:
			bad("GATEHOUSE_AUDIT_KEY", "the key that chains (the first) is %d bytes; use %d or more (%s). To keep verifying records chained with a shorter key, "+
				"put it second: GATEHOUSE_AUDIT_KEY=<new>,<old>", len(k), minSecretBytes, howTo)
		default:
			*warnings = append(*warnings, fmt.Sprintf("GATEHOUSE_AUDIT_KEY: retired key %d is %d bytes; it only verifies the records chained before the rotation", i+1, len(k)))
		}
		audit = append(audit, []byte(k))
	}
	return signing, audit
}

// publicURL is GATEHOUSE_PUBLIC_URL, else the URL the platform gives the
// service (Render, Railway, Fly.io each set their own variable), and the
// variable it came from; "" when none is set.
func publicURL(get func(string) string) (u, from string) {
	switch {
	case get("GATEHOUSE_PUBLIC_URL") != "":
		return strings.TrimSuffix(get("GATEHOUSE_PUBLIC_URL"), "/"), "GATEHOUSE_PUBLIC_URL"
	case get("RENDER_EXTERNAL_URL") != "":
		return strings.TrimSuffix(get("RENDER_EXTERNAL_URL"), "/"), "RENDER_EXTERNAL_URL"
	case get("RAILWAY_PUBLIC_DOMAIN") != "":
		return "https://" + strings.TrimSuffix(get("RAILWAY_PUBLIC_DOMAIN"), "/"), "RAILWAY_PUBLIC_DOMAIN"
	case get("FLY_APP_NAME") != "":
		return "https://" + get("FLY_APP_NAME") + ".fly.dev", "FLY_APP_NAME"
	}
	return "", ""
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
