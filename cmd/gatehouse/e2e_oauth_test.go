package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
)

// TestEndToEndSignIn configures sign-in through the environment alone,
// against fakes of GitHub's OAuth web flow and of a corporate OIDC issuer,
// and signs in from the official TypeScript SDK's client auth: from a bare
// 401 to tools/call, then a refresh.
func TestEndToEndSignIn(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs the TypeScript SDK")
	}
	dir := nodeDir(t)
	gh := idptest.NewGitHub(t, "Ov23signin", "github-app-secret")
	gh.EnableLogin("").SignInAs(idptest.GitHubGrant{User: idptest.GitHubUser{ID: 4242, Login: "alice", Name: "Alice",
		Emails: []idptest.GitHubEmail{{Email: "alice@acme.com", Primary: true, Verified: true}}}})
	corp := idptest.NewIssuer(t, nil)
	corp.EnableLogin(t, "gatehouse-web", "corp-client-secret", "").SignInAs("bob-7", map[string]any{
		"email": "bob@acme.com", "email_verified": true, "name": "Bob"})

	s := runBinary(t,
		"GATEHOUSE_ALLOW_INSECURE_ISSUERS=true", // the fakes are plain http
		"GATEHOUSE_GITHUB_CLIENT_ID=Ov23signin", "GATEHOUSE_GITHUB_CLIENT_SECRET=github-app-secret",
		"GATEHOUSE_GITHUB_API_URL="+gh.URL(), "GATEHOUSE_GITHUB_WEB_URL="+gh.WebURL(),
		"GATEHOUSE_OIDC_ISSUER="+corp.URL, "GATEHOUSE_OIDC_AUDIENCE=corp-api", "GATEHOUSE_OIDC_NAME=corp",
		"GATEHOUSE_OIDC_LABEL=Corp SSO", "GATEHOUSE_OIDC_CLIENT_ID=gatehouse-web", "GATEHOUSE_OIDC_CLIENT_SECRET=corp-client-secret",
		"GATEHOUSE_SIGNING_KEY=e2e-signing-key-0123456789abcdef")
	if !strings.Contains(s.logs.String(), `"msg":"sign-in for MCP clients","providers":["github","corp"]`) {
		t.Errorf("the start-up log does not list the sign-in providers")
	}

	// Alice (GitHub) signs in first and is acme.com's admin; Bob (Corp SSO)
	// joins her organisation as a developer.
	for _, tc := range []struct{ provider, subject, role string }{{"github", "github:4242", "admin"}, {"corp", "corp:bob-7", "developer"}} {
		t.Run(tc.provider, func(t *testing.T) {
			cmd := exec.Command("node", "oauth-client.mjs", s.base+"/mcp", tc.provider)
			cmd.Dir = dir
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("TypeScript SDK client: %v\n%s\n%s", err, out, stderr.String())
			}
			steps := map[string]map[string]any{}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				var st map[string]any
				if err := json.Unmarshal([]byte(line), &st); err != nil {
					t.Fatalf("client output %q: %v", line, err)
				}
				steps[st["step"].(string)] = st
			}
			if id, _ := steps["registered"]["client_id"].(string); !strings.HasPrefix(id, "gh_") {
				t.Errorf("registration: %v", steps["registered"])
			}
			if a := steps["authorized"]; a["has_refresh"] != true || a["expires_in"] != 3600.0 || a["scope"] != "mcp:read mcp:write" {
				t.Errorf("tokens: %v", a)
			}
			for _, name := range []string{"whoami", "whoami-after-refresh"} {
				who, _ := steps[name]["result"].(map[string]any)
				if who["subject"] != tc.subject || who["tenant"] != "acme.com" || who["role"] != tc.role {
					t.Errorf("%s: %v", name, steps[name])
				}
			}
			if r := steps["refreshed"]; r["result"] != "AUTHORIZED" || r["access_changed"] != true || r["refresh_changed"] != true {
				t.Errorf("refresh: %v", r)
			}
		})
	}
	// A developer token from the CLI (embedded database: allowed) works
	// with MCP Inspector.
	tok := strings.TrimSpace(s.cli(t, "token", "mint", "--tenant", "acme.com", "--subject", "ci", "--role", "viewer", "--ttl", "10m"))
	out, err := s.inspector(t, tok, "--method", "tools/call", "--tool-name", "whoami")
	if err != nil || !strings.Contains(out, `"subject": "dev:ci"`) || !strings.Contains(out, `"role": "viewer"`) {
		t.Errorf("developer token via inspector: %v\n%s", err, out)
	}
	s.stop(t)
	for _, secret := range []string{"github-app-secret", "corp-client-secret", "e2e-signing-key", tok} {
		if strings.Contains(s.logs.String(), secret) {
			t.Errorf("a secret (%.12s…) appears in the server log", secret)
		}
	}
}
