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
