package console_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/embeddings"
	"github.com/gatehouse-mcp/gatehouse/internal/embeddings/embeddingstest"
	"github.com/gatehouse-mcp/gatehouse/mcp"
)

// TestSemanticSearchToggle: an admin turns semantic search on and off from
// the console through set_semantic_search (audited, via console); without a
// provider the page says it is not configured; a developer cannot.
func TestSemanticSearchToggle(t *testing.T) {
	fake := embeddingstest.New(t)
	client, err := embeddings.New(embeddings.Config{URL: fake.BaseURL(), Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	s := newSite(t, siteOpts{mcpMod: func(o *mcp.Options) { o.Embeddings = client }})
	ada := s.signedIn("ada-1", "ada@acme.example")
	p := ada.get("/console/admin/search")
	if p.status != http.StatusOK || !strings.Contains(p.body, "Off for acme.example") {
		t.Fatalf("search page: %d\n%s", p.status, p.body)
	}
	form := p.form(t, "/console/admin/search")
	form.Set("enabled", "true")
	if p = ada.post("/console/admin/search", form); p.status != http.StatusOK || !strings.Contains(p.body, "On for acme.example") || !strings.Contains(p.body, "Turned on by <code>corp:ada-1</code>") {
		t.Fatalf("turning it on: %d\n%s", p.status, p.body)
	}
	form = p.form(t, "/console/admin/search")
	form.Set("enabled", "false")
	if p = ada.post("/console/admin/search", form); p.status != http.StatusOK || !strings.Contains(p.body, "Off for acme.example") {
		t.Fatalf("turning it off: %d\n%s", p.status, p.body)
	}
	tn, err := s.db.FindTenantByKey(context.Background(), "acme.example")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := s.db.Pool().Query(context.Background(), fmt.Sprintf(`SELECT reason || ' ' || via || ' ' || subject FROM %q.audit_log
		WHERE tool = 'set_semantic_search' ORDER BY id`, tn.Schema))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var r string
		_ = rows.Scan(&r)
		got = append(got, r)
	}
	if strings.Join(got, "; ") != "semantic search turned on console corp:ada-1; semantic search turned off console corp:ada-1" {
		t.Errorf("audit: %q", got)
	}

	bob := s.signedIn("bob-2", "bob@acme.example") // a developer
	if p := bob.get("/console/admin/search"); p.status != http.StatusForbidden {
		t.Errorf("a developer's search page: %d", p.status)
	}
	if p := bob.post("/console/admin/search", map[string][]string{"csrf": {csrfFor(t, bob, "/console/admin/search")}, "enabled": {"true"}}); p.status != http.StatusForbidden {
		t.Errorf("a developer turning it on: %d", p.status)
	}

	off := newSite(t, siteOpts{})
	eve := off.signedIn("eve-3", "eve@globex.example")
	p = eve.get("/console/admin/search")
	form = p.form(t, "/console/admin/search")
	form.Set("enabled", "true")
	if p = eve.post("/console/admin/search", form); p.status != http.StatusBadRequest || !strings.Contains(p.body, "not configured") {
		t.Errorf("turning it on without a provider: %d\n%s", p.status, p.body)
	}
}
