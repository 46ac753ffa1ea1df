package mcp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestRememberedRefusalAnsweredAlike: once a credential is refused for its
// rate limit, its next requests are answered before the middleware (the
// remembered denial); the answer is the same as the full path's (status,
// headers, JSON-RPC error for the request's id), both refusals land in the
// aggregated audit record, and another tenant is not affected.
func TestRememberedRefusalAnsweredAlike(t *testing.T) {
	g := newGatehouse(t, withLimits(tenancy.Limits{Tenant: tenancy.Rate{PerMinute: 1, Burst: 1}}))
	key := g.key(t, "flood.example", tenancy.Admin)
	other := g.key(t, "calm.example", tenancy.Admin)
	if res := post(t, g.url, "Bearer "+key, whoamiCall); res.StatusCode != http.StatusOK {
		t.Fatalf("first call: %d", res.StatusCode)
	}
	type answer struct {
		status  int
		headers []string
		body    map[string]any
	}
	get := func(id string) answer {
		res := post(t, g.url, "Bearer "+key, strings.Replace(whoamiCall, `"req-7"`, id, 1))
		var a answer
		a.status = res.StatusCode
		for k := range res.Header {
			if k != "Date" && k != "Content-Length" {
				a.headers = append(a.headers, k)
			}
		}
		slices.Sort(a.headers)
		if err := json.Unmarshal([]byte(readBody(t, res)), &a.body); err != nil {
			t.Fatal(err)
		}
		e := a.body["error"].(map[string]any)
		delete(e["data"].(map[string]any), "retry_after_seconds")
		e["message"] = strings.Split(e["message"].(string), ": retry in")[0]
		return a
	}
	full := get(`"full"`) // refused by the whole pipeline, then remembered
	fast := get(`"fast"`) // answered at the door
	if full.status != http.StatusTooManyRequests || fast.status != full.status {
		t.Errorf("statuses: %d then %d, want 429 twice", full.status, fast.status)
	}
	if !slices.Equal(full.headers, fast.headers) {
		t.Errorf("headers differ:\nfull %v\nfast %v", full.headers, fast.headers)
	}
	if full.body["id"] != "full" || fast.body["id"] != "fast" {
		t.Errorf("ids: %v, %v", full.body["id"], fast.body["id"])
	}
	fe, _ := json.Marshal(full.body["error"])
	ge, _ := json.Marshal(fast.body["error"])
	if string(fe) != string(ge) || !strings.Contains(string(fe), "-32029") {
		t.Errorf("errors differ:\nfull %s\nfast %s", fe, ge)
	}
	if res := post(t, g.url, "Bearer "+other, whoamiCall); res.StatusCode != http.StatusOK {
		t.Errorf("another tenant: %d", res.StatusCode)
	}
	// A browser's request takes the full path, where the origin check
	// comes first: a foreign origin is refused as such, not rate-limited.
	req, _ := http.NewRequest(http.MethodPost, g.url, strings.NewReader(whoamiCall))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Origin", "https://elsewhere.example")
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusForbidden {
		t.Errorf("a foreign origin with a refused credential: %v %v, want 403", res, err)
	} else {
		res.Body.Close()
	}
	g.srv.FlushAudit(context.Background())
	if !strings.Contains(g.audit.String(), `"decision":"RATE_LIMITED"`) || !strings.Contains(g.audit.String(), `"count":2`) {
		t.Errorf("the two refusals are not one aggregated audit record of count 2:\n%s", g.audit.String())
	}
}

// TestRememberedRefusalFromBrowsers: a remembered refusal does not bypass
// what browsers are owed: a page on an allowed origin still reads the 429
// (Access-Control-Allow-Origin), and a page on any other origin is still
// refused for its origin (403), for several origins of each kind.
func TestRememberedRefusalFromBrowsers(t *testing.T) {
	allowed := []string{"http://localhost:6274", "https://app.example.com"}
	g := newGatehouse(t, withLimits(tenancy.Limits{Tenant: tenancy.Rate{PerMinute: 1, Burst: 1}}),
		func(su *setup) { su.origins = allowed })
	key := g.key(t, "flood.example", tenancy.Admin)
	call := func(origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, g.url, strings.NewReader(whoamiCall))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+key)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, res)
		return res
	}
	call("")
	if res := call(""); res.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second call: %d, want 429 (and remembered)", res.StatusCode)
	}
	for _, o := range allowed {
		res := call(o)
		if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Access-Control-Allow-Origin") != o {
			t.Errorf("allowed origin %s: %d, Access-Control-Allow-Origin %q", o, res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
		}
	}
	for _, o := range []string{"https://evil.example", "http://localhost:6275", "null"} {
		res := call(o)
		if res.StatusCode != http.StatusForbidden || res.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("other origin %s: %d, Access-Control-Allow-Origin %q", o, res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
		}
	}
}
