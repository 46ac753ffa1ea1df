package main

import (
	"bytes"
	"encoding/json"
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
	nodeDir(t)
	gh := idptest.NewGitHub(t, "Ov23signin", "github-app-secret")
	gh.EnableLogin("").SignInAs(idptest.GitHubGrant{User: idptest.GitHubUser{ID: 4242, Login: "alice", Name: "Alice",
		Emails: []idptest.GitHubEmail{{Email: "alice@acme.com", Primary: true, Verified: true}}}})
	corp := idptest.NewIssuer(t, nil)
	corp.EnableLogin(t, "gatehouse-web", "corp-client-secret", "").SignInAs("bob-7", map[string]any{
		"email": "bob@acme.com", "email_verified": true, "name": "Bob"})
	google := idptest.NewIssuer(t, nil)
	google.EnableLogin(t, "e2e.apps.googleusercontent.com", "GOCSPX-e2e-secret", "").SignInAs("110248", map[string]any{
		"email": "dave@gmail.com", "email_verified": true, "name": "Dave"})
	// Auth0 issues a JWT access token for the API audience Gatehouse asks
	// for; its /userinfo tells the email.
	a0 := idptest.NewIssuer(t, &idptest.Options{Suffix: "/"})
	a0users := idptest.NewAuth0(t, a0)
	a0login := a0.EnableLogin(t, "auth0-app", "auth0-app-secret", "")
	a0login.SignInAs("auth0|carol", nil)
	a0login.AccessToken = func(sub string, _ map[string]any, audience string) string {
		if audience != "https://mcp.e2e.example/" {
			t.Errorf("Auth0 sign-in asked for audience %q", audience)
		}
		return a0users.Mint(idptest.Auth0User{Sub: sub, Email: "carol@acme.com", Name: "Carol Example"}, []string{audience, a0.URL + "userinfo"},
			map[string]any{"scope": "openid email profile"})
	}

	s := runBinary(t,
		"GATEHOUSE_ALLOW_INSECURE_ISSUERS=true", // the fakes are plain http
		"GATEHOUSE_GITHUB_CLIENT_ID=Ov23signin", "GATEHOUSE_GITHUB_CLIENT_SECRET=github-app-secret",
		"GATEHOUSE_GITHUB_API_URL="+gh.URL(), "GATEHOUSE_GITHUB_WEB_URL="+gh.WebURL(),
		"GATEHOUSE_OIDC_ISSUER="+corp.URL, "GATEHOUSE_OIDC_AUDIENCE=corp-api", "GATEHOUSE_OIDC_NAME=corp",
		"GATEHOUSE_OIDC_LABEL=Corp SSO", "GATEHOUSE_OIDC_CLIENT_ID=gatehouse-web", "GATEHOUSE_OIDC_CLIENT_SECRET=corp-client-secret",
		"GATEHOUSE_GOOGLE_CLIENT_ID=e2e.apps.googleusercontent.com", "GATEHOUSE_GOOGLE_CLIENT_SECRET=GOCSPX-e2e-secret",
		"GATEHOUSE_GOOGLE_ISSUER="+google.URL,
		"GATEHOUSE_AUTH0_DOMAIN=e2e.eu.auth0.com", "GATEHOUSE_AUTH0_ISSUER="+a0.URL, "GATEHOUSE_AUTH0_AUDIENCE=https://mcp.e2e.example/",
		"GATEHOUSE_AUTH0_CLIENT_ID=auth0-app", "GATEHOUSE_AUTH0_CLIENT_SECRET=auth0-app-secret",
		"GATEHOUSE_SIGNING_KEY=e2e-signing-key-0123456789abcdef")
	if !strings.Contains(s.logs.String(), `"msg":"sign-in for MCP clients","providers":["google","auth0","github","corp"]`) {
		t.Errorf("the start-up log does not list the sign-in providers")
	}

	// Alice (GitHub) signs in first and is acme.com's admin; Bob (Corp SSO)
	// and Carol (Auth0) join her organisation as developers; Dave, a gmail
	// user (Google), gets a personal tenant of his own.
	for _, tc := range []struct{ provider, subject, tenant, role string }{
		{"github", "github:4242", "acme.com", "admin"},
		{"corp", "corp:bob-7", "acme.com", "developer"},
		{"auth0", "auth0:auth0|carol", "acme.com", "developer"},
		{"google", "google:110248", "personal:google:110248", "admin"},
	} {
		t.Run(tc.provider, func(t *testing.T) {
			cmd := nodeCmd(t, "oauth-client.mjs", s.base+"/mcp", tc.provider)
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
				if who["subject"] != tc.subject || who["tenant"] != tc.tenant || who["role"] != tc.role {
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
	for _, secret := range []string{"github-app-secret", "corp-client-secret", "GOCSPX-e2e-secret", "auth0-app-secret", "e2e-signing-key", tok} {
		if strings.Contains(s.logs.String(), secret) {
			t.Errorf("a secret (%.12s…) appears in the server log", secret)
		}
	}
}
