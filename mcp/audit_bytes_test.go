package mcp_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// rawPost sends a POST to /mcp byte for byte as given (no client-side
// header validation), and returns the status and body; status 0 means the
// server closed the connection without answering.
func rawPost(t *testing.T, g *gatehouse, headers []string, body string) (int, string) {
	t.Helper()
	status, _, b := rawPostHeaders(t, g, headers, body)
	return status, b
}

// rawPostHeaders is rawPost, also returning the answer's headers.
func rawPostHeaders(t *testing.T, g *gatehouse, headers []string, body string) (int, http.Header, string) {
	t.Helper()
	u, _ := url.Parse(g.url)
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "POST /mcp HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n", u.Host)
	fmt.Fprintf(&b, "MCP-Protocol-Version: 2025-06-18\r\nContent-Length: %d\r\nConnection: close\r\n", len(body))
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n" + body)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, ""
	}
	defer res.Body.Close()
	rb, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(rb)
}

// TestAuditSurvivesAnyBytes sends the odd-bytes family in the User-Agent
// (and other headers) through the real HTTP pipeline for an allowed call, a
// denied call, a rate-limited call and a refused credential: no call fails
// for it, every decision is in the tenant's audit table (or the
// control-plane record of failed authentications), cleaned, and the chain
// verifies. (Go's HTTP server itself refuses header values with control
// characters with 400 before any of our code runs; that is an answer too.)
func TestAuditSurvivesAnyBytes(t *testing.T) {
	g := newGatehouse(t, withLimits(tenancy.Limits{Principal: tenancy.Rate{PerMinute: 1, Burst: 1},
		AuthFailure: tenancy.Rate{PerMinute: 6000, Burst: 1000}}))
	agents := []string{
		"x\xffy",
		"overlong \xc0\x80 \xe0\x80\xaf",
		"surrogate \xed\xa0\x80",
		"truncated \xe2\x82",
		"nul \x00 inside",
		"escape \x1b[31m",
		"del \x7f",
		"latin1 caf\xe9",
		strings.Repeat("\xff", 50000),
		strings.Repeat("é", 20000),
	}
	ctx := context.Background()
	answered := 0
	for i, ua := range agents {
		// A fresh key per agent: its first call is allowed, its second is
		// rate limited (1 a minute).
		dev := g.key(t, "acme.com", tenancy.Developer)
		viewer := g.key(t, "acme.com", tenancy.Viewer)
		headers := func(key string) []string {
			return []string{"Authorization: Bearer " + key, "User-Agent: " + ua, "X-Request-Id: " + ua, "X-Forwarded-For: " + ua}
		}
		args := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_todo","arguments":{"title":"agent %d"}}}`, i)
		for _, c := range []struct {
			name string
			key  string
		}{{"allowed", dev}, {"rate limited", dev}, {"denied", viewer}, {"bad credential", "gk_bogus"}} {
			status, body := rawPost(t, g, headers(c.key), args)
			switch {
			case status == http.StatusBadRequest && strings.ContainsAny(ua, "\x00\x1b\x7f"):
				// refused by net/http: control characters in a header
			case status == 0 || status >= 500 || strings.Contains(body, "internal error"):
				t.Errorf("agent %d (%.20q), %s call: %d %s", i, ua, c.name, status, body)
			default:
				answered++
			}
		}
	}
	if answered < 20 {
		t.Fatalf("only %d calls got through to Gatehouse; the test exercises too little", answered)
	}
	recs := auditRows(t, g, "acme.com")
	decisions := map[string]int{}
	for _, r := range recs {
		decisions[r.Decision] += r.Count
		for name, v := range map[string]string{"user_agent": r.UserAgent, "request_id": r.RequestID, "client_ip": r.ClientIP} {
			if !utf8.ValidString(v) || strings.ContainsAny(v, "\x00\x1b\x7f") || len(v) > 256 {
				t.Errorf("record %d: %s %.40q is not clean", r.ID, name, v)
			}
		}
		if r.ChainSeq == 0 {
			t.Errorf("record %d not chained", r.ID)
		}
	}
	// Every agent Go's server let through had an allowed, a rate-limited and
	// a denied call; each left its record.
	through := answered / 4
	if decisions[store.Allowed] != through || decisions[store.RateLimited] != through || decisions[store.Denied] != through || decisions[store.Failed] != 0 {
		t.Errorf("decisions %v for %d agents let through; want one ALLOWED, RATE_LIMITED and DENIED each, no ERROR", decisions, through)
	}
	tn, _ := g.db.FindTenantByKey(ctx, "acme.com")
	if rep, err := g.db.VerifyAudit(ctx, tn, testAuditKey); err != nil || !rep.OK() || rep.Pending != 0 {
		t.Errorf("chain: %+v %v", rep, err)
	}
	var failures int
	if err := g.db.Pool().QueryRow(ctx, "SELECT coalesce(sum(count), 0) FROM gatehouse.auth_failures").Scan(&failures); err != nil || failures != through {
		t.Errorf("%d failed authentications recorded, want %d (%v)", failures, through, err)
	}
	if strings.Contains(g.logs.String(), `"level":"ERROR"`) {
		t.Errorf("odd bytes caused ERROR log lines:\n%s", g.logs.String())
	}
}
