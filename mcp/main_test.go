package mcp_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// gatehouse is a Gatehouse server on a fresh database, served over HTTP the
// way `gatehouse serve` wires it.
type gatehouse struct {
	db    *store.DB
	srv   *mcp.Server
	url   string // of /mcp
	ts    *httptest.Server
	as    *authserver.Server // when setup.oauth
	logs  *lockedBuffer      // the server log (also in the test log)
	audit *lockedBuffer      // the audit stream (stdout in serve)
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer = mcp.LockedBuffer

var testAuditKey = store.NewAuditKey([]byte("test audit key"))

// setup adjusts a test server's identity routes and tenancy policy.
type setup struct {
	resolver   identity.ResolverOptions
	policy     *tenancy.Policy
	toolPolicy mcp.ToolPolicy
	limits     *tenancy.Limits
	admission  *mcp.Admission
	db         *store.DB // instead of a fresh database of the shared test cluster
	// productionLog logs as serve does (JSON, info), to nowhere: for
	// benchmarks, which the test log's debug lines would dominate.
	productionLog bool
	// oauth turns on the authorization server, with these upstreams.
	oauth     bool
	upstreams []*authserver.Upstream
	// asConfig adjusts the authorization server's configuration.
	asConfig func(*authserver.Config)
	// origins may call /mcp from a browser (GATEHOUSE_ALLOWED_ORIGINS).
	origins []string
	// options adjusts the server's options.
	options func(*mcp.Options)
}

func newGatehouse(t testing.TB, mods ...func(*setup)) *gatehouse {
	t.Helper()
	logs, audit := &lockedBuffer{}, &lockedBuffer{}
	su := &setup{policy: tenancy.DefaultPolicy()}
	for _, m := range mods {
		m(su)
	}
	testLog := storetest.Logger(t)
	log := slog.New(teeHandler{testLog.Handler(), slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})})
	if su.productionLog {
		log = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	db := su.db
	if db == nil {
		db = storetest.MustOpenDB(t)
	}
	su.resolver.Prefixes = append([]identity.PrefixRoute{{Prefix: apikey.Prefix, Verifier: apikey.NewVerifier(db, log)}}, su.resolver.Prefixes...)
	tenants := tenancy.NewService(db, tenancy.ServiceOptions{Policy: su.policy})
	t.Cleanup(tenants.Close)
	g := &gatehouse{db: db, logs: logs, audit: audit}
	g.ts = httptest.NewUnstartedServer(nil)
	g.ts.Start()
	t.Cleanup(g.ts.Close)
	var limiter *tenancy.Limiter
	if su.limits != nil {
		limiter = tenancy.NewLimiter(db, *su.limits)
		t.Cleanup(limiter.Close)
	}
	if su.oauth {
		g.as = newAuthServer(t, db, tenants, limiter, log, g.ts.URL, su)
		if su.resolver.Issuers == nil {
			su.resolver.Issuers = map[string]identity.Verifier{}
		}
		su.resolver.Issuers[g.ts.URL] = g.as.Verifier()
	}
	resolver := identity.NewResolver(su.resolver)
	t.Cleanup(resolver.Close)
	opts := mcp.Options{DB: db, Resolver: resolver, Tenancy: tenants, Limiter: limiter, PublicURL: g.ts.URL, AuthServer: g.as,
		Logger: log, Version: "test", ToolPolicy: su.toolPolicy, Admission: su.admission, AllowedOrigins: su.origins, AuditKey: testAuditKey, AuditLog: slog.New(slog.NewJSONHandler(audit, nil))}
	if su.options != nil {
		su.options(&opts)
	}
	srv, err := mcp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	g.ts.Config.Handler = srv.Handler()
	g.srv, g.url = srv, g.ts.URL+"/mcp"
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.FollowInvalidations(ctx)
	return g
}

// teeHandler sends records to two handlers.
type teeHandler struct{ a, b slog.Handler }

func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.a.Enabled(ctx, l) || h.b.Enabled(ctx, l)
}

func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	_ = h.a.Handle(ctx, r.Clone())
	return h.b.Handle(ctx, r)
}

func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{h.a.WithAttrs(as), h.b.WithAttrs(as)}
}

func (h teeHandler) WithGroup(n string) slog.Handler {
	return teeHandler{h.a.WithGroup(n), h.b.WithGroup(n)}
}

// key creates an API key in tenant (provisioned if new) and returns its secret.
func (g *gatehouse) key(t testing.TB, tenant string, role tenancy.Role, scopes ...string) string {
	t.Helper()
	secret, _ := g.keyWith(t, tenant, role, time.Time{}, scopes...)
	return secret
}

func (g *gatehouse) keyWith(t testing.TB, tenant string, role tenancy.Role, expires time.Time, scopes ...string) (string, *apikey.Key) {
	t.Helper()
	ctx := context.Background()
	tn, _, err := g.db.EnsureTenant(ctx, tenant, tenancy.Organization)
	if err != nil {
		t.Fatal(err)
	}
	if len(scopes) == 0 {
		scopes = identity.AllScopes
	}
	secret, k := apikey.New(tn.ID, string(role), scopes, "test", "test", expires)
	if err := g.db.CreateAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	return secret, k
}

// bearer adds an Authorization header to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// connect opens an MCP session with the official go-sdk client.
func (g *gatehouse) connect(t *testing.T, token, protocolVersion string) *sdk.ClientSession {
	t.Helper()
	client := sdk.NewClient(&sdk.Implementation{Name: "gatehouse-test", Version: "1"}, nil)
	cs, err := client.Connect(context.Background(), &sdk.StreamableClientTransport{
		Endpoint:   g.url,
		HTTPClient: &http.Client{Transport: bearer{token, http.DefaultTransport}},
	}, &sdk.ClientSessionOptions{ProtocolVersion: protocolVersion})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// call calls a tool and checks its structured result against the output
// schema the server advertised, decoding it into out (if not nil).
func call(t *testing.T, cs *sdk.ClientSession, name string, args map[string]any, out any) *sdk.CallToolResult {
	t.Helper()
	ctx := context.Background()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if res.IsError {
		return res
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range tools.Tools {
		if tool.Name != name {
			continue
		}
		b, _ := json.Marshal(tool.OutputSchema)
		var s jsonschema.Schema
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		rs, err := s.Resolve(nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ = json.Marshal(res.StructuredContent)
		var v any
		_ = json.Unmarshal(b, &v)
		if err := rs.Validate(v); err != nil {
			t.Errorf("%s: structured result %s does not match its output schema: %v", name, b, err)
		}
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatal(err)
			}
		}
	}
	return res
}

func readBody(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func text(res *sdk.CallToolResult) string {
	var s string
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			s += tc.Text
		}
	}
	return s
}
