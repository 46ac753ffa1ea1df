package main

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
)

// TestMCPRemote signs in through mcp-remote (pinned in
// testdata/e2e/package.json), the stdio-to-HTTP bridge that desktop MCP
// clients use for remote servers, as a person would: a Go MCP client talks
// stdio to mcp-remote, which meets Gatehouse's 401, discovers and registers
// itself, and opens a "browser" on the authorization URL. The browser is
// this test's hook (BROWSER, and `open`/`xdg-open` first on PATH), and the
// person is an HTTP client with a cookie jar that follows the sign-in
// page, the upstream OIDC login (idptest) and the consent form back to
// mcp-remote's callback. Then tools are listed and called through it, and
// again after a restart, which reuses the stored tokens without a browser.
func TestMCPRemote(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs mcp-remote")
	}
	nodeDir(t)
	corp := idptest.NewIssuer(t, nil)
	corp.EnableLogin(t, "gatehouse-web", "corp-client-secret", "").SignInAs("erin-9", map[string]any{
		"email": "erin@acme.com", "email_verified": true, "name": "Erin"})
	s := runBinary(t, "GATEHOUSE_ALLOW_INSECURE_ISSUERS=true", // the fake issuer is plain http
		"GATEHOUSE_OIDC_ISSUER="+corp.URL, "GATEHOUSE_OIDC_AUDIENCE=corp-api", "GATEHOUSE_OIDC_NAME=corp",
		"GATEHOUSE_OIDC_LABEL=Corp SSO", "GATEHOUSE_OIDC_CLIENT_ID=gatehouse-web", "GATEHOUSE_OIDC_CLIENT_SECRET=corp-client-secret")

	// The browser: every way mcp-remote may open one lands in this script.
	hooks := t.TempDir()
	opened := filepath.Join(hooks, "opened")
	script := fmt.Sprintf("#!/bin/sh\nfor a; do last=$a; done\nprintf '%%s\\n' \"$last\" >>'%s'\n", opened)
	for _, name := range []string{"browser", "open", "xdg-open"} {
		if err := os.WriteFile(filepath.Join(hooks, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, port, _ := strings.Cut(strings.TrimPrefix(freeAddr(t), "127.0.0.1"), ":")
	config := t.TempDir() // where mcp-remote keeps its registration and tokens
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mcp-remote log:\n%s", logs.String())
		}
	})
	// start runs mcp-remote (stdio) under a Go MCP client.
	start := func(ctx context.Context) (*sdk.ClientSession, error) {
		cmd := nodeCmd(t, "mcp-remote", s.base+"/mcp", port)
		cmd.Env = append(cmd.Env, "BROWSER="+filepath.Join(hooks, "browser"), "MCP_REMOTE_CONFIG_DIR="+config,
			"PATH="+hooks+string(os.PathListSeparator)+envValue(cmd.Env, "PATH"))
		cmd.Stderr = logs
		client := sdk.NewClient(&sdk.Implementation{Name: "gatehouse-mcp-remote-e2e", Version: "1"}, nil)
		return client.Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	signedIn := make(chan error, 1)
	go func() { signedIn <- signInFromBrowser(ctx, opened, "corp", port) }()
	cs, err := start(ctx)
	if err != nil {
		t.Fatalf("connecting through mcp-remote: %v (sign-in: %v)", err, <-signedIn)
	}
	if err := <-signedIn; err != nil {
		t.Fatalf("sign-in: %v", err)
	}
	t.Logf("mcp-remote negotiated protocol %s", cs.InitializeResult().ProtocolVersion)
	listAndCallThrough(ctx, t, cs)
	if err := cs.Close(); err != nil {
		t.Logf("closing mcp-remote: %v", err)
	}

	// A restart (the desktop client relaunched) reuses the stored tokens:
	// no browser opens.
	cs, err = start(ctx)
	if err != nil {
		t.Fatalf("reconnecting through mcp-remote with stored tokens: %v", err)
	}
	defer cs.Close()
	listAndCallThrough(ctx, t, cs)
	if b, _ := os.ReadFile(opened); strings.Count(string(b), "\n") != 1 {
		t.Errorf("the browser was opened again on restart:\n%s", b)
	}
}

// listAndCallThrough lists tools and calls whoami through mcp-remote as
// Erin, acme.com's first member (admin), signed in with Corp SSO.
func listAndCallThrough(ctx context.Context, t *testing.T, cs *sdk.ClientSession) {
	t.Helper()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list through mcp-remote: %v", err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	for _, want := range []string{"whoami", "add_todo", "list_todos"} {
		if !slices.Contains(names, want) {
			t.Errorf("tools/list through mcp-remote lacks %s: %v", want, names)
		}
	}
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "whoami", Arguments: map[string]any{}})
	if err != nil || res.IsError {
		t.Fatalf("whoami through mcp-remote: %v %+v", err, res)
	}
	who, _ := res.StructuredContent.(map[string]any)
	if who["subject"] != "corp:erin-9" || who["tenant"] != "acme.com" || who["role"] != "admin" {
		t.Errorf("whoami through mcp-remote: %v", res.StructuredContent)
	}
}

// signInFromBrowser waits for the URL the browser hook recorded in opened,
// then is the person in the browser: a cookie jar, redirects followed, the
// sign-in page's button for provider, the upstream login (idptest signs in
// at once), the consent form allowed; it ends on mcp-remote's callback at
// 127.0.0.1:port or localhost:port.
func signInFromBrowser(ctx context.Context, opened, provider, port string) error {
	var authURL string
	for authURL == "" {
		b, _ := os.ReadFile(opened)
		authURL, _, _ = strings.Cut(string(b), "\n")
		if authURL != "" {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no browser was opened: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	get := func(u string) (*http.Response, string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		return fetch(browser, req)
	}
	res, body, err := get(authURL)
	if err != nil {
		return err
	}
	if m := regexp.MustCompile(`href="(/oauth/login/` + provider + `\?[^"]+)"`).FindStringSubmatch(body); m != nil {
		next, _ := res.Request.URL.Parse(html.UnescapeString(m[1]))
		if res, body, err = get(next.String()); err != nil {
			return err
		}
	}
	if !strings.Contains(body, `action="/oauth/consent"`) {
		return fmt.Errorf("expected the consent page at %s (%d):\n%s", res.Request.URL, res.StatusCode, body)
	}
	form := url.Values{}
	for _, m := range regexp.MustCompile(`<input type="hidden" name="(\w+)" value="([^"]*)">`).FindAllStringSubmatch(body, -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	form.Set("decision", "allow")
	action, _ := res.Request.URL.Parse("/oauth/consent")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, body, err = fetch(browser, req)
	if err != nil {
		return err
	}
	if res.Request.URL.Port() != port || res.StatusCode != http.StatusOK {
		return fmt.Errorf("consent ended at %s (%d), not mcp-remote's callback on port %s:\n%s", res.Request.URL, res.StatusCode, port, body)
	}
	return nil
}

func fetch(c *http.Client, req *http.Request) (*http.Response, string, error) {
	res, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return res, string(b), err
}

// envValue is the last value of key in env (exec's rule for duplicates).
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}
