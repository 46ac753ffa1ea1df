package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAlertsEndToEnd: `gatehouse serve` with the alert settings in its
// environment runs the detector: a key used from a new network (behind a
// trusted proxy) raises a new_network alert, which, with
// GATEHOUSE_ALERT_SUSPEND=new_network, revokes the key.
func TestAlertsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	s := runBinary(t, "GATEHOUSE_TRUSTED_PROXIES=127.0.0.0/8,::1/128", "GATEHOUSE_ALERT_INTERVAL=1s",
		"GATEHOUSE_ALERT_LEARNING=1ms", "GATEHOUSE_ALERT_SUSPEND=new_network")
	key := strings.TrimSpace(s.cli(t, "apikey", "create", "--tenant", "acme.com", "--role", "developer", "--name", "e2e alerts"))
	call := func(ip string) int {
		req, _ := http.NewRequest(http.MethodPost, s.base+"/mcp",
			strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("X-Forwarded-For", ip)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, res.Body)
		return res.StatusCode
	}
	if code := call("198.51.100.7"); code != http.StatusOK {
		t.Fatalf("first call: %d", code)
	}
	time.Sleep(3 * time.Second) // chained, then read by a pass
	if code := call("203.0.113.9"); code != http.StatusOK {
		t.Fatalf("call from a new network: %d (alerts never block by themselves)", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	for call("198.51.100.7") != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatalf("the key still works 30 s after its use from a new network; log:\n%s", s.logs.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains(s.logs.String(), `"msg":"anomaly alert"`) || !strings.Contains(s.logs.String(), `"kind":"new_network"`) {
		t.Errorf("no alert in the log:\n%s", s.logs.String())
	}
	res, err := http.Get(s.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if !strings.Contains(string(b), `gatehouse_alert_suspensions_total{kind="new_network"} 1`) {
		t.Errorf("metrics lack the suspension")
	}
}
