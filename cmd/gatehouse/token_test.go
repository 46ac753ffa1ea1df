package main

import (
	"encoding/json"
	"net/http"
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

// TestTokenMintNamesItsServer: token mint resolves the URL as serve does;
// in a shell that sets nothing it uses the URL the server on the database
// started with, so the token works there; it always says which URL.
func TestTokenMintNamesItsServer(t *testing.T) {
	dbURL := storetest.ConnString(t)
	mintEnv := map[string]string{"DATABASE_URL": dbURL, "GATEHOUSE_DEV": "true"}
	if code, _, stderr := gh(t, mintEnv, "apikey", "create", "--tenant", "acme.com", "--role", "admin"); code != 0 {
		t.Fatal(stderr)
	}
	mint := func(environ map[string]string) (resource, token, stderr string) {
		t.Helper()
		code, out, stderr := gh(t, environ, "token", "mint", "--tenant", "acme.com", "--subject", "ci", "--json")
		var j struct{ Resource, Token string }
		if err := json.Unmarshal([]byte(out), &j); code != 0 || err != nil {
			t.Fatalf("mint: exit %d %v\n%s", code, err, stderr)
		}
		return j.Resource, j.Token, stderr
	}
	if res, _, stderr := mint(mintEnv); res != "http://localhost:8080/mcp" || !strings.Contains(stderr, "for the server at http://localhost:8080/mcp (the default; no server has started") {
		t.Errorf("before any server: %s, %s", res, stderr)
	}
	base, _ := serveInProcess(t, map[string]string{"DATABASE_URL": dbURL, "GATEHOUSE_DEV": "true"})
	res, tok, stderr := mint(mintEnv)
	if res != base+"/mcp" || !strings.Contains(stderr, "for the server at "+base+"/mcp (the URL the server on this database last started with") {
		t.Errorf("with a server on another port: %s, %s", res, stderr)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != http.StatusOK {
		t.Errorf("the minted token at its server: %v %v", r, err)
	} else {
		r.Body.Close()
	}
	mintEnv["PORT"] = "4000"
	if res, _, stderr := mint(mintEnv); res != "http://localhost:4000/mcp" || !strings.Contains(stderr, "(from PORT)") {
		t.Errorf("with PORT: %s, %s", res, stderr)
	}
	mintEnv["GATEHOUSE_PUBLIC_URL"] = "https://mcp.example.com"
	if res, _, stderr := mint(mintEnv); res != "https://mcp.example.com/mcp" || !strings.Contains(stderr, "(from GATEHOUSE_PUBLIC_URL)") {
		t.Errorf("with GATEHOUSE_PUBLIC_URL: %s, %s", res, stderr)
	}
}
