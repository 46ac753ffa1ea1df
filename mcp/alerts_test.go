package mcp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
	"github.com/gatehouse-mcp/gatehouse/tenancy/anomaly"
)

// alertSettings are thresholds a test reaches in seconds: no learning
// period, small bursts, a floor of 20 calls an hour with no history.
func alertSettings() *anomaly.Settings {
	s := anomaly.DefaultSettings()
	s.Learning, s.DenialLimit, s.VolumeFloor, s.VolumeMinHours = 0, 5, 20, 0
	return &s
}

// withAlerts serves behind a trusted loopback proxy (so X-Forwarded-For
// sets the client address) with alerts on.
func withAlerts(o mcp.AlertOptions) func(*setup) {
	return func(su *setup) {
		prev := su.options
		su.options = func(opts *mcp.Options) {
			if prev != nil {
				prev(opts)
			}
			_, lo, _ := net.ParseCIDR("127.0.0.0/8")
			opts.TrustedProxies = append(opts.TrustedProxies, lo)
			opts.Alerts = &o
		}
	}
}

// from sends tools/call name with token as if from client address ip and
// returns the HTTP status.
func (g *gatehouse) from(t *testing.T, ip, token, name string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, g.url, strings.NewReader(toolCall(name)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Forwarded-For", ip)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

// detect flushes and chains the audit records, then runs a detector pass.
func (g *gatehouse) detect(t *testing.T) []*store.StoredAlert {
	t.Helper()
	ctx := context.Background()
	g.srv.FlushAudit(ctx)
	as, err := g.srv.DetectAnomalies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g.srv.FlushAudit(ctx) // chains the ALERT records
	return as
}

// eventually polls cond for up to five seconds (invalidations travel by
// NOTIFY).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 100 {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within 5s", what)
}

// TestAlertNewNetworkSuspendsKey: a key's first call from a network it has
// never used (IPv4 /24, IPv6 /48) raises one new_network alert, recorded
// as an ALERT in the tenant's chain with its evidence, counted in
// /metrics, listed for admins; with GATEHOUSE_ALERT_SUSPEND=new_network the
// key is revoked. Hosts moving inside a known network raise nothing, and
// the alert itself never refused the call.
func TestAlertNewNetworkSuspendsKey(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings(), Suspend: []anomaly.Kind{anomaly.NewNetwork}}))
	secret, k := g.keyWith(t, "alerts.example", tenancy.Developer, time.Time{})
	secret6, k6 := g.keyWith(t, "alerts.example", tenancy.Developer, time.Time{})
	admin := g.connect(t, g.key(t, "alerts.example", tenancy.Admin), "")
	g.from(t, "198.51.100.7", secret, "whoami")
	g.from(t, "2001:db8:1:2::1", secret6, "whoami")
	if as := g.detect(t); len(as) != 0 {
		t.Fatalf("alerts for first networks: %+v", as)
	}
	for _, c := range []struct{ ip, secret string }{
		{"198.51.100.200", secret}, {"::ffff:198.51.100.9", secret}, {"2001:db8:1:ffff::9", secret6}, {"2001:db8:1:2:aaaa::1", secret6},
	} {
		if code := g.from(t, c.ip, c.secret, "whoami"); code != http.StatusOK {
			t.Fatalf("call from %s: %d", c.ip, code)
		}
	}
	if as := g.detect(t); len(as) != 0 {
		t.Fatalf("alerts for known networks: %+v", as)
	}
	if code := g.from(t, "203.0.113.9", secret, "whoami"); code != http.StatusOK {
		t.Fatalf("the call from a new network was refused (%d): alerts never block by themselves", code)
	}
	if code := g.from(t, "2001:db8:2::1", secret6, "whoami"); code != http.StatusOK {
		t.Fatalf("the call from a new network was refused (%d): alerts never block by themselves", code)
	}
	as := g.detect(t)
	if len(as) != 2 || as[0].Kind != "new_network" || !as[0].Suspended || !as[1].Suspended ||
		as[0].APIKeyID == as[1].APIKeyID || (as[0].APIKeyID != k.ID && as[0].APIKeyID != k6.ID) {
		t.Fatalf("alerts: %+v", as)
	}
	if as[0].APIKeyID != k.ID {
		as[0], as[1] = as[1], as[0]
	}
	if !strings.Contains(as[1].Summary, "2001:db8:2::/48") {
		t.Errorf("IPv6 alert: %s", as[1].Summary)
	}
	var ev map[string]any
	if err := json.Unmarshal(as[0].Evidence, &ev); err != nil || ev["network"] != "203.0.113.0/24" || ev["client_ip"] != "203.0.113.9" {
		t.Errorf("evidence %s (%v)", as[0].Evidence, err)
	}
	eventually(t, "the suspended key refused", func() bool { return g.from(t, "198.51.100.7", secret, "whoami") == http.StatusUnauthorized })

	// The chain holds the ALERT record and still verifies.
	var audit struct{ Records []*store.AuditRecord }
	call(t, admin, "read_audit_log", map[string]any{"decision": "ALERT", "actor": "apikey:" + k.ID}, &audit)
	if len(audit.Records) != 1 || audit.Records[0].ID != as[0].AuditID || audit.Records[0].Subject != "apikey:"+k.ID ||
		!strings.Contains(audit.Records[0].Reason, "new_network: first call from network 203.0.113.0/24") ||
		!strings.Contains(audit.Records[0].Reason, "revoked") || audit.Records[0].ArgsDigest != testAuditKey.Digest(as[0].Evidence) {
		t.Errorf("ALERT records: %+v", audit.Records)
	}
	tn, err := g.db.FindTenantByKey(context.Background(), "alerts.example")
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := g.db.VerifyAudit(context.Background(), tn, testAuditKey); err != nil || !rep.OK() {
		t.Errorf("chain: %+v %v", rep, err)
	}

	// Admins list and acknowledge it.
	var list struct{ Alerts []*store.StoredAlert }
	call(t, admin, "list_alerts", map[string]any{"open": true}, &list)
	if len(list.Alerts) != 2 {
		t.Fatalf("list_alerts: %+v", list.Alerts)
	}
	if res := call(t, admin, "acknowledge_alert", map[string]any{"id": as[0].ID}, nil); res.IsError || !strings.HasPrefix(text(res), "Acknowledged: ") {
		t.Fatal(text(res))
	}
	// A second acknowledgement says so and keeps the first.
	var again struct {
		Alert struct {
			AcknowledgedBy string `json:"acknowledged_by"`
		}
		AlreadyAcknowledged bool `json:"already_acknowledged"`
	}
	if res := call(t, admin, "acknowledge_alert", map[string]any{"id": as[0].ID}, &again); res.IsError || !again.AlreadyAcknowledged ||
		!strings.HasPrefix(text(res), "Already acknowledged") || again.Alert.AcknowledgedBy == "" {
		t.Errorf("acknowledging twice: %q %+v", text(res), again)
	}
	call(t, admin, "list_alerts", map[string]any{"open": true}, &list)
	if len(list.Alerts) != 1 || list.Alerts[0].ID != as[1].ID {
		t.Errorf("acknowledged alert still open: %+v", list.Alerts)
	}
	if res := call(t, admin, "acknowledge_alert", map[string]any{"id": as[0].ID + 1000}, nil); !res.IsError {
		t.Error("acknowledging an unknown alert succeeded")
	}
	if m := g.metricsText(t); !strings.Contains(m, `gatehouse_alerts_total{kind="new_network"} 2`) ||
		!strings.Contains(m, `gatehouse_alert_suspensions_total{kind="new_network"} 2`) {
		t.Errorf("metrics lack the alert:\n%s", grepLines(m, "gatehouse_alert"))
	}
}

func (g *gatehouse) metricsText(t *testing.T) string {
	t.Helper()
	res, err := http.Get(g.ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	return readBody(t, res)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestFailedAuthFloodNeverSuspends: a flood of failed authentications
// naming a key's id (the id is public), from many addresses, raises a
// denial_burst alert in the key's tenant, and never suspends the key, even
// with every suspendable kind asked to suspend: the key keeps working.
// Tokens naming unknown ids reach no tenant.
func TestFailedAuthFloodNeverSuspends(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings(),
		Suspend: []anomaly.Kind{anomaly.NewNetwork, anomaly.Volume, anomaly.OffHours}}))
	secret, k := g.keyWith(t, "flood.example", tenancy.Developer, time.Time{})
	if code := g.from(t, "198.51.100.7", secret, "whoami"); code != http.StatusOK {
		t.Fatal(code)
	}
	g.detect(t)
	wrong, _ := apikey.New("", "", nil, "", "", time.Time{})
	forged := apikey.Prefix + k.ID + wrong[len(apikey.Prefix)+16:] // the key's id, another secret
	if id, ok := apikey.ParseID(forged); !ok || id != k.ID {
		t.Fatalf("forged token %q does not name the key", forged)
	}
	unknown, _ := apikey.New("", "", nil, "", "", time.Time{})
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 40 {
		wg.Go(func() {
			<-start
			tok := forged
			if i%4 == 3 {
				tok = unknown
			}
			if code := g.from(t, fmt.Sprintf("203.0.%d.%d", 113+i%7, 1+i), tok, "whoami"); code != http.StatusUnauthorized {
				t.Errorf("forged token: %d", code)
			}
		})
	}
	close(start)
	wg.Wait()
	g.srv.FlushAudit(context.Background())
	mcp.SetAlertClock(g.srv, func() time.Time { return time.Now().Add(3 * time.Minute) }) // the minute is closed
	as := g.detect(t)
	if len(as) != 1 || as[0].Kind != "denial_burst" || as[0].APIKeyID != k.ID || as[0].Suspended {
		t.Fatalf("alerts: %+v", as)
	}
	if !strings.Contains(as[0].Summary, "30 failed authentications") {
		t.Errorf("summary: %s", as[0].Summary)
	}
	if code := g.from(t, "198.51.100.7", secret, "whoami"); code != http.StatusOK {
		t.Fatalf("the key stopped working after failed authentications naming it: %d", code)
	}
	keys, err := g.db.FindAPIKeys(context.Background(), k.TenantID)
	if err != nil {
		t.Fatal(err)
	}
	for _, kk := range keys {
		if kk.ID == k.ID && !kk.RevokedAt.IsZero() {
			t.Fatal("the key was revoked")
		}
	}
	// The same minutes are not read twice.
	if as := g.detect(t); len(as) != 0 {
		t.Errorf("second pass: %+v", as)
	}
}

// TestAlertVolumeAndDenials: calls far above the floor in an hour raise
// one volume alert (suspending when asked), and a burst of denials one
// denial_burst alert (never suspending).
func TestAlertVolumeAndDenials(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings(), Suspend: []anomaly.Kind{anomaly.Volume}}))
	viewer, _ := g.keyWith(t, "volume.example", tenancy.Viewer, time.Time{})
	for range 6 {
		g.from(t, "198.51.100.7", viewer, "list_members") // denied: admin only
	}
	as := g.detect(t)
	if len(as) != 1 || as[0].Kind != "denial_burst" || as[0].Suspended {
		t.Fatalf("alerts after denials: %+v", as)
	}
	busy, k := g.keyWith(t, "volume.example", tenancy.Developer, time.Time{})
	for range 21 {
		g.from(t, "198.51.100.8", busy, "whoami")
	}
	as = g.detect(t)
	if len(as) != 1 || as[0].Kind != "volume" || as[0].APIKeyID != k.ID || !as[0].Suspended {
		t.Fatalf("alerts after volume: %+v", as)
	}
	eventually(t, "the suspended key refused", func() bool { return g.from(t, "198.51.100.8", busy, "whoami") == http.StatusUnauthorized })
}

// TestAlertPassReplicas: replicas running passes at once over the same
// records raise each alert once (a lease, and a lock per tenant).
func TestAlertPassReplicas(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings()}))
	h := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings()}), func(su *setup) { su.db = g.db })
	secret := g.key(t, "replicas.example", tenancy.Developer)
	g.from(t, "198.51.100.7", secret, "whoami")
	g.detect(t)
	g.from(t, "203.0.113.1", secret, "whoami")
	h.from(t, "192.0.2.1", secret, "whoami")
	ctx := context.Background()
	g.srv.FlushAudit(ctx)
	h.srv.FlushAudit(ctx)
	var mu sync.Mutex
	var all []*store.StoredAlert
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, x := range []*gatehouse{g, h, g, h} {
		wg.Go(func() {
			<-start
			as, err := x.srv.DetectAnomalies(ctx)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			all = append(all, as...)
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	// The lease went to one replica; the other's later passes find nothing new.
	if len(all) != 1 || all[0].Kind != "new_network" {
		t.Fatalf("alerts: %+v", all)
	}
	// h holds no lease while g's is valid; g gives it up when it stops,
	// and h's next pass takes over.
	other := g.key(t, "replicas.example", tenancy.Developer)
	h.from(t, "198.51.100.7", other, "whoami")
	h.srv.FlushAudit(ctx)
	if as, err := h.srv.DetectAnomalies(ctx); err != nil || len(as) != 0 {
		t.Fatalf("h without the lease: %+v %v", as, err)
	}
	mctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { g.srv.RunMaintenance(mctx, time.Hour); close(done) }()
	time.Sleep(100 * time.Millisecond)
	stop()
	<-done
	h.from(t, "203.0.113.50", other, "whoami")
	h.srv.FlushAudit(ctx)
	as, err := h.srv.DetectAnomalies(ctx)
	if err != nil || len(as) != 1 || as[0].Kind != "new_network" {
		t.Fatalf("h after g stopped: %+v %v", as, err)
	}
}

// TestAlertsStayInTheirTenant: another tenant's admin neither lists nor
// acknowledges a tenant's alerts, and a developer of the tenant itself
// may not call the alert tools.
func TestAlertsStayInTheirTenant(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings()}))
	secret := g.key(t, "one.example", tenancy.Developer)
	g.from(t, "198.51.100.7", secret, "whoami")
	g.detect(t)
	g.from(t, "203.0.113.7", secret, "whoami")
	as := g.detect(t)
	if len(as) != 1 {
		t.Fatalf("alerts: %+v", as)
	}
	other := g.connect(t, g.key(t, "two.example", tenancy.Admin), "")
	var list struct{ Alerts []*store.StoredAlert }
	call(t, other, "list_alerts", map[string]any{}, &list)
	if len(list.Alerts) != 0 {
		t.Errorf("another tenant's admin lists %+v", list.Alerts)
	}
	if res := call(t, other, "acknowledge_alert", map[string]any{"id": as[0].ID}, nil); !res.IsError || !strings.Contains(text(res), "no alert") {
		t.Errorf("another tenant's admin acknowledged it: %s", text(res))
	}
	dev := g.connect(t, secret, "")
	for _, tool := range []string{"list_alerts", "acknowledge_alert"} {
		if res := call(t, dev, tool, map[string]any{"id": as[0].ID}, nil); !res.IsError || !strings.Contains(text(res), "ACCESS DENIED") {
			t.Errorf("a developer called %s: %s", tool, text(res))
		}
	}
	admin := g.connect(t, g.key(t, "one.example", tenancy.Admin), "")
	call(t, admin, "list_alerts", map[string]any{"open": true}, &list)
	if len(list.Alerts) != 1 || list.Alerts[0].AcknowledgedAt != nil {
		t.Errorf("the tenant's own list: %+v", list.Alerts)
	}
}

// TestAlertOffHoursAdmin: admin actions (tools that need mcp:admin) teach
// the principal's usual hours; one at an hour far from them raises
// off_hours_admin. Reads by the same principal at that hour do not. (The
// history's times are moved into the past before the records are chained:
// the chain covers them.)
func TestAlertOffHoursAdmin(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings()}))
	ctx := context.Background()
	secret, k := g.keyWith(t, "hours.example", tenancy.Admin, time.Time{})
	for range 12 {
		if code := g.from(t, "198.51.100.7", secret, "list_members"); code != http.StatusOK {
			t.Fatal(code)
		}
	}
	tn, err := g.db.FindTenantByKey(ctx, "hours.example")
	if err != nil {
		t.Fatal(err)
	}
	// Twelve days of one admin action a day, twelve hours away from now
	// (the records moved out of the audit intake first, unchained).
	if err := g.db.SettleAudit(ctx, tn); err != nil {
		t.Fatal(err)
	}
	usual := time.Now().UTC().Add(-12 * time.Hour).Truncate(time.Hour)
	if _, err := g.db.Pool().Exec(ctx, `UPDATE `+tn.Schema+`.audit_log a SET at = $1::timestamptz - make_interval(days => v.n::int)
		FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM `+tn.Schema+`.audit_log) v WHERE a.id = v.id AND a.chain_seq IS NULL`, usual); err != nil {
		t.Fatal(err)
	}
	if as := g.detect(t); len(as) != 0 {
		t.Fatalf("alerts on the usual hours: %+v", as)
	}
	g.from(t, "198.51.100.7", secret, "list_todos") // not an admin action
	if as := g.detect(t); len(as) != 0 {
		t.Fatalf("alerts on a read: %+v", as)
	}
	g.from(t, "198.51.100.7", secret, "list_api_keys")
	as := g.detect(t)
	if len(as) != 1 || as[0].Kind != "off_hours_admin" || as[0].APIKeyID != k.ID || as[0].Suspended {
		t.Fatalf("alerts: %+v", as)
	}
	if !strings.Contains(as[0].Summary, "admin action list_api_keys") {
		t.Errorf("summary: %s", as[0].Summary)
	}
	if rep, err := g.db.VerifyAudit(ctx, tn, testAuditKey); err != nil || !rep.OK() {
		t.Errorf("chain: %+v %v", rep, err)
	}
}

// TestAlertStateUnreadable: a principal's stored state that no longer
// decodes is started afresh (and said so in the log); the pass goes on
// with the other principals and raises their alerts.
func TestAlertStateUnreadable(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings()}))
	broken, kb := g.keyWith(t, "state.example", tenancy.Developer, time.Time{})
	fine, kf := g.keyWith(t, "state.example", tenancy.Developer, time.Time{})
	g.from(t, "198.51.100.7", broken, "whoami")
	g.from(t, "198.51.100.7", fine, "whoami")
	g.detect(t)
	if _, err := g.db.Pool().Exec(context.Background(), `UPDATE gatehouse.anomaly_principals SET state = '{"nets": "not a list"}' WHERE subject = $1`,
		"apikey:"+kb.ID); err != nil {
		t.Fatal(err)
	}
	g.from(t, "203.0.113.1", broken, "whoami")
	g.from(t, "203.0.113.1", fine, "whoami")
	as := g.detect(t)
	if len(as) != 1 || as[0].APIKeyID != kf.ID {
		t.Fatalf("alerts: %+v", as)
	}
	if !strings.Contains(g.logs.String(), "starting it afresh") {
		t.Error("the unreadable state was not reported")
	}
}

// TestAlertFirstPassSkipsIdleTenants: on the detector's first pass (after
// an upgrade), a tenant whose chain has not grown for a week starts at its
// head, its old records unread, in one statement for all such tenants;
// an active tenant's recent records are read to learn from.
func TestAlertFirstPassSkipsIdleTenants(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Off: true})) // records written before alerts existed
	ctx := context.Background()
	g.from(t, "198.51.100.7", g.key(t, "idle.example", tenancy.Developer), "whoami")
	g.from(t, "198.51.100.7", g.key(t, "busy.example", tenancy.Developer), "whoami")
	g.srv.FlushAudit(ctx)
	idle, _ := g.db.FindTenantByKey(ctx, "idle.example")
	busy, _ := g.db.FindTenantByKey(ctx, "busy.example")
	if _, err := g.db.Pool().Exec(ctx, "UPDATE gatehouse.audit_heads SET updated_at = now() - interval '8 days' WHERE tenant_id = $1", idle.ID); err != nil {
		t.Fatal(err)
	}
	h := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings()}), func(su *setup) { su.db = g.db })
	if _, err := h.srv.DetectAnomalies(ctx); err != nil {
		t.Fatal(err)
	}
	count := func(q string, args ...any) int {
		var n int
		if err := g.db.Pool().QueryRow(ctx, q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	states := "SELECT count(*) FROM gatehouse.anomaly_principals WHERE tenant_id = $1"
	if n := count(states, idle.ID); n != 0 {
		t.Errorf("the idle tenant's old records were read: %d states", n)
	}
	if n := count(states, busy.ID); n != 1 {
		t.Errorf("the active tenant's records were not read: %d states", n)
	}
	cursorAtHead := "SELECT count(*) FROM gatehouse.anomaly_cursors c JOIN gatehouse.audit_heads h USING (tenant_id) WHERE c.tenant_id = $1 AND c.chain_seq = h.chain_seq"
	for _, tn := range []*tenancy.Tenant{idle, busy} {
		if count(cursorAtHead, tn.ID) != 1 {
			t.Errorf("%s: the cursor is not at the chain's head", tn.Key)
		}
	}
}

// TestAlertPassReadsEveryRecordOnce: whatever a tenant's number of new
// records (read with other tenants, at the grouped read's limit, alone,
// alone over several batches: its cursor set at 0 first, as for a tenant
// read before, so that all 2,500 are new), one pass leaves the detector's
// cursor at the tenant's chain head, and the next finds nothing to read.
func TestAlertPassReadsEveryRecordOnce(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings()}))
	ctx := context.Background()
	counts := []int{1, 3, 200, 201, 2500}
	var ts []*tenancy.Tenant
	for i, n := range counts {
		ts = append(ts, unreadTenant(t, g, fmt.Sprintf("once-%d.example", i), n))
	}
	if _, err := g.srv.DetectAnomalies(ctx); err != nil {
		t.Fatal(err)
	}
	for i, tn := range ts {
		if cursor, head := anomalyCursor(t, g, tn); cursor != head || head != int64(counts[i]) {
			t.Errorf("%s (%d records): cursor %d, head %d", tn.Key, counts[i], cursor, head)
		}
	}
	left, err := g.db.TenantsWithNewAudit(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range left {
		if strings.HasPrefix(tc.Tenant.Key, "once-") {
			t.Errorf("%s still has records to read: %+v", tc.Tenant.Key, tc)
		}
	}
}

// unreadTenant provisions a tenant with n chained audit records that the
// anomaly detector has yet to read (its cursor at 0).
func unreadTenant(t *testing.T, g *gatehouse, key string, n int) *tenancy.Tenant {
	t.Helper()
	tn, _, err := g.db.EnsureTenant(context.Background(), key, tenancy.Organization)
	if err != nil {
		t.Fatal(err)
	}
	addChainedRecords(t, g, tn, n)
	if _, err := g.db.Pool().Exec(context.Background(), "INSERT INTO gatehouse.anomaly_cursors (tenant_id, chain_seq) VALUES ($1, 0)", tn.ID); err != nil {
		t.Fatal(err)
	}
	return tn
}

// addChainedRecords writes n records of a key's calls in tn's audit log
// and chains them.
func addChainedRecords(t *testing.T, g *gatehouse, tn *tenancy.Tenant, n int) {
	t.Helper()
	ctx := context.Background()
	entries := make([]store.AuditEntry, n)
	for j := range entries {
		entries[j] = store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{Decision: store.Allowed, Tool: "whoami",
			Subject: "apikey:once", Provider: "apikey", APIKeyID: "once", ClientIP: "198.51.100.7", RequestID: fmt.Sprint(tn.Key, "-", rand.Int64())}}
	}
	if err := g.db.InsertAuditBatch(ctx, entries); err != nil {
		t.Fatal(err)
	}
	if _, err := g.db.ChainAudit(ctx, tn, testAuditKey, n); err != nil {
		t.Fatal(err)
	}
}

// anomalyCursor returns where the anomaly detector has read tn's audit
// log to (-1: never), and its chain's head.
func anomalyCursor(t *testing.T, g *gatehouse, tn *tenancy.Tenant) (cursor, head int64) {
	t.Helper()
	if err := g.db.Pool().QueryRow(context.Background(), `SELECT coalesce((SELECT chain_seq FROM gatehouse.anomaly_cursors WHERE tenant_id = $1), -1),
		(SELECT chain_seq FROM gatehouse.audit_heads WHERE tenant_id = $1)`, tn.ID).Scan(&cursor, &head); err != nil {
		t.Fatal(err)
	}
	return cursor, head
}

// TestAlertPassContinuesPastGroupShare: a tenant listed with few new
// records (read in a group, at most 200 of them) that has more by the time
// its group reads it is read on, alone, to its chain's head in the same
// pass, beside a small tenant that its group reads whole.
func TestAlertPassContinuesPastGroupShare(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings()}))
	ctx := context.Background()
	grows := unreadTenant(t, g, "grows.example", 150)
	small := unreadTenant(t, g, "small.example", 3)
	tcs, err := g.db.TenantsWithNewAudit(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	addChainedRecords(t, g, grows, 300) // after the listing: 450 to read, 150 listed
	if err := mcp.ReadNewAudit(ctx, g.srv, tcs); err != nil {
		t.Fatal(err)
	}
	for tn, want := range map[*tenancy.Tenant]int64{grows: 450, small: 3} {
		if cursor, head := anomalyCursor(t, g, tn); cursor != want || head != want {
			t.Errorf("%s: cursor %d, head %d; want both %d", tn.Key, cursor, head, want)
		}
	}
}

// TestAlertPassReadsFailingTenantAlone: a tenant whose read fails (its
// audit log renamed away) fails alone, pass after pass, while the tenants
// beside it are read to their heads; it is read alone until a read of it
// succeeds, and then it is no longer set apart.
func TestAlertPassReadsFailingTenantAlone(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings()}))
	ctx := context.Background()
	var ts []*tenancy.Tenant
	for i := range 4 {
		ts = append(ts, unreadTenant(t, g, fmt.Sprintf("beside-%d.example", i), 3))
	}
	broken := ts[2]
	table := pgx.Identifier{broken.Schema, "audit_log"}.Sanitize()
	if _, err := g.db.Pool().Exec(ctx, "ALTER TABLE "+table+" RENAME TO audit_log_away"); err != nil {
		t.Fatal(err)
	}
	var grouped [][]string // each pass's tenants read many to a transaction
	mcp.WatchAlertGroups(g.srv, func(ids []string) { grouped = append(grouped, ids) })
	for pass := 1; pass <= 2; pass++ {
		grouped = nil
		if _, err := g.srv.DetectAnomalies(ctx); err == nil || !strings.Contains(err.Error(), "1 of ") {
			t.Fatalf("pass %d: %v; want one tenant's failure", pass, err)
		}
		// The first pass knows of no failure and groups all four; the
		// second reads the failing tenant alone, the others still grouped.
		if want := 4 - (pass - 1); len(grouped) != 1 || len(grouped[0]) != want || (pass > 1 && slices.Contains(grouped[0], broken.ID)) {
			t.Errorf("pass %d: grouped %v; want the %d tenants other than those failing", pass, grouped, want)
		}
		readBeside(t, g, ts, broken, pass)
	}
	if _, err := g.db.Pool().Exec(ctx, "ALTER TABLE "+pgx.Identifier{broken.Schema, "audit_log_away"}.Sanitize()+" RENAME TO audit_log"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.srv.DetectAnomalies(ctx); err != nil {
		t.Fatalf("after the repair: %v", err)
	}
	if got := mcp.AlertFailing(g.srv); len(got) != 0 {
		t.Errorf("after the repair, read alone: %v", got)
	}
	grouped = nil
	for _, tn := range ts {
		addChainedRecords(t, g, tn, 1)
	}
	if _, err := g.srv.DetectAnomalies(ctx); err != nil {
		t.Fatal(err)
	}
	if len(grouped) != 1 || len(grouped[0]) != 4 {
		t.Errorf("once repaired, grouped %v; want all four tenants again", grouped)
	}
	for _, tn := range ts {
		if cursor, head := anomalyCursor(t, g, tn); cursor != head {
			t.Errorf("after the repair, %s: cursor %d, head %d", tn.Key, cursor, head)
		}
	}
}

// TestAlertPassBesideLockedAuditLog: while another session holds one
// tenant's audit log locked (DDL, VACUUM FULL), a detector pass still ends:
// the other tenants are read to their heads, the locked one fails as
// locked (transient) and is read alone at the next pass, and is read once
// the lock is gone. Without a bound on the pass's lock waits, it waited as
// long as the lock was held, and every tenant's alerts with it.
func TestAlertPassBesideLockedAuditLog(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings()}))
	ctx := context.Background()
	var ts []*tenancy.Tenant
	for i := range 3 {
		ts = append(ts, unreadTenant(t, g, fmt.Sprintf("locked-beside-%d.example", i), 3))
	}
	locked := ts[1]
	release := storetest.LockTable(t, g.db, locked.Schema, "audit_log")
	pass := func() error {
		t.Helper()
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { _, err := g.srv.DetectAnomalies(pctx); done <- err }()
		select {
		case err := <-done:
			if pctx.Err() != nil {
				t.Fatal("the detector pass ran until its context ended")
			}
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("the detector pass waits for the locked audit log")
			return nil
		}
	}
	for p := 1; p <= 2; p++ {
		err := pass()
		if err == nil || !strings.Contains(err.Error(), "1 of ") || !strings.Contains(err.Error(), "locked by another session") {
			t.Fatalf("pass %d: %v; want the locked tenant's failure, as locked", p, err)
		}
		readBeside(t, g, ts, locked, p)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if err := pass(); err != nil {
		t.Fatalf("after the lock: %v", err)
	}
	if cursor, head := anomalyCursor(t, g, locked); cursor != head || head != 3 {
		t.Errorf("after the lock, %s: cursor %d, head %d", locked.Key, cursor, head)
	}
}

// readBeside checks the state after detector pass number pass over ts (3
// new records each before each pass) with failing unreadable: it alone is
// kept to be read alone, the others were read to their heads; then it adds
// 3 records to each of the others for the next pass.
func readBeside(t *testing.T, g *gatehouse, ts []*tenancy.Tenant, failing *tenancy.Tenant, pass int) {
	t.Helper()
	if got := mcp.AlertFailing(g.srv); !slices.Equal(got, []string{failing.ID}) {
		t.Fatalf("pass %d: tenants read alone for failing: %v; want %s's", pass, got, failing.Key)
	}
	for _, tn := range ts {
		if tn == failing {
			continue
		}
		if cursor, head := anomalyCursor(t, g, tn); cursor != head || head != int64(3*pass) {
			t.Errorf("pass %d, %s beside a failing tenant: cursor %d, head %d", pass, tn.Key, cursor, head)
		}
		addChainedRecords(t, g, tn, 3)
	}
}

// TestFailedAuthCountedOnceBesideLockedTenant: while one tenant's read
// fails pass after pass (its audit log locked), the failed authentications
// naming other tenants' keys are counted once, not again at every pass
// (3 below the limit of 5 stay below it: no alert), and the failing
// tenant's own, read but not applied, are applied once it can be read
// (6 raise one denial_burst, once).
func TestFailedAuthCountedOnceBesideLockedTenant(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings()}))
	ctx := context.Background()
	secretA, ka := g.keyWith(t, "carry-a.example", tenancy.Developer, time.Time{})
	secretB, kb := g.keyWith(t, "carry-b.example", tenancy.Developer, time.Time{})
	for _, s := range []string{secretA, secretB} {
		if code := g.from(t, "198.51.100.7", s, "whoami"); code != http.StatusOK {
			t.Fatal(code)
		}
	}
	g.detect(t)
	forge := func(id string) string {
		wrong, _ := apikey.New("", "", nil, "", "", time.Time{})
		return apikey.Prefix + id + wrong[len(apikey.Prefix)+16:]
	}
	for i, id := range []string{ka.ID, ka.ID, ka.ID, ka.ID, ka.ID, ka.ID, kb.ID, kb.ID, kb.ID} {
		if code := g.from(t, fmt.Sprintf("203.0.113.%d", 1+i), forge(id), "whoami"); code != http.StatusUnauthorized {
			t.Fatalf("forged token: %d", code)
		}
	}
	g.srv.FlushAudit(ctx)
	mcp.SetAlertClock(g.srv, func() time.Time { return time.Now().Add(3 * time.Minute) }) // the minute is closed
	tn, err := g.db.FindTenantByID(ctx, ka.TenantID)
	if err != nil {
		t.Fatal(err)
	}
	release := storetest.LockTable(t, g.db, tn.Schema, "audit_log")
	for pass := 1; pass <= 3; pass++ {
		as, err := g.srv.DetectAnomalies(ctx)
		if err == nil || !strings.Contains(err.Error(), "locked") {
			t.Fatalf("pass %d beside the locked tenant: %v; want its read to fail as locked", pass, err)
		}
		if len(as) != 0 {
			t.Fatalf("pass %d: alerts %+v; want none (3 failures naming carry-b's key, counted once)", pass, as)
		}
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	as := g.detect(t)
	if len(as) != 1 || as[0].Kind != "denial_burst" || as[0].APIKeyID != ka.ID {
		t.Fatalf("once the lock is gone: alerts %+v; want one denial_burst for carry-a's key", as)
	}
	if as := g.detect(t); len(as) != 0 {
		t.Fatalf("the pass after: %+v; want none", as)
	}
}
