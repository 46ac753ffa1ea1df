package mcp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
	"github.com/gatehouse-mcp/gatehouse/tenancy/anomaly"
)

// keyFrom creates an API key in tenant that may be used only from
// networks, and returns its secret and record.
func (g *gatehouse) keyFrom(t testing.TB, tenant string, role tenancy.Role, networks ...string) (string, *apikey.Key) {
	t.Helper()
	ctx := context.Background()
	tn, _, err := g.db.EnsureTenant(ctx, tenant, tenancy.Organization)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := identity.ParseNetworks(networks)
	if err != nil {
		t.Fatal(err)
	}
	secret, k := apikey.New(tn.ID, string(role), identity.AllScopes, "restricted", "test", time.Time{})
	k.AllowedNetworks = ns
	if err := g.db.CreateAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	return secret, k
}

// trusting makes the server believe X-Forwarded-For from these networks.
func trusting(cidrs ...string) func(*setup) {
	return func(s *setup) {
		prev := s.options
		s.options = func(o *mcp.Options) {
			if prev != nil {
				prev(o)
			}
			for _, c := range cidrs {
				_, n, err := net.ParseCIDR(c)
				if err != nil {
					panic(err)
				}
				o.TrustedProxies = append(o.TrustedProxies, n)
			}
		}
	}
}

// netAnswer is a response to a request from some address.
type netAnswer struct {
	status    int
	challenge string // WWW-Authenticate
	retry     string
	body      string
	id        json.RawMessage
	code      int
	message   string
	clientIP  string
}

// postVia posts a JSON-RPC request to url with token and extra headers.
func postVia(t *testing.T, url, token, body string, headers ...string) netAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	a := netAnswer{status: res.StatusCode, challenge: res.Header.Get("WWW-Authenticate"), retry: res.Header.Get("Retry-After"), body: readBody(t, res)}
	var m struct {
		ID    json.RawMessage `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Data    struct {
				ClientIP string `json:"client_ip"`
			} `json:"data"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(a.body), &m) == nil {
		a.id, a.code, a.message, a.clientIP = m.ID, m.Error.Code, m.Error.Message, m.Error.Data.ClientIP
	}
	return a
}

// denied checks that a is the refusal of key from ip: 403, JSON-RPC
// -32032 for the request's id naming the key and the address, no
// challenge (not a token problem), no Retry-After, nothing secret.
func denied(t *testing.T, what string, a netAnswer, k *apikey.Key, secret, ip string) {
	t.Helper()
	if a.status != http.StatusForbidden || a.code != -32032 || a.clientIP != ip || a.challenge != "" || a.retry != "" ||
		!strings.Contains(a.message, "API key "+k.ID+" is not allowed from this network") || !strings.Contains(a.message, "your address is "+ip) {
		t.Errorf("%s: %d %+v, want 403, -32032 naming key %s and %s, no WWW-Authenticate", what, a.status, a, k.ID, ip)
	}
	if strings.Contains(a.body, secret) || strings.Contains(a.body, secret[len(apikey.Prefix)+17:]) {
		t.Errorf("%s: the refusal echoes the secret", what)
	}
	for _, n := range k.AllowedNetworks {
		if strings.Contains(a.body, n.String()) {
			t.Errorf("%s: the refusal reveals the allowed network %s", what, n)
		}
	}
}

// TestNetworkRestrictionIPv4: a key restricted to other networks is
// refused from here (127.0.0.1), whatever it asks for, and writes nothing;
// a key whose list includes this address (alone or among others) works,
// and an unrestricted key is unaffected. Each refusal is one DENIED record
// naming the address; the chain verifies.
func TestNetworkRestrictionIPv4(t *testing.T) {
	g := newGatehouse(t)
	elsewhere, ek := g.keyFrom(t, "acme.com", tenancy.Admin, "10.0.0.0/8", "192.0.2.0/24")
	near, _ := g.keyFrom(t, "acme.com", tenancy.Admin, "127.0.0.0/8")
	several, _ := g.keyFrom(t, "acme.com", tenancy.Admin, "10.0.0.0/8", "2001:db8::/32", "127.0.0.1")
	anywhere := g.key(t, "acme.com", tenancy.Admin)

	for name, secret := range map[string]string{"127.0.0.0/8": near, "several networks": several, "unrestricted": anywhere} {
		if a := postVia(t, g.url, secret, whoamiCall); a.status != http.StatusOK || !strings.Contains(a.body, "acme.com") {
			t.Errorf("%s: %d %s", name, a.status, a.body)
		}
	}
	// Every kind of request: a tool call, a list, initialize.
	for _, body := range []string{whoamiCall, addTodoCall, `{"jsonrpc":"2.0","id":"l","method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":3,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`} {
		a := postVia(t, g.url, elsewhere, body)
		denied(t, body[:40], a, ek, elsewhere, "127.0.0.1")
		var req struct{ ID json.RawMessage }
		_ = json.Unmarshal([]byte(body), &req)
		if string(a.id) != string(req.ID) {
			t.Errorf("refusal id %s, want the request's %s", a.id, req.ID)
		}
	}
	// The official go-sdk client reports the reason as it is.
	client := sdk.NewClient(&sdk.Implementation{Name: "net-test", Version: "1"}, nil)
	_, err := client.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: g.url,
		HTTPClient: &http.Client{Transport: bearer{elsewhere, http.DefaultTransport}}}, nil)
	if err == nil || !strings.Contains(err.Error(), "API key "+ek.ID+" is not allowed from this network (your address is 127.0.0.1)") {
		t.Errorf("go-sdk client with a key for other networks: %v", err)
	}
	// Refused before the tool: no todo.
	tn, _ := g.db.FindTenantByKey(context.Background(), "acme.com")
	var todos int
	_ = g.db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+tn.Schema+".todos").Scan(&todos)
	if todos != 0 {
		t.Errorf("%d todos written by a refused key", todos)
	}

	// One record per principal, tool and address per flush, counted.
	for range 5 {
		postVia(t, g.url, elsewhere, whoamiCall)
	}
	var refusals []*store.AuditRecord
	for _, r := range auditRows(t, g, "acme.com") {
		if r.Decision == store.Denied && r.APIKeyID == ek.ID {
			refusals = append(refusals, r)
		}
	}
	counts := map[string]int{}
	for _, r := range refusals {
		if r.ClientIP != "127.0.0.1" || r.Reason != "the credential is not allowed from this network" || r.Subject != "apikey:"+ek.ID || r.ChainSeq == 0 {
			t.Errorf("refusal record %+v", r)
		}
		counts[r.Tool] += r.Count
	}
	// (initialize: ours, and the go-sdk client's.)
	if counts["whoami"] != 6 || counts["add_todo"] != 1 || counts["tools/list"] != 1 || counts["initialize"] < 2 {
		t.Errorf("refusals recorded by tool: %v", counts)
	}
	if rep, err := g.db.VerifyAudit(context.Background(), tn, testAuditKey); err != nil || !rep.OK() {
		t.Errorf("chain: %+v %v", rep, err)
	}
	if !strings.Contains(g.audit.String(), `"decision":"DENIED"`) || !strings.Contains(g.audit.String(), `"reason":"the credential is not allowed from this network"`) {
		t.Error("the refusals are not on the audit stream")
	}
	if strings.Contains(g.logs.String(), elsewhere) || strings.Contains(g.audit.String(), elsewhere) {
		t.Error("the secret reached the logs")
	}
}

// TestNetworkRestrictionIPv6: over an IPv6 connection the peer is ::1; a
// key for ::1 works, one for other IPv6 networks or for 127.0.0.1 (another
// address) is refused.
func TestNetworkRestrictionIPv6(t *testing.T) {
	g := newGatehouse(t)
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	hs := &http.Server{Handler: g.srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(l) }()
	t.Cleanup(func() { hs.Close() })
	url := "http://" + l.Addr().String() + "/mcp"

	v6, _ := g.keyFrom(t, "acme.com", tenancy.Admin, "::1")
	other, ok := g.keyFrom(t, "acme.com", tenancy.Admin, "2001:db8::/32")
	v4loop, v4k := g.keyFrom(t, "acme.com", tenancy.Admin, "127.0.0.1")
	both, _ := g.keyFrom(t, "acme.com", tenancy.Admin, "127.0.0.1", "::1/128")
	for name, secret := range map[string]string{"::1": v6, "both loopbacks": both} {
		if a := postVia(t, url, secret, whoamiCall); a.status != http.StatusOK {
			t.Errorf("%s over IPv6: %d %s", name, a.status, a.body)
		}
	}
	denied(t, "2001:db8::/32 over IPv6", postVia(t, url, other, whoamiCall), ok, other, "::1")
	denied(t, "127.0.0.1 over IPv6", postVia(t, url, v4loop, whoamiCall), v4k, v4loop, "::1")
	if a := postVia(t, g.url, v4loop, whoamiCall); a.status != http.StatusOK {
		t.Errorf("127.0.0.1 over IPv4: %d", a.status)
	}
	var ips []string
	for _, r := range auditRows(t, g, "acme.com") {
		if r.Decision == store.Denied {
			ips = append(ips, r.ClientIP)
		}
	}
	if strings.Join(ips, " ") != "::1 ::1" {
		t.Errorf("refusals recorded from %v, want ::1 twice", ips)
	}
}

// TestForwardedHeadersFromUntrustedPeers: with no trusted proxy, or with
// one that is not the peer, no forwarding header makes a call come from an
// allowed network.
func TestForwardedHeadersFromUntrustedPeers(t *testing.T) {
	for name, mod := range map[string]func(*setup){
		"no trusted proxies":     func(*setup) {},
		"another trusted proxy":  trusting("192.0.2.0/24", "2001:db8::/32"),
		"trusting the allowlist": trusting("10.0.0.0/8"),
	} {
		t.Run(name, func(t *testing.T) {
			g := newGatehouse(t, mod)
			secret, k := g.keyFrom(t, "acme.com", tenancy.Admin, "10.0.0.0/8")
			for _, h := range [][]string{
				{"X-Forwarded-For", "10.1.2.3"},
				{"X-Forwarded-For", "10.1.2.3, 10.0.0.1"},
				{"X-Forwarded-For", "10.1.2.3", "X-Forwarded-For", "10.0.0.2"},
				{"X-Forwarded-For", "::ffff:10.1.2.3"},
				{"X-Real-Ip", "10.1.2.3"},
				{"Forwarded", "for=10.1.2.3"},
				{"True-Client-Ip", "10.1.2.3", "Cf-Connecting-Ip", "10.1.2.3", "X-Client-Ip", "10.1.2.3"},
			} {
				denied(t, strings.Join(h, ": "), postVia(t, g.url, secret, whoamiCall, h...), k, secret, "127.0.0.1")
			}
		})
	}
}

// TestForwardedHeadersFromTrustedProxy: behind a trusted proxy (here
// 127.0.0.1) the client is the nearest untrusted X-Forwarded-For hop: an
// allowed address the proxy saw is let in, one prepended by the client is
// not, and IPv6 and IPv4-mapped forms are matched as the addresses they
// are.
func TestForwardedHeadersFromTrustedProxy(t *testing.T) {
	g := newGatehouse(t, trusting("127.0.0.1/32"))
	secret, k := g.keyFrom(t, "acme.com", tenancy.Admin, "10.0.0.0/8", "2001:db8:1::/48", "127.0.0.1")
	for _, tc := range []struct {
		xff    string
		client string // "" allowed
	}{
		{"10.1.2.3", ""},
		{"203.0.113.9", "203.0.113.9"},
		{"10.1.2.3, 203.0.113.9", "203.0.113.9"}, // the client wrote 10.1.2.3; the proxy saw 203.0.113.9
		{"203.0.113.9, 10.1.2.3", ""},            // the proxy saw 10.1.2.3
		{"2001:db8:1::7", ""},
		{"[2001:db8:1::7]", ""},
		{"2001:db8:2::7", "2001:db8:2::7"},
		{"::ffff:10.9.8.7", ""},
		{"::ffff:11.9.8.7", "11.9.8.7"},
		{"::ffff:127.0.0.1", ""}, // every hop trusted: the furthest, as sent, matched unmapped
		{"11.0.0.1, 127.0.0.1", "11.0.0.1"},
		{"not-an-address", ""}, // unreadable: the peer (127.0.0.1, allowed), never the text
	} {
		a := postVia(t, g.url, secret, whoamiCall, "X-Forwarded-For", tc.xff)
		if tc.client == "" {
			if a.status != http.StatusOK {
				t.Errorf("X-Forwarded-For %s: %d %s, want allowed", tc.xff, a.status, a.body)
			}
			continue
		}
		denied(t, "X-Forwarded-For "+tc.xff, a, k, secret, tc.client)
	}
	recorded := map[string]bool{}
	for _, r := range auditRows(t, g, "acme.com") {
		if r.Decision == store.Denied {
			recorded[r.ClientIP] = true
		}
	}
	for _, ip := range []string{"203.0.113.9", "2001:db8:2::7", "11.9.8.7", "11.0.0.1"} {
		if !recorded[ip] {
			t.Errorf("no DENIED record from %s (have %v)", ip, recorded)
		}
	}
}

// TestNetworkRefusalCostsTheKeyNothing: refusals from elsewhere do not
// consume the key's rate limit (its user keeps working), even when they
// come after the key was refused for its limit; they are charged to the
// refused address as failed authentications instead, which throttles a
// flood from there.
func TestNetworkRefusalCostsTheKeyNothing(t *testing.T) {
	g := newGatehouse(t, trusting("127.0.0.1/32"), withLimits(tenancy.Limits{
		Principal:   tenancy.Rate{PerMinute: 1, Burst: 3},
		AuthFailure: tenancy.Rate{PerMinute: 1, Burst: 5},
	}))
	secret, k := g.keyFrom(t, "acme.com", tenancy.Admin, "10.0.0.0/8")
	from := func(ip string) netAnswer { return postVia(t, g.url, secret, whoamiCall, "X-Forwarded-For", ip) }
	// Five fit the address's burst, the sixth is charged and refused
	// (still 403); then its failed-authentication allowance is spent.
	for i := range 6 {
		denied(t, "refusal "+string(rune('1'+i)), from("203.0.113.9"), k, secret, "203.0.113.9")
	}
	if a := from("203.0.113.9"); a.status != http.StatusTooManyRequests {
		t.Errorf("flood from the refused address: %d, want 429", a.status)
	}
	// The key's own allowance is whole: three calls from its network.
	for i := range 3 {
		if a := from("10.0.0.5"); a.status != http.StatusOK {
			t.Fatalf("call %d from the key's network after the refusals: %d %s", i+1, a.status, a.body)
		}
	}
	// Now the key is over its limit, remembered as refused (refuse_fast.go):
	// its user gets 429, a copy elsewhere still gets 403, not the key's 429.
	if a := from("10.0.0.5"); a.status != http.StatusTooManyRequests {
		t.Errorf("4th call from the key's network: %d, want 429", a.status)
	}
	denied(t, "from elsewhere while the key is rate-limited", from("198.51.100.4"), k, secret, "198.51.100.4")
}

// TestNetworkCheckedOnCachedKeys: the validation cache carries the
// networks, so a key validated from its network is refused from
// elsewhere on its next request, and a change of its networks through
// set_api_key_networks applies on its next call.
func TestNetworkCheckedOnCachedKeys(t *testing.T) {
	g := newGatehouse(t, trusting("127.0.0.1/32"))
	secret, k := g.keyFrom(t, "acme.com", tenancy.Developer, "10.0.0.0/8")
	for range 3 {
		if a := postVia(t, g.url, secret, whoamiCall, "X-Forwarded-For", "10.0.0.5"); a.status != http.StatusOK {
			t.Fatalf("from its network: %d", a.status)
		}
		denied(t, "cached, from elsewhere", postVia(t, g.url, secret, whoamiCall, "X-Forwarded-For", "203.0.113.9"), k, secret, "203.0.113.9")
	}
	admin := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	res := call(t, admin, "set_api_key_networks", map[string]any{"id": k.ID, "allowed_networks": []string{"203.0.113.0/24"}}, nil)
	if res.IsError || !strings.Contains(text(res), "203.0.113.0/24") {
		t.Fatalf("set_api_key_networks: %s", text(res))
	}
	denied(t, "old network after the change", postVia(t, g.url, secret, whoamiCall, "X-Forwarded-For", "10.0.0.5"), k, secret, "10.0.0.5")
	if a := postVia(t, g.url, secret, whoamiCall, "X-Forwarded-For", "203.0.113.9"); a.status != http.StatusOK {
		t.Errorf("new network after the change: %d %s", a.status, a.body)
	}
	res = call(t, admin, "set_api_key_networks", map[string]any{"id": k.ID, "allowed_networks": []string{}}, nil)
	if res.IsError || !strings.Contains(text(res), "anywhere") {
		t.Fatalf("clearing: %s", text(res))
	}
	if a := postVia(t, g.url, secret, whoamiCall, "X-Forwarded-For", "198.51.100.1"); a.status != http.StatusOK {
		t.Errorf("after clearing: %d", a.status)
	}
}

// TestNetworkRestrictionOverStdio: a stdio client is this machine; a key
// restricted to other networks is refused at the start with a clear
// error, one whose networks include loopback is served.
func TestNetworkRestrictionOverStdio(t *testing.T) {
	g := newGatehouse(t)
	elsewhere, ek := g.keyFrom(t, "acme.com", tenancy.Developer, "10.0.0.0/8")
	err := g.srv.ServeStdio(context.Background(), elsewhere, strings.NewReader(""), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "API key "+ek.ID+" is not allowed from this network") || !strings.Contains(err.Error(), "127.0.0.1 or ::1") ||
		strings.Contains(err.Error(), elsewhere) {
		t.Errorf("stdio with a key for 10.0.0.0/8: %v", err)
	}

	local, _ := g.keyFrom(t, "acme.com", tenancy.Developer, "10.0.0.0/8", "::1")
	g2 := newGatehouse(t, func(s *setup) { s.db = g.db })
	cin, sout := io.Pipe()
	sin, cout := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g2.srv.ServeStdio(ctx, local, sin, sout) }()
	client := sdk.NewClient(&sdk.Implementation{Name: "stdio-net", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &sdk.IOTransport{Reader: cin, Writer: cout}, nil)
	if err != nil {
		t.Fatalf("connect over stdio with a key for ::1: %v", err)
	}
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "whoami"})
	if err != nil || res.IsError {
		t.Errorf("whoami over stdio: %v %v", err, res)
	}
	cs.Close()
	cancel()
	<-done
}

func init() {
	// For TestEveryToolConcurrentlyFromColdStart (added here, not in its
	// table, whose alignment the longer name would redo).
	everyToolArgs["set_api_key_networks"] = `{"id":"00000000-0000-4000-8000-000000000000","allowed_networks":["10.0.0.0/8"]}`
}

// TestAllowedNetworksThroughTools: create_api_key and create_my_api_key
// take allowed_networks (canonical in the answer, enforced on the new
// key), list_api_keys and list_my_api_keys show them, and every bad entry
// is refused as invalid arguments naming it, with no key made; the
// refusal is audited as DENIED.
func TestAllowedNetworksThroughTools(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	g := newGatehouse(t, withIssuer(t, "corp", iss), trusting("127.0.0.1/32"))
	admin := g.connect(t, g.key(t, "acme.com", tenancy.Admin), "")
	person := g.connect(t, token(iss, "alice", "alice@acme.com", true, nil), "")

	type created struct {
		Key struct {
			ID              string
			AllowedNetworks []string `json:"allowed_networks"`
		}
		Secret string
	}
	var byAdmin, mine created
	res := call(t, admin, "create_api_key", map[string]any{"name": "ci", "role": "developer",
		"allowed_networks": []string{"10.0.0.0/8", "::ffff:192.0.2.0/120", "2001:db8::1"}}, &byAdmin)
	if res.IsError || strings.Join(byAdmin.Key.AllowedNetworks, " ") != "10.0.0.0/8 192.0.2.0/24 2001:db8::1/128" ||
		!strings.Contains(text(res), "usable from 10.0.0.0/8, 192.0.2.0/24, 2001:db8::1/128") {
		t.Fatalf("create_api_key: %s %+v", text(res), byAdmin)
	}
	res = call(t, person, "create_my_api_key", map[string]any{"name": "laptop", "role": "viewer", "scopes": []string{"mcp:read"},
		"allowed_networks": []string{"203.0.113.7"}}, &mine)
	if res.IsError || strings.Join(mine.Key.AllowedNetworks, " ") != "203.0.113.7/32" {
		t.Fatalf("create_my_api_key: %s", text(res))
	}
	// Enforced.
	for _, tc := range []struct {
		secret, ip string
		want       int
	}{
		{byAdmin.Secret, "10.3.4.5", 200}, {byAdmin.Secret, "192.0.2.200", 200}, {byAdmin.Secret, "2001:db8::1", 200},
		{byAdmin.Secret, "2001:db8::2", 403}, {byAdmin.Secret, "203.0.113.7", 403},
		{mine.Secret, "203.0.113.7", 200}, {mine.Secret, "203.0.113.8", 403},
	} {
		if a := postVia(t, g.url, tc.secret, whoamiCall, "X-Forwarded-For", tc.ip); a.status != tc.want {
			t.Errorf("key from %s: %d, want %d", tc.ip, a.status, tc.want)
		}
	}
	// Listed.
	var keys struct {
		Keys []struct {
			ID              string
			AllowedNetworks []string `json:"allowed_networks"`
		}
	}
	res = call(t, admin, "list_api_keys", nil, &keys)
	if !strings.Contains(text(res), "usable from 10.0.0.0/8, 192.0.2.0/24, 2001:db8::1/128") || !strings.Contains(text(res), "usable from anywhere") {
		t.Errorf("list_api_keys text:\n%s", text(res))
	}
	for _, k := range keys.Keys {
		if k.AllowedNetworks == nil || k.ID == byAdmin.Key.ID && len(k.AllowedNetworks) != 3 {
			t.Errorf("listed %s with %v", k.ID, k.AllowedNetworks)
		}
	}
	if res := call(t, person, "list_my_api_keys", nil, nil); !strings.Contains(text(res), "usable from 203.0.113.7/32") {
		t.Errorf("list_my_api_keys:\n%s", text(res))
	}

	// Refused, naming the bad entry; nothing made.
	before := len(keys.Keys)
	for _, tc := range []struct {
		nets []string
		want string
	}{
		{[]string{"10.0.0.0/8", "10.0.0.1/8"}, `allowed_networks: network 2 ("10.0.0.1/8"): has host bits set: write the network 10.0.0.0/8, or the single address 10.0.0.1`},
		{[]string{"office"}, `network 1 ("office"): not an IP address`},
		{[]string{""}, `network 1 (""): empty`},
		{[]string{"fe80::1%eth0"}, "zone"},
		{[]string{"::ffff:0:0/80"}, "IPv4-mapped"},
	} {
		for _, tool := range []string{"create_api_key", "create_my_api_key"} {
			sess := admin
			if tool == "create_my_api_key" {
				sess = person
			}
			res := call(t, sess, tool, map[string]any{"name": "bad", "role": "viewer", "scopes": []string{"mcp:read"}, "allowed_networks": tc.nets}, nil)
			if !res.IsError || !strings.Contains(text(res), "invalid arguments") || !strings.Contains(text(res), tc.want) {
				t.Errorf("%s with %q: %s", tool, tc.nets, text(res))
			}
		}
		res := call(t, admin, "set_api_key_networks", map[string]any{"id": byAdmin.Key.ID, "allowed_networks": tc.nets}, nil)
		if !res.IsError || !strings.Contains(text(res), tc.want) {
			t.Errorf("set_api_key_networks with %q: %s", tc.nets, text(res))
		}
	}
	many := make([]string, 65)
	for i := range many {
		many[i] = "10.0.0.0/8"
	}
	if res := call(t, admin, "create_api_key", map[string]any{"name": "many", "role": "viewer", "allowed_networks": many}, nil); !res.IsError {
		t.Errorf("65 networks accepted: %s", text(res))
	}
	call(t, admin, "list_api_keys", nil, &keys)
	if len(keys.Keys) != before {
		t.Errorf("%d keys after the refusals, want %d", len(keys.Keys), before)
	}
	if k, _ := g.db.FindAPIKeyByID(context.Background(), byAdmin.Key.ID); k.AllowedNetworks.String() != "10.0.0.0/8, 192.0.2.0/24, 2001:db8::1/128" {
		t.Errorf("a refused set_api_key_networks changed the key: %s", k.AllowedNetworks)
	}
	// Only an admin changes networks, only of the tenant's keys.
	if res := call(t, person, "set_api_key_networks", map[string]any{"id": mine.Key.ID, "allowed_networks": []string{}}, nil); !res.IsError {
		t.Errorf("a developer widened a key: %s", text(res))
	}
	_, other := g.keyWith(t, "globex.com", tenancy.Admin, time.Time{})
	if res := call(t, admin, "set_api_key_networks", map[string]any{"id": other.ID, "allowed_networks": []string{"10.0.0.0/8"}}, nil); !res.IsError || !strings.Contains(text(res), "no such") {
		t.Errorf("another tenant's key: %s", text(res))
	}
	var refused int
	for _, r := range auditRows(t, g, "acme.com") {
		if r.Decision == store.Denied && strings.Contains(r.Reason, "allowed_networks") {
			refused++
		}
	}
	if refused < 10 {
		t.Errorf("%d DENIED records for the refused networks, want each refusal", refused)
	}
}

// BenchmarkNetworkCheck: whoami through the whole handler with an
// unrestricted key, with a key limited to 64 networks whose last admits
// the caller (httptest's 192.0.2.1), and refused from elsewhere (403),
// in one run. Compare ns/op and allocs/op between them.
func BenchmarkNetworkCheck(b *testing.B) {
	g := newGatehouse(b, func(s *setup) { s.productionLog = true })
	nets := make([]string, 0, identity.MaxNetworks)
	for i := range identity.MaxNetworks - 1 {
		nets = append(nets, fmt.Sprintf("10.%d.0.0/16", i))
	}
	nets = append(nets, "192.0.2.1")
	open := g.key(b, "acme.com", tenancy.Admin)
	limited, _ := g.keyFrom(b, "acme.com", tenancy.Admin, nets...)
	elsewhere, _ := g.keyFrom(b, "acme.com", tenancy.Admin, "10.0.0.0/8")
	b.Run("unrestricted", func(b *testing.B) { benchHandler(b, g.srv.Handler(), "Bearer "+open, "whoami") })
	b.Run("64-networks", func(b *testing.B) { benchHandler(b, g.srv.Handler(), "Bearer "+limited, "whoami") })
	b.Run("refused", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(whoamiCall))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("MCP-Protocol-Version", "2025-06-18")
			req.Header.Set("Authorization", "Bearer "+elsewhere)
			rec := httptest.NewRecorder()
			g.srv.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusForbidden {
				b.Fatalf("status %d", rec.Code)
			}
		}
	})
}

// TestNetworkRefusalsConcurrently: refusals of one key from several
// addresses at once, released together, are each answered 403 and each
// counted once in the aggregated DENIED records of their address, while
// the key's calls from its network go on.
func TestNetworkRefusalsConcurrently(t *testing.T) {
	g := newGatehouse(t, trusting("127.0.0.1/32"))
	secret, k := g.keyFrom(t, "acme.com", tenancy.Admin, "10.0.0.0/8")
	const addrs, each = 4, 8
	start := make(chan struct{})
	var wg sync.WaitGroup
	codes := make(chan int, addrs*each*2)
	for a := range addrs {
		for range each {
			wg.Go(func() {
				<-start
				codes <- postVia(t, g.url, secret, whoamiCall, "X-Forwarded-For", fmt.Sprintf("198.51.100.%d", a+1)).status
				codes <- postVia(t, g.url, secret, whoamiCall, "X-Forwarded-For", fmt.Sprintf("10.0.0.%d", a+1)).status
			})
		}
	}
	close(start)
	wg.Wait()
	close(codes)
	got := map[int]int{}
	for c := range codes {
		got[c]++
	}
	if got[http.StatusForbidden] != addrs*each || got[http.StatusOK] != addrs*each {
		t.Errorf("answers %v, want %d of 403 and of 200", got, addrs*each)
	}
	counts := map[string]int{}
	for _, r := range auditRows(t, g, "acme.com") {
		if r.Decision == store.Denied && r.APIKeyID == k.ID {
			counts[r.ClientIP] += r.Count
		}
	}
	for a := range addrs {
		if ip := fmt.Sprintf("198.51.100.%d", a+1); counts[ip] != each {
			t.Errorf("refusals recorded from %s: %d, want %d (all: %v)", ip, counts[ip], each, counts)
		}
	}
	if len(counts) != addrs {
		t.Errorf("refusals recorded from %v, want only the %d refused addresses", counts, addrs)
	}
}

// TestNetworkRefusalsNeverSuspend: requests refused because the key may
// not be used from their address are not the key's use (whoever holds a
// copy elsewhere sends them), so however many there are, they raise at
// most a denial_burst alert and never a volume alert or a suspension, even
// with every suspendable kind asked to suspend; the key keeps working from
// its network.
func TestNetworkRefusalsNeverSuspend(t *testing.T) {
	g := newGatehouse(t, withAlerts(mcp.AlertOptions{Settings: alertSettings(),
		Suspend: []anomaly.Kind{anomaly.NewNetwork, anomaly.Volume, anomaly.OffHours}}))
	secret, k := g.keyFrom(t, "netalerts.example", tenancy.Developer, "10.0.0.0/8")
	if code := g.from(t, "10.0.0.5", secret, "whoami"); code != http.StatusOK {
		t.Fatal(code)
	}
	g.detect(t)
	for i := range 40 {
		if code := g.from(t, fmt.Sprintf("198.51.%d.%d", 100+i%5, 1+i), secret, "whoami"); code != http.StatusForbidden {
			t.Fatalf("from elsewhere: %d", code)
		}
	}
	for _, a := range g.detect(t) {
		if a.Kind != "denial_burst" || a.Suspended {
			t.Errorf("alert on refusals from other networks: %s %s (suspended %v)", a.Kind, a.Summary, a.Suspended)
		}
	}
	if k2, _ := g.db.FindAPIKeyByID(context.Background(), k.ID); !k2.RevokedAt.IsZero() {
		t.Fatal("refusals from other networks suspended the key")
	}
	if code := g.from(t, "10.0.0.5", secret, "whoami"); code != http.StatusOK {
		t.Errorf("the key from its network after the refusals: %d", code)
	}
}
