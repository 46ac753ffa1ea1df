package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// gh runs one gatehouse command in-process with the given environment.
func gh(t *testing.T, environ map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(k string) string { return environ[k] }}
	code = run(context.Background(), args, e)
	return code, out.String(), errb.String()
}

var secretPattern = regexp.MustCompile(`^gk_[a-z2-7]{16}_[A-Za-z0-9_-]{43}\n$`)

func TestConfigListsEveryProblem(t *testing.T) {
	code, _, stderr := gh(t, map[string]string{
		"GATEHOUSE_ADDR":            "nonsense",
		"GATEHOUSE_LOG_LEVEL":       "loud",
		"GATEHOUSE_AUTH_CACHE_TTL":  "forever",
		"GATEHOUSE_TRUSTED_PROXIES": "10.0.0.0/8, not-an-ip",
		"GATEHOUSE_PUBLIC_URL":      "ftp://x/y",
	}, "serve")
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	for _, want := range []string{"GATEHOUSE_ADDR", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_AUTH_CACHE_TTL", "not-an-ip", "GATEHOUSE_PUBLIC_URL"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not mention %s:\n%s", want, stderr)
		}
	}
}

func TestAPIKeyCommands(t *testing.T) {
	environ := map[string]string{"DATABASE_URL": storetest.ConnString(t)}
	code, secret, stderr := gh(t, environ, "apikey", "create", "--tenant", "ACME.com", "--role", "developer", "--name", "ci")
	if code != 0 || !secretPattern.MatchString(secret) {
		t.Fatalf("create: exit %d, stdout %q, stderr %s", code, secret, stderr)
	}
	if strings.Contains(stderr, strings.TrimSpace(secret)) {
		t.Error("the secret reached stderr")
	}
	code, out, _ := gh(t, environ, "apikey", "create", "--tenant", "acme.com", "--role", "viewer", "--expires", "90d", "--json")
	var created keyJSON
	if err := json.Unmarshal([]byte(out), &created); code != 0 || err != nil || created.Tenant != "acme.com" || created.ExpiresAt == nil || created.Secret == "" || len(created.Scopes) != 1 {
		t.Fatalf("create --json: exit %d, %q", code, out)
	}
	code, out, _ = gh(t, environ, "apikey", "list", "--tenant", "acme.com", "--json")
	var keys []keyJSON
	if err := json.Unmarshal([]byte(out), &keys); code != 0 || err != nil || len(keys) != 2 {
		t.Fatalf("list: exit %d, %q", code, out)
	}
	for _, k := range keys {
		if k.Secret != "" {
			t.Error("list shows a secret")
		}
	}
	code, out, _ = gh(t, environ, "apikey", "revoke", created.ID, "--json")
	var revoked keyJSON
	if err := json.Unmarshal([]byte(out), &revoked); code != 0 || err != nil || revoked.RevokedAt == nil {
		t.Fatalf("revoke: exit %d, %q", code, out)
	}
	code, out, _ = gh(t, environ, "apikey", "list", "--tenant", "acme.com")
	if code != 0 || !strings.Contains(out, "LAST USED") || strings.Count(out, "\n") != 3 {
		t.Errorf("list table:\n%s", out)
	}
	if code, _, stderr := gh(t, environ, "apikey", "revoke", "nosuchkeyaaaaaaa"); code != 1 || !strings.Contains(stderr, "no API key") {
		t.Errorf("revoke unknown: exit %d, %s", code, stderr)
	}
	code, out, _ = gh(t, environ, "tenant", "show", "acme.com", "--json")
	var tn tenantJSON
	if err := json.Unmarshal([]byte(out), &tn); code != 0 || err != nil || tn.Key != "acme.com" || *tn.APIKeys != 2 {
		t.Errorf("tenant show: exit %d, %q", code, out)
	}
}

func TestAPIKeyCreateListsEveryMistake(t *testing.T) {
	code, stdout, stderr := gh(t, nil, "apikey", "create", "--role", "owner", "--scopes", "mcp:root", "--expires", "soon")
	if code != 2 || stdout != "" {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
	for _, want := range []string{"--tenant is required", "unknown role", "unknown scope", "--expires"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// TestConcurrentFirstUseOfATenant: several operators creating keys for a new
// organisation at once provision it exactly once.
func TestConcurrentFirstUseOfATenant(t *testing.T) {
	environ := map[string]string{"DATABASE_URL": storetest.ConnString(t)}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if code, _, stderr := gh(t, environ, "apikey", "create", "--tenant", "initech.com", "--role", "admin"); code != 0 {
				t.Errorf("exit %d: %s", code, stderr)
			}
		})
	}
	wg.Wait()
	_, out, _ := gh(t, environ, "tenant", "list", "--json")
	var ts []tenantJSON
	if err := json.Unmarshal([]byte(out), &ts); err != nil || len(ts) != 1 {
		t.Fatalf("tenants: %s", out)
	}
	_, out, _ = gh(t, environ, "apikey", "list", "--tenant", "initech.com", "--json")
	var keys []keyJSON
	if err := json.Unmarshal([]byte(out), &keys); err != nil || len(keys) != 8 {
		t.Errorf("want 8 keys in the one tenant: %s", out)
	}
}

// TestCLIOnEmbeddedDefault: with DATABASE_URL unset, commands start the
// embedded cluster, use it, and stop it, and the next command finds the data.
func TestCLIOnEmbeddedDefault(t *testing.T) {
	if testing.Short() {
		t.Skip("creates its own cluster")
	}
	environ := map[string]string{"GATEHOUSE_DATA_DIR": filepath.Join(storetest.TempDir(t), "data")}
	if code, out, stderr := gh(t, environ, "apikey", "create", "--tenant", "acme.com", "--role", "admin"); code != 0 || !secretPattern.MatchString(out) {
		t.Fatalf("create on embedded: exit %d %q %s", code, out, stderr)
	}
	code, out, stderr := gh(t, environ, "tenant", "list")
	if code != 0 || !strings.Contains(out, "acme.com") {
		t.Fatalf("tenant list on embedded: exit %d %q %s", code, out, stderr)
	}
	// Each command stopped the cluster it started: no server is left running.
	if _, err := os.Stat(filepath.Join(environ["GATEHOUSE_DATA_DIR"], "pgdata", "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("embedded cluster left running after the commands (postmaster.pid: %v)", err)
	}
}

func TestConfigCommandListsEveryVariable(t *testing.T) {
	code, out, _ := gh(t, nil, "config")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, v := range envVars {
		if !strings.Contains(out, v.Name+"=") {
			t.Errorf("config output lacks %s", v.Name)
		}
	}
}

func TestAddressPrecedence(t *testing.T) {
	tests := []struct {
		env             map[string]string
		addr, publicURL string
	}{
		{map[string]string{}, ":8080", "http://localhost:8080"},
		{map[string]string{"PORT": "3000"}, ":3000", "http://localhost:3000"},
		{map[string]string{"PORT": "3000", "GATEHOUSE_ADDR": "127.0.0.1:9000"}, "127.0.0.1:9000", "http://127.0.0.1:9000"},
		{map[string]string{"PORT": "3000", "GATEHOUSE_PUBLIC_URL": "https://mcp.example.com/"}, ":3000", "https://mcp.example.com"},
		// The platforms' own variables, when GATEHOUSE_PUBLIC_URL is unset.
		{map[string]string{"PORT": "10000", "RENDER_EXTERNAL_URL": "https://gh.onrender.com"}, ":10000", "https://gh.onrender.com"},
		{map[string]string{"PORT": "8080", "RAILWAY_PUBLIC_DOMAIN": "gh.up.railway.app"}, ":8080", "https://gh.up.railway.app"},
		{map[string]string{"PORT": "8080", "FLY_APP_NAME": "gh"}, ":8080", "https://gh.fly.dev"},
		{map[string]string{"FLY_APP_NAME": "gh", "GATEHOUSE_PUBLIC_URL": "https://mcp.example.com"}, ":8080", "https://mcp.example.com"},
		{map[string]string{"RENDER_EXTERNAL_URL": "https://a.onrender.com", "FLY_APP_NAME": "gh"}, ":8080", "https://a.onrender.com"},
	}
	for _, tt := range tests {
		c, err := loadConfig(func(k string) string { return tt.env[k] })
		if err != nil || c.Addr != tt.addr || c.PublicURL != tt.publicURL {
			t.Errorf("%v: addr %q public %q (%v); want %q %q", tt.env, c.Addr, c.PublicURL, err, tt.addr, tt.publicURL)
		}
	}
	if _, err := loadConfig(func(k string) string { return map[string]string{"PORT": "http"}[k] }); err == nil {
		t.Error("PORT=http accepted")
	}
}

func TestTenantLimitsCommand(t *testing.T) {
	environ := map[string]string{"DATABASE_URL": storetest.ConnString(t)}
	gh(t, environ, "apikey", "create", "--tenant", "acme.com", "--role", "admin")
	if code, out, _ := gh(t, environ, "tenant", "limits", "show", "acme.com"); code != 0 || !strings.Contains(out, "1200/m burst 200 (default)") {
		t.Errorf("show default: %d %q", code, out)
	}
	if code, out, stderr := gh(t, environ, "tenant", "limits", "set", "acme.com", "--rate", "600/m", "--burst", "60"); code != 0 || !strings.Contains(out, "600/m burst 60 (tenant override)") {
		t.Errorf("set: %d %q %s", code, out, stderr)
	}
	if code, out, _ := gh(t, environ, "tenant", "limits", "show", "acme.com", "--json"); code != 0 || !strings.Contains(out, `"burst": 60`) {
		t.Errorf("show override: %d %q", code, out)
	}
	if code, out, _ := gh(t, environ, "tenant", "limits", "clear", "acme.com"); code != 0 || !strings.Contains(out, "(default)") {
		t.Errorf("clear: %d %q", code, out)
	}
	if code, _, stderr := gh(t, environ, "tenant", "limits", "set", "acme.com", "--rate", "lots"); code != 2 || !strings.Contains(stderr, "--rate") {
		t.Errorf("bad rate: %d %s", code, stderr)
	}
	// The one rate parser: off is accepted as the environment accepts it,
	// and an omitted burst is the stated default (GATEHOUSE_TENANT_BURST),
	// not one second's worth of the rate.
	if code, out, stderr := gh(t, environ, "tenant", "limits", "set", "acme.com", "--rate", "off"); code != 0 || !strings.Contains(out, "tenant acme.com: off (tenant override)") {
		t.Errorf("set off: %d %q %s", code, out, stderr)
	}
	if code, out, _ := gh(t, environ, "tenant", "limits", "show", "acme.com", "--json"); code != 0 || !strings.Contains(out, `"off": true`) {
		t.Errorf("show off: %d %q", code, out)
	}
	if code, out, stderr := gh(t, environ, "tenant", "limits", "set", "acme.com", "--rate", "3600/h"); code != 0 || !strings.Contains(out, "60/m burst 200 (tenant override)") {
		t.Errorf("set without --burst: %d %q %s", code, out, stderr)
	}
	environ["GATEHOUSE_TENANT_BURST"] = "25"
	if code, out, stderr := gh(t, environ, "tenant", "limits", "set", "acme.com", "--rate", "10/s"); code != 0 || !strings.Contains(out, "600/m burst 25 (tenant override)") {
		t.Errorf("set with GATEHOUSE_TENANT_BURST=25: %d %q %s", code, out, stderr)
	}
}

func TestHealthcheckCommand(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	if code, _, stderr := gh(t, map[string]string{"GATEHOUSE_ADDR": addr}, "healthcheck"); code != 0 {
		t.Errorf("healthy server: exit %d %s", code, stderr)
	}
	srv.Close()
	if code, _, _ := gh(t, map[string]string{"GATEHOUSE_ADDR": addr}, "healthcheck"); code != 1 {
		t.Errorf("no server: exit %d, want 1", code)
	}
}
