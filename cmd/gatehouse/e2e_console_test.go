package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
	"github.com/gatehouse-mcp/gatehouse/internal/testdeps"
)

// TestConsoleInChromium is issue 14's journey in a real browser (Debian's
// Chromium, headless, through chromedp) against the built binary, with a
// test OIDC issuer as the identity provider: an org admin signs in, reads
// the Connect page, creates a key for CI, the key works at /mcp with the
// MCP Inspector CLI, they revoke it in the console, a second replica then
// answers the key 401, and the audit page shows both changes and
// "Verified". Every page is photographed into the test's artifact
// directory (go test -artifacts keeps them; GATEHOUSE_CONSOLE_SCREENSHOTS
// names another directory, such as docs/console, to refresh the docs'
// pictures), and each picture is checked to be non-empty.
func TestConsoleInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs Chromium")
	}
	chromium := testdeps.Need(t, testdeps.Chromium)
	nodeDir(t)
	corp := idptest.NewIssuer(t, nil)
	corp.EnableLogin(t, "gatehouse-web", "corp-client-secret", "").SignInAs("ada-1", map[string]any{
		"email": "ada@acme.com", "email_verified": true, "name": "Ada Lovelace"})
	env := []string{"GATEHOUSE_ALLOW_INSECURE_ISSUERS=true",
		"GATEHOUSE_OIDC_ISSUER=" + corp.URL, "GATEHOUSE_OIDC_AUDIENCE=corp-api", "GATEHOUSE_OIDC_NAME=corp",
		"GATEHOUSE_OIDC_LABEL=Corp SSO", "GATEHOUSE_OIDC_CLIENT_ID=gatehouse-web", "GATEHOUSE_OIDC_CLIENT_SECRET=corp-client-secret",
		"GATEHOUSE_SIGNING_KEY=e2e-signing-key-0123456789abcdef", "GATEHOUSE_AUDIT_KEY=e2e-audit-key-0123456789abcdef0123",
		"GATEHOUSE_OPERATORS=corp:ada-1"}
	a := runBinary(t, env...)
	b := runBinaryOn(t, a.dataDir, env...) // a second replica on the same database
	// The browser uses the public URL (the listening address here), so the
	// sign-in's cookies and redirects stay on one origin.
	base := a.base

	shots := t.ArtifactDir()
	if d := os.Getenv("GATEHOUSE_CONSOLE_SCREENSHOTS"); d != "" {
		shots = d
	}
	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 800),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true))
	defer cancel()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			body, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("body")))
			t.Fatalf("browser: %s: %v\nat %s:\n%s", what, err, loc, body)
		}
	}
	// submit clicks a form's button and waits for the page it loads: a
	// WaitVisible right after a click can run in the old page's context,
	// which the navigation destroys ("Cannot find context with specified
	// id").
	submit := func(what, button string) {
		t.Helper()
		if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(button))); err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
	}
	eval := func(js string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("browser: %s: %v", js, err)
		}
		return v
	}
	shoot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("photographing %s: %v", name, err)
		}
		if len(png) < 1000 {
			t.Errorf("screenshot %s is %d bytes", name, len(png))
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return s
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	// Sign in: the console sends a signed-out visitor to its sign-in page.
	do("opening the console", chromedp.Navigate(base+"/console"), chromedp.WaitVisible(css("a.button")))
	shoot("signin")
	// Keyboard: the first Tab reaches the skip link.
	do("tabbing", chromedp.KeyEvent("\t"))
	if focused := eval(`document.activeElement.className`); focused != "skip" {
		t.Errorf("the first Tab focuses %q, not the skip link", focused)
	}
	do("signing in", chromedp.Click(css("a.button")), chromedp.WaitVisible(css("#mcp-url")))
	if got := text("#mcp-url"); got != base+"/mcp" {
		t.Errorf("the Connect page names %q, want %q", got, base+"/mcp")
	}
	if shown := eval(`String(!document.querySelector("button[data-copy]").hidden)`); shown != "true" {
		t.Error("the copy buttons stayed hidden: the console's script did not run (CSP?)")
	}
	shoot("connect")

	// Create a key for CI.
	do("creating a key", chromedp.Navigate(base+"/console/keys"), chromedp.WaitVisible(css("#key-name")),
		chromedp.SendKeys(css("#key-name"), "CI deploy"),
		chromedp.SetValue(css("#key-role"), "developer"))
	submit("creating a key", "button.primary")
	do("reading the new key", chromedp.WaitVisible(css("#secret")))
	secret := strings.TrimSpace(text("#secret"))
	shoot("key-created")
	if !strings.HasPrefix(secret, "gk_") {
		t.Fatalf("the page shows %q as the key", secret)
	}
	out, err := a.inspector(t, secret, "--method", "tools/list")
	if err != nil || !strings.Contains(out, "whoami") {
		t.Fatalf("the new key with the MCP Inspector CLI: %v\n%s", err, out)
	}
	if out, err := a.inspector(t, secret, "--method", "tools/call", "--tool-name", "whoami"); err != nil || !strings.Contains(out, "acme.com") {
		t.Fatalf("whoami with the new key through the Inspector CLI: %v\n%s", err, out)
	}

	// Revoke it in the console; the other replica refuses it soon after.
	do("opening the keys", chromedp.Navigate(base+"/console/keys"), chromedp.WaitVisible(css(`form[action$="/revoke"] button`)))
	submit("revoking the key", `form[action$="/revoke"] button`)
	do("reading the notice", chromedp.WaitVisible(css("p.notice")))
	shoot("key-revoked")
	revoked := time.Now()
	status := 0
	for time.Since(revoked) < 10*time.Second {
		if status = mcpStatus(t, b.base, secret); status == http.StatusUnauthorized {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status != http.StatusUnauthorized {
		t.Fatalf("the revoked key at the second replica: %d, want 401", status)
	}
	t.Logf("the second replica refused the revoked key %v after the console answered", time.Since(revoked).Round(time.Millisecond))

	// The audit page shows both changes and the key's call; verifying the
	// chain says "Verified". (Records are chained within a second of
	// their commit; verification covers what is chained.)
	var missing []string
	for try := 0; try < 3; try++ {
		time.Sleep(1500 * time.Millisecond)
		do("opening the audit log", chromedp.Navigate(base+"/console/admin/audit"),
			chromedp.WaitVisible(css(`form[action="/console/admin/audit/verify"] button`)))
		submit("verifying the chain", `form[action="/console/admin/audit/verify"] button`)
		do("reading the chain status", chromedp.WaitVisible(css("#chain-status")))
		page := text("main")
		missing = nil
		for _, want := range []string{"create_my_api_key", "revoke_my_api_key", "whoami", "console", "Verified"} {
			if !strings.Contains(page, want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 {
			break
		}
		t.Logf("the audit page lacks %q (try %d); chain status: %s", missing, try+1, text("#chain-status"))
	}
	if len(missing) > 0 {
		t.Errorf("the audit page lacks %q:\n%s", missing, text("main"))
	}
	shoot("audit")

	for _, p := range []struct{ name, path, sel string }{
		{"members", "/console/admin/members", "table"},
		{"organisation-keys", "/console/admin/keys", "table"},
		{"usage", "/console/admin/usage", "svg.chart"},
		{"alerts", "/console/admin/alerts", "table"},
		{"signins", "/console/signins", "table"},
		{"operator", "/console/operator", "table"},
	} {
		do("opening "+p.path, chromedp.Navigate(base+p.path), chromedp.WaitVisible(css(p.sel)))
		shoot(p.name)
	}
	// Readable at 320 px wide and in dark mode.
	do("a phone-sized window", chromedp.EmulateViewport(320, 640), chromedp.Navigate(base+"/console/connect"),
		chromedp.WaitVisible(css("#mcp-url")))
	if w := eval(`String(document.documentElement.scrollWidth)`); w != "320" {
		t.Errorf("at 320 px the Connect page is %s px wide (scrolls sideways)", w)
	}
	shoot("connect-320px")
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	do("dark mode", chromedp.EmulateViewport(1100, 800), chromedp.Navigate(base+"/console/admin/audit"), chromedp.WaitVisible(css("table")))
	if bg := eval(`getComputedStyle(document.body).backgroundColor`); bg != "rgb(13, 17, 23)" {
		t.Errorf("dark mode background is %s", bg)
	}
	shoot("audit-dark")
}

// mcpStatus sends tools/list to base's /mcp with token.
func mcpStatus(t *testing.T, base, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
