package mcp_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestWithoutRoleCreation: on a database whose account may not create roles,
// tenants are isolated by schema alone, every tool but query works, query is
// not offered, and /readyz says so.
func TestWithoutRoleCreation(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, storetest.RestrictedConnString(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.MigrateControl(ctx); err != nil {
		t.Fatalf("control migrations as a role that cannot create roles: %v", err)
	}
	if db.CanCreateRoles(ctx) {
		t.Fatal("the restricted role can create roles")
	}
	resolver := identity.NewResolver(identity.ResolverOptions{Prefixes: []identity.PrefixRoute{{Prefix: apikey.Prefix, Verifier: apikey.NewVerifier(db, nil)}}})
	defer resolver.Close()
	tenants := tenancy.NewService(db, tenancy.ServiceOptions{})
	defer tenants.Close()
	srv, err := mcp.New(mcp.Options{DB: db, Resolver: resolver, Tenancy: tenants, PublicURL: "http://example.test", AuditKey: testAuditKey})
	if err != nil {
		t.Fatal(err)
	}
	g := &gatehouse{db: db, srv: srv}
	g.ts = httptest.NewServer(srv.Handler())
	defer g.ts.Close()
	g.url = g.ts.URL + "/mcp"

	tn, _, err := db.EnsureTenant(ctx, "acme.com", tenancy.Organization)
	if err != nil || tn.DBRole != "" || tn.QueryRole != "" {
		t.Fatalf("tenant without roles: %+v, %v", tn, err)
	}
	cs := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	if res := call(t, cs, "add_todo", map[string]any{"title": "works without roles"}, nil); res.IsError {
		t.Errorf("add_todo: %s", text(res))
	}
	tools, _ := cs.ListTools(ctx, nil)
	if slices.ContainsFunc(tools.Tools, func(x *sdk.Tool) bool { return x.Name == "query" }) {
		t.Error("query is offered without a way to confine it")
	}
	res, err := http.Get(g.ts.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, res); res.StatusCode != 200 || !strings.Contains(body, "schema only") || !strings.Contains(body, "query_tool") {
		t.Errorf("/readyz: %d %s", res.StatusCode, body)
	}
}
