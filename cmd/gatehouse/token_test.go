package main

import (
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

func TestTokenMint(t *testing.T) {
	environ := map[string]string{"DATABASE_URL": storetest.ConnString(t)}
	if code, _, stderr := gh(t, environ, "apikey", "create", "--tenant", "acme.com", "--role", "admin"); code != 0 {
		t.Fatal(stderr)
	}
	// A shared database without developer mode: refused, saying why and
	// what to do instead.
	code, stdout, stderr := gh(t, environ, "token", "mint", "--tenant", "acme.com", "--subject", "ci")
	if code == 0 || stdout != "" || !strings.Contains(stderr, "local development") || !strings.Contains(stderr, "apikey create") {
		t.Errorf("mint on a shared database: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	environ["GATEHOUSE_DEV"] = "true"
	code, stdout, stderr = gh(t, environ, "token", "mint", "--tenant", "acme.com", "--subject", "ci", "--role", "viewer", "--json")
	if code != 0 || !strings.Contains(stdout, `"token": "ey`) || !strings.Contains(stdout, `"role": "viewer"`) || !strings.Contains(stdout, `"scopes": [`+"\n"+`    "mcp:read"`) {
		t.Errorf("mint in developer mode: exit %d\n%s\n%s", code, stdout, stderr)
	}
	// Every mistake at once.
	code, _, stderr = gh(t, environ, "token", "mint", "--tenant", "nope.example", "--subject", "a b", "--role", "owner", "--scopes", "mcp:all", "--ttl", "48h")
	for _, want := range []string{"--subject", "--role", "--scopes", "--ttl"} {
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("exit %d; stderr lacks %s:\n%s", code, want, stderr)
		}
	}
	code, _, stderr = gh(t, environ, "token", "mint", "--tenant", "nope.example", "--subject", "ci")
	if code == 0 || !strings.Contains(stderr, "no tenant nope.example") {
		t.Errorf("unknown tenant: exit %d %s", code, stderr)
	}
}

func TestSignInConfiguration(t *testing.T) {
	code, _, stderr := gh(t, map[string]string{
		"GATEHOUSE_GOOGLE_CLIENT_SECRET": "s",
		"GATEHOUSE_AUTH0_CLIENT_ID":      "x",
		"GATEHOUSE_OIDC_ISSUER":          "https://sso.example.com", "GATEHOUSE_OIDC_AUDIENCE": "api", "GATEHOUSE_OIDC_CLIENT_ID": "web",
		"GATEHOUSE_GITHUB_CLIENT_ID": "Ov23x", "GATEHOUSE_GITHUB_CLIENT_SECRET": "s", "GATEHOUSE_GITHUB_WEB_URL": "http://github.example",
		"GATEHOUSE_SIGNING_KEY": "short", "GATEHOUSE_TOKEN_TTL": "2h", "GATEHOUSE_DEV": "maybe",
	}, "serve")
	for _, want := range []string{
		"GATEHOUSE_GOOGLE_CLIENT_SECRET is set without GATEHOUSE_GOOGLE_CLIENT_ID",
		"Auth0 sign-in needs GATEHOUSE_AUTH0_DOMAIN",
		"OIDC sign-in is partly configured: set GATEHOUSE_OIDC_CLIENT_SECRET",
		"GATEHOUSE_GITHUB_WEB_URL", "GATEHOUSE_SIGNING_KEY", "GATEHOUSE_TOKEN_TTL", "GATEHOUSE_DEV",
	} {
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("exit %d; stderr lacks %q:\n%s", code, want, stderr)
		}
	}
	if strings.Contains(stderr, `"s"`) {
		t.Errorf("a secret's value is echoed:\n%s", stderr)
	}
}
