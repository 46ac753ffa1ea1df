package mcp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gatehouse-mcp/gatehouse/internal/testdeps"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// browserFetch is what a page's fetch saw.
type browserFetch struct {
	Status    int    `json:"status"`
	Body      string `json:"body"`
	Challenge string `json:"challenge"`
	Error     string `json:"error"`
}

// fetchFrom loads page in the browser and runs fetch(url, init) there.
func fetchFrom(t *testing.T, ctx context.Context, page, url, init string) browserFetch {
	t.Helper()
	js := fmt.Sprintf(`(async () => {
		try {
			const r = await fetch(%q, %s);
			return JSON.stringify({status: r.status, body: await r.text(), challenge: r.headers.get("WWW-Authenticate") || ""});
		} catch (e) { return JSON.stringify({error: String(e)}); }
	})()`, url, init)
	if _, err := chromedp.Run(ctx, chromedp.Navigate(page)); err != nil {
		t.Fatalf("browser: loading %s: %v", page, err)
	}
	out, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	var f browserFetch
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		t.Fatalf("browser result %s: %v", out, err)
	}
	return f
}

// TestCORSInChromium: Debian's Chromium, headless, loads a page from
// another loopback origin and calls /mcp with fetch and an API key: from
// an allowed origin it works (and a 401's challenge is readable); from any
// other the browser refuses, and the request either never reaches
// Gatehouse (preflight) or is refused before authentication.
func TestCORSInChromium(t *testing.T) {
	chromium := testdeps.Need(t, testdeps.Chromium)
	site := func() (origin string) {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<!doctype html><title>web client</title>"))
		}))
		t.Cleanup(s.Close)
		return strings.Replace(s.URL, "127.0.0.1", "localhost", 1)
	}
	app, other := site(), site()
	g := newGatehouse(t, func(su *setup) { su.origins = []string{app} })
	key := g.key(t, "acme.com", tenancy.Developer)
	otherKey, k := g.keyWith(t, "acme.com", tenancy.Developer, time.Time{})

	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true))
	defer cancel()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	mcpInit := func(token string) string {
		h := `"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-11-25"`
		if token != "" {
			h += `, "Authorization": "Bearer ` + token + `"`
		}
		return `{method: "POST", headers: {` + h + `}, body: JSON.stringify({jsonrpc: "2.0", id: 1, method: "tools/call", params: {name: "whoami", arguments: {}}})}`
	}
	if f := fetchFrom(t, ctx, app, g.url, mcpInit(key)); f.Status != 200 || !strings.Contains(f.Body, `acme.com`) {
		t.Errorf("from the allowed origin with an API key: %+v", f)
	}
	if f := fetchFrom(t, ctx, app, g.url, mcpInit("")); f.Status != 401 || !strings.Contains(f.Challenge, "resource_metadata=") {
		t.Errorf("from the allowed origin without a key, the challenge is not readable: %+v", f)
	}
	// The metadata a browser client discovers first is readable from anywhere.
	if f := fetchFrom(t, ctx, other, g.ts.URL+"/.well-known/oauth-protected-resource/mcp", `{headers: {"Mcp-Protocol-Version": "2025-11-25"}}`); f.Status != 200 || !strings.Contains(f.Body, g.url) {
		t.Errorf("protected resource metadata from another origin: %+v", f)
	}

	if f := fetchFrom(t, ctx, other, g.url, mcpInit(otherKey)); f.Error == "" {
		t.Errorf("from another origin with an API key, the browser let the page read: %+v", f)
	}
	// A request that needs no preflight reaches Gatehouse and is refused
	// before authentication.
	if f := fetchFrom(t, ctx, other, g.url, `{method: "POST", headers: {"Content-Type": "text/plain"}, body: "{}"}`); f.Error == "" {
		t.Errorf("a simple request from another origin was readable: %+v", f)
	}
	if !strings.Contains(g.logs.String(), `"msg":"cross-origin request refused"`) {
		t.Error("the simple cross-origin request was not refused by the origin check")
	}
	g.srv.FlushAudit(context.Background())
	if strings.Contains(g.audit.String(), k.ID) {
		t.Error("a call with the key used from another origin was audited: it reached a tool")
	}
}
