package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
	"github.com/gatehouse-mcp/gatehouse/tenancy/anomaly"
)

// TestAlertsPage: an admin sees the organisation's open anomaly alerts
// with their evidence and a link to the ALERT record, acknowledges one
// (the form's CSRF token is required), and it leaves the open list for
// the full one, marked with who acknowledged it. A developer gets neither
// the page nor the action.
func TestAlertsPage(t *testing.T) {
	set := anomaly.DefaultSettings()
	set.DenialLimit = 5
	s := newSite(t, siteOpts{alerts: &mcp.AlertOptions{Settings: &set}})
	admin := s.signedIn("ada-1", "ada@acme.example")
	dev := s.signedIn("dan-1", "dan@acme.example")
	ctx := context.Background()
	tn, err := s.db.FindTenantByKey(ctx, "acme.example")
	if err != nil {
		t.Fatal(err)
	}
	secret, k := apikey.New(tn.ID, string(tenancy.Viewer), identity.AllScopes, "probe", "test", time.Time{})
	if err := s.db.CreateAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	for range 6 { // a viewer's key trying an admin tool: denied each time
		req, _ := http.NewRequest(http.MethodPost, s.ts.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_members","arguments":{}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", "2025-06-18")
		req.Header.Set("Authorization", "Bearer "+secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	s.srv.FlushAudit(ctx)
	as, err := s.srv.DetectAnomalies(ctx)
	if err != nil || len(as) != 1 {
		t.Fatalf("alerts: %+v %v", as, err)
	}
	s.srv.FlushAudit(ctx)

	p := admin.get("/console/admin/alerts")
	if p.status != http.StatusOK || !strings.Contains(p.body, "denial_burst") || !strings.Contains(p.body, "apikey:"+k.ID) ||
		!strings.Contains(p.body, "/console/admin/audit/") || !strings.Contains(p.body, "<dt>denied</dt><dd>5</dd>") {
		t.Fatalf("alerts page: %d\n%s", p.status, p.body)
	}
	if !strings.Contains(admin.get("/console/connect").body, `href="/console/admin/alerts"`) {
		t.Error("the admin's navigation lacks the alerts page")
	}
	action := "/console/admin/alerts/" + strconv.FormatInt(as[0].ID, 10) + "/acknowledge"
	if p := admin.post(action, url.Values{}); p.status != http.StatusForbidden {
		t.Errorf("acknowledging without the CSRF token: %d", p.status)
	}
	if p := dev.get("/console/admin/alerts"); p.status != http.StatusForbidden {
		t.Errorf("developer on the alerts page: %d", p.status)
	}
	if p := dev.post(action, url.Values{"csrf": {csrfFor(t, dev, action)}}); p.status != http.StatusForbidden {
		t.Errorf("developer acknowledging: %d", p.status)
	}
	p = admin.post(action, admin.get("/console/admin/alerts").form(t, action))
	if p.status != http.StatusOK || !strings.Contains(p.body, "Alert acknowledged.") || !strings.Contains(p.body, "No alerts.") {
		t.Fatalf("after acknowledging: %d\n%s", p.status, p.body)
	}
	if p := admin.get("/console/admin/alerts?all=1"); !strings.Contains(p.body, "acknowledged by ada@acme.example") {
		t.Errorf("full list:\n%s", p.body)
	}
}
