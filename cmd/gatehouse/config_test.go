package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store"
)

func TestProviderConfiguration(t *testing.T) {
	c, err := loadConfig(func(k string) string {
		return map[string]string{
			"GATEHOUSE_GITHUB_CLIENT_ID":       "Ov23",
			"GATEHOUSE_GITHUB_CLIENT_SECRET":   "s",
			"GATEHOUSE_GOOGLE_CLIENT_ID":       "123.apps.googleusercontent.com",
			"GATEHOUSE_AUTH0_DOMAIN":           "example.eu.auth0.com",
			"GATEHOUSE_AUTH0_AUDIENCE":         "https://mcp.example.com",
			"GATEHOUSE_OIDC_ISSUER":            "https://sso.example.com/realms/main",
			"GATEHOUSE_OIDC_AUDIENCE":          "gatehouse",
			"GATEHOUSE_OIDC_NAME":              "keycloak",
			"GATEHOUSE_TENANT_ALIASES":         "acme.io=acme.com",
			"GATEHOUSE_TENANT_SIGNUP":          "allowlist",
			"GATEHOUSE_TENANT_ALLOWLIST":       "acme.com,personal",
			"GATEHOUSE_DEFAULT_ROLE":           "viewer",
			"GATEHOUSE_DEFAULT_SCOPES":         "mcp:read",
			"GATEHOUSE_ALLOW_INSECURE_ISSUERS": "false",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Providers.names(), ","); got != "google,auth0,github,keycloak" {
		t.Errorf("providers = %s", got)
	}
	opts, err := c.Providers.resolverOptions(nil, 0, c.DefaultScopes)
	if err != nil {
		t.Fatal(err)
	}
	for _, iss := range []string{"https://accounts.google.com", "accounts.google.com", "https://example.eu.auth0.com/", "https://sso.example.com/realms/main"} {
		if opts.Issuers[iss] == nil {
			t.Errorf("no route for issuer %s", iss)
		}
	}
	var prefixes []string
	for _, p := range opts.Prefixes {
		prefixes = append(prefixes, p.Prefix)
	}
	if got := strings.Join(prefixes, " "); got != "gk_ ya29. gho_ ghu_ ghp_ github_pat_" {
		t.Errorf("prefixes = %s", got)
	}
	if c.Policy.Aliases["acme.io"] != "acme.com" || c.Policy.DefaultRole != "viewer" || len(c.Policy.Allowlist) != 2 {
		t.Errorf("policy = %+v", c.Policy)
	}
}

// TestProviderConfigurationProblemsAreAllListed: a half-configured
// provider, an insecure issuer, a clash and bad tenancy values together.
func TestProviderConfigurationProblemsAreAllListed(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(file, []byte("oidc_issuers:\n  - name: dup\n    issuer: https://sso.example.com\n    audiences: [a]\n  - name: github\n    issuer: https://other.example.com\n    audiences: [a]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(func(k string) string {
		return map[string]string{
			"GATEHOUSE_GITHUB_CLIENT_ID": "Ov23", // no secret
			"GATEHOUSE_OIDC_ISSUER":      "https://sso.example.com",
			"GATEHOUSE_OIDC_AUDIENCE":    "gatehouse",
			"GATEHOUSE_AUTH0_DOMAIN":     "example.eu.auth0.com",
			"GATEHOUSE_AUTH0_AUDIENCE":   "x",
			"GATEHOUSE_AUTH0_ISSUER":     "http://insecure.example.com/",
			"GATEHOUSE_CONFIG_FILE":      file,
			"GATEHOUSE_TENANT_SIGNUP":    "sometimes",
			"GATEHOUSE_TENANT_ALIASES":   "nonsense",
			"GATEHOUSE_DEFAULT_ROLE":     "owner",
			"GATEHOUSE_DEFAULT_SCOPES":   "mcp:everything",
		}[k]
	})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"GATEHOUSE_GITHUB_CLIENT_SECRET", "plain http", "two identity providers are configured for issuer https://sso.example.com",
		`"github" is reserved`, "sometimes", "nonsense", "owner", "mcp:everything",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestConfigFileRejectsUnknownSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(file, []byte("oidc_issuer:\n  - name: typo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(func(k string) string { return map[string]string{"GATEHOUSE_CONFIG_FILE": file}[k] })
	if err == nil || !strings.Contains(err.Error(), "oidc_issuer") {
		t.Errorf("err = %v", err)
	}
}

// TestBulkheadSettings: auto leaves the bounds to the database and the
// server (zero), numbers are taken, and every bad value is reported.
func TestBulkheadSettings(t *testing.T) {
	c, err := loadConfig(func(k string) string {
		return map[string]string{"GATEHOUSE_DB_TENANT_CONNS": "12", "GATEHOUSE_TENANT_CONCURRENCY": "3", "GATEHOUSE_ADMISSION_WAIT": "500ms"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.DB.TenantConns != 12 || c.Admission.Tenant != 3 || c.Admission.Principal != 0 || c.Admission.Wait != 500*time.Millisecond || c.DB.ControlConns < 4 {
		t.Errorf("parsed %+v %+v", c.DB, c.Admission)
	}
	_, err = loadConfig(func(k string) string {
		return map[string]string{"GATEHOUSE_DB_CONTROL_CONNS": "0", "GATEHOUSE_QUERY_CONNS": "many", "GATEHOUSE_ADMISSION_WAIT": "5m"}[k]
	})
	for _, want := range []string{"GATEHOUSE_DB_CONTROL_CONNS", "GATEHOUSE_QUERY_CONNS", "GATEHOUSE_ADMISSION_WAIT"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
	// The control connections' tenant bound: a number, off (-1), or
	// unset (its documented default); anything else is listed.
	for v, want := range map[string]int{"": store.DefaultControlConnMaxTenants, "1500": 1500, "off": -1} {
		c, err := loadConfig(func(k string) string { return map[string]string{"GATEHOUSE_DB_CONTROL_CONN_MAX_TENANTS": v}[k] })
		if err != nil || c.DB.ControlConnMaxTenants != want {
			t.Errorf("GATEHOUSE_DB_CONTROL_CONN_MAX_TENANTS=%q: %d, %v; want %d", v, c.DB.ControlConnMaxTenants, err, want)
		}
	}
	// The control lanes' prepared statements: the same rules.
	for v, want := range map[string]int{"": store.DefaultControlPreparedStatements, "64": 64, "off": -1} {
		c, err := loadConfig(func(k string) string { return map[string]string{"GATEHOUSE_DB_CONTROL_PREPARED_STATEMENTS": v}[k] })
		if err != nil || c.DB.ControlPreparedStatements != want {
			t.Errorf("GATEHOUSE_DB_CONTROL_PREPARED_STATEMENTS=%q: %d, %v; want %d", v, c.DB.ControlPreparedStatements, err, want)
		}
	}
	for _, v := range []string{"0", "-3", "lots", "auto"} {
		_, err := loadConfig(func(k string) string { return map[string]string{"GATEHOUSE_DB_CONTROL_PREPARED_STATEMENTS": v}[k] })
		if err == nil || !strings.Contains(err.Error(), "GATEHOUSE_DB_CONTROL_PREPARED_STATEMENTS") {
			t.Errorf("GATEHOUSE_DB_CONTROL_PREPARED_STATEMENTS=%q: error %v does not name it", v, err)
		}
	}
	for _, v := range []string{"0", "-3", "lots", "auto"} {
		_, err := loadConfig(func(k string) string { return map[string]string{"GATEHOUSE_DB_CONTROL_CONN_MAX_TENANTS": v}[k] })
		if err == nil || !strings.Contains(err.Error(), "GATEHOUSE_DB_CONTROL_CONN_MAX_TENANTS") {
			t.Errorf("GATEHOUSE_DB_CONTROL_CONN_MAX_TENANTS=%q: error %v does not name it", v, err)
		}
	}
}

// TestGenericPlansSetting: generic plans for the marked statements by
// default, off gives store.Options.CustomPlans, anything else is refused.
func TestGenericPlansSetting(t *testing.T) {
	for v, custom := range map[string]bool{"": false, "on": false, "off": true} {
		c, err := loadConfig(func(k string) string {
			return map[string]string{"GATEHOUSE_DB_GENERIC_PLANS": v}[k]
		})
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		if c.DB.CustomPlans != custom {
			t.Errorf("%q: CustomPlans %v, want %v", v, c.DB.CustomPlans, custom)
		}
	}
	for _, v := range []string{"true", "0", "On "} {
		_, err := loadConfig(func(k string) string {
			return map[string]string{"GATEHOUSE_DB_GENERIC_PLANS": v}[k]
		})
		if err == nil || !strings.Contains(err.Error(), "GATEHOUSE_DB_GENERIC_PLANS") || !strings.Contains(err.Error(), "on or off") {
			t.Errorf("%q: %v", v, err)
		}
	}
}

// TestAuditCommitWindowSetting: the default is 3ms, off and any zero
// turn the window off (-1), a nonzero value below a nanosecond is an error
// (it would parse to zero: off), durations up to 100ms are taken, and each
// other value is reported with the accepted forms, beside the other
// problems.
func TestAuditCommitWindowSetting(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 3 * time.Millisecond, "off": -1, "OFF": -1, "0": -1, "0ms": -1, "500us": 500 * time.Microsecond, "100ms": 100 * time.Millisecond} {
		c, err := loadConfig(func(k string) string {
			if k == "GATEHOUSE_AUDIT_COMMIT_WINDOW" && v != "" {
				return v
			}
			return ""
		})
		if err != nil || c.AuditCommitWindow != want {
			t.Errorf("%q: %v %v, want %v", v, c.AuditCommitWindow, err, want)
		}
	}
	for _, v := range []string{"101ms", "1s", "-3ms", "fast", "3", "0x", "0.5ns"} {
		_, err := loadConfig(func(k string) string {
			return map[string]string{"GATEHOUSE_AUDIT_COMMIT_WINDOW": v, "GATEHOUSE_QUERY_CONNS": "many"}[k]
		})
		if err == nil || !strings.Contains(err.Error(), "GATEHOUSE_AUDIT_COMMIT_WINDOW: \""+v+"\" is not off or a duration up to 100ms") ||
			!strings.Contains(err.Error(), "GATEHOUSE_QUERY_CONNS") {
			t.Errorf("%q: %v", v, err)
		}
	}
}

// TestEmbeddingsSettings: the provider is off without a URL; with one the
// model is required, dimensions must be a size, and each problem is named.
func TestEmbeddingsSettings(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := loadConfig(env(nil))
	if err != nil || c.Embeddings != nil {
		t.Fatalf("default: %+v %v", c.Embeddings, err)
	}
	c, err = loadConfig(env(map[string]string{"GATEHOUSE_EMBEDDINGS_URL": "http://localhost:11434/v1", "GATEHOUSE_EMBEDDINGS_MODEL": "nomic-embed-text",
		"GATEHOUSE_EMBEDDINGS_DIMENSIONS": "768", "GATEHOUSE_EMBEDDINGS_API_KEY": "sk-x"}))
	if err != nil || c.Embeddings == nil || c.Embeddings.Model != "nomic-embed-text" || c.Embeddings.Dimensions != 768 || c.Embeddings.APIKey != "sk-x" {
		t.Fatalf("configured: %+v %v", c.Embeddings, err)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"GATEHOUSE_EMBEDDINGS_URL": "http://x/v1"}, "GATEHOUSE_EMBEDDINGS_MODEL: is required"},
		{map[string]string{"GATEHOUSE_EMBEDDINGS_URL": "localhost:11434", "GATEHOUSE_EMBEDDINGS_MODEL": "m"}, "GATEHOUSE_EMBEDDINGS_URL"},
		{map[string]string{"GATEHOUSE_EMBEDDINGS_URL": "http://x/v1", "GATEHOUSE_EMBEDDINGS_MODEL": "m", "GATEHOUSE_EMBEDDINGS_DIMENSIONS": "-3"}, "GATEHOUSE_EMBEDDINGS_DIMENSIONS"},
		{map[string]string{"GATEHOUSE_EMBEDDINGS_MODEL": "m"}, "GATEHOUSE_EMBEDDINGS_URL is not"},
		{map[string]string{"GATEHOUSE_EMBEDDINGS_URL": "ftp://x/v1", "GATEHOUSE_EMBEDDINGS_MODEL": "m"}, `"ftp://x/v1" is not an http(s) URL`},
		// credentials, a query or a fragment in the URL: refused, naming
		// the part, without echoing what may be a secret
		{map[string]string{"GATEHOUSE_EMBEDDINGS_URL": "http://user:SECRETPW@x/v1", "GATEHOUSE_EMBEDDINGS_MODEL": "m"}, "GATEHOUSE_EMBEDDINGS_API_KEY"},
		{map[string]string{"GATEHOUSE_EMBEDDINGS_URL": "https://SECRETUSER@x/v1", "GATEHOUSE_EMBEDDINGS_MODEL": "m"}, "user name or password"},
		{map[string]string{"GATEHOUSE_EMBEDDINGS_URL": "http://x/v1?key=SECRETQ", "GATEHOUSE_EMBEDDINGS_MODEL": "m"}, `"http://x/v1" has a query`},
		{map[string]string{"GATEHOUSE_EMBEDDINGS_URL": "http://x/v1?", "GATEHOUSE_EMBEDDINGS_MODEL": "m"}, "has a query"},
		{map[string]string{"GATEHOUSE_EMBEDDINGS_URL": "http://x/v1#SECRETF", "GATEHOUSE_EMBEDDINGS_MODEL": "m"}, `"http://x/v1" has a fragment`},
		{map[string]string{"GATEHOUSE_EMBEDDINGS_URL": "ftp://u:SECRETPW@x/v1?k=SECRETQ", "GATEHOUSE_EMBEDDINGS_MODEL": "m"}, `"ftp://x/v1" is not an http(s) URL`},
	} {
		_, err := loadConfig(env(tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.env, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%v: the error %q repeats a secret of the URL", tc.env, err)
		}
	}
}

// TestTrustedProxiesErrorsQuoteTheEntry: a bad GATEHOUSE_TRUSTED_PROXIES
// entry is quoted as the operator wrote it (not with a /32 or /128 the
// parser appended), and single addresses are one-address networks.
func TestTrustedProxiesErrorsQuoteTheEntry(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	_, err := loadConfig(env(map[string]string{"GATEHOUSE_TRUSTED_PROXIES": "bad, 10.0.0.0/33,::1"}))
	if err == nil || !strings.Contains(err.Error(), `"bad" is not an IP address or CIDR`) || !strings.Contains(err.Error(), `"10.0.0.0/33" is not`) ||
		strings.Contains(err.Error(), "bad/") || strings.Contains(err.Error(), "::1") {
		t.Errorf("bad entries: %v", err)
	}
	c, err := loadConfig(env(map[string]string{"GATEHOUSE_TRUSTED_PROXIES": "10.1.2.3,::1,192.168.0.0/16"}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range c.TrustedProxies {
		got = append(got, n.String())
	}
	if strings.Join(got, " ") != "10.1.2.3/32 ::1/128 192.168.0.0/16" {
		t.Errorf("trusted proxies %v", got)
	}
}
