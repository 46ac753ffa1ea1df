package mcp_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func withLimits(l tenancy.Limits) func(*setup) { return func(s *setup) { s.limits = &l } }

const whoamiCall = `{"jsonrpc":"2.0","id":"req-7","method":"tools/call","params":{"name":"whoami","arguments":{}}}`

func TestRateLimitPerPrincipalAndTenant(t *testing.T) {
	g := newGatehouse(t, withLimits(tenancy.Limits{
		Tenant:    tenancy.Rate{PerMinute: 60, Burst: 5},
		Principal: tenancy.Rate{PerMinute: 60, Burst: 3},
	}))
	alice, bob := g.key(t, "acme.com", tenancy.Admin), g.key(t, "acme.com", tenancy.Admin)
	carol := g.key(t, "globex.com", tenancy.Admin)
	for i := range 3 {
		res := post(t, g.url, "Bearer "+alice, whoamiCall)
		if res.StatusCode != http.StatusOK || res.Header.Get("RateLimit") == "" || res.Header.Get("RateLimit-Policy") == "" {
			t.Fatalf("alice request %d: %d, RateLimit %q", i, res.StatusCode, res.Header.Get("RateLimit"))
		}
	}
	res := post(t, g.url, "Bearer "+alice, whoamiCall)
	var body struct {
		ID    string `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.NewDecoder(res.Body).Decode(&body)
	retry, _ := strconv.Atoi(res.Header.Get("Retry-After"))
	if res.StatusCode != http.StatusTooManyRequests || retry < 1 || body.ID != "req-7" || body.Error.Code != -32029 ||
		!strings.Contains(body.Error.Message, "retry in") || !strings.Contains(res.Header.Get("RateLimit"), `"principal";r=0`) {
		t.Errorf("4th request: %d, Retry-After %q, RateLimit %q, body %+v", res.StatusCode, res.Header.Get("Retry-After"), res.Header.Get("RateLimit"), body)
	}
	// Bob, same tenant, still has his own allowance, but the tenant's burst
	// of 5 is shared: two more requests, then the tenant limit answers.
	for i, want := range []int{200, 200, 429} {
		if res := post(t, g.url, "Bearer "+bob, whoamiCall); res.StatusCode != want {
			t.Errorf("bob request %d: %d, want %d", i, res.StatusCode, want)
		} else if want == 429 && !strings.Contains(res.Header.Get("RateLimit"), `"tenant"`) {
			t.Errorf("bob denied by %q, want the tenant limit", res.Header.Get("RateLimit"))
		}
	}
	// Another tenant is not affected.
	if res := post(t, g.url, "Bearer "+carol, whoamiCall); res.StatusCode != http.StatusOK {
		t.Errorf("other tenant: %d", res.StatusCode)
	}
}

// TestFailedAuthenticationIsThrottledPerIP: guessing keys from one address
// turns into 429s after the allowance, without checking further guesses.
func TestFailedAuthenticationIsThrottledPerIP(t *testing.T) {
	g := newGatehouse(t, withLimits(tenancy.Limits{AuthFailure: tenancy.Rate{PerMinute: 6, Burst: 3}}))
	good := g.key(t, "acme.com", tenancy.Admin)
	codes := []int{}
	for i := range 6 {
		guess := "gk_aaaaaaaaaaaaaaaa_" + strings.Repeat(strconv.Itoa(i), 43)
		codes = append(codes, post(t, g.url, "Bearer "+guess, whoamiCall).StatusCode)
	}
	// Three failures fit the burst, the fourth is charged and denied (still
	// answered 401), and from then on the address gets 429 without a check.
	if want := []int{401, 401, 401, 401, 429, 429}; !slices.Equal(codes, want) {
		t.Errorf("status codes %v, want %v", codes, want)
	}
	if res := post(t, g.url, "Bearer "+good, whoamiCall); res.StatusCode != http.StatusTooManyRequests {
		t.Errorf("good key from a throttled address: %d, want 429 until the retry time", res.StatusCode)
	}
	// A missing token is not a guess.
	g2 := newGatehouse(t, withLimits(tenancy.Limits{AuthFailure: tenancy.Rate{PerMinute: 6, Burst: 1}}))
	for range 3 {
		if res := post(t, g2.url, "", whoamiCall); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("missing token: %d, want 401", res.StatusCode)
		}
	}
}
