package authserver

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestValidRedirects(t *testing.T) {
	for _, ok := range []string{
		"https://claude.ai/api/mcp/auth_callback", "http://127.0.0.1:33418/callback", "http://localhost:6274/oauth/callback",
		"http://[::1]:8080/cb", "vscode://vscode.github-authentication/did-authenticate", "cursor://anysphere.cursor-retrieval/oauth/callback",
		"com.example.app:/oauth2redirect",
	} {
		if err := validRedirects([]string{ok}); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{
		"http://example.com/cb", "http://192.168.1.10/cb", "javascript:alert(1)", "data:text/html,x", "file:///etc/passwd",
		"https://example.com/cb#frag", "/relative", "https:///nohost", "JAVASCRIPT:alert(1)",
	} {
		if err := validRedirects([]string{bad}); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if validRedirects(nil) == nil {
		t.Error("no redirect URIs accepted")
	}
}

func TestRedirectAllowed(t *testing.T) {
	reg := []string{"http://127.0.0.1:1000/callback", "https://app.example/cb", "vscode://x/cb"}
	for _, tc := range []struct {
		uri  string
		want bool
	}{
		{"http://127.0.0.1:1000/callback", true},
		{"http://127.0.0.1:54321/callback", true}, // any loopback port (RFC 8252 §7.3)
		{"http://127.0.0.1:54321/callback?x=1", false},
		{"http://127.0.0.1:54321/other", false},
		{"http://localhost:1000/callback", false}, // another host name
		{"https://app.example/cb", true},
		{"https://app.example:8443/cb", false}, // ports matter off loopback
		{"https://app.example/cb/", false},
		{"https://app.example/CB", false},
		{"vscode://x/cb", true},
		{"vscode://x/cb2", false},
	} {
		if got := redirectAllowed(reg, tc.uri); got != tc.want {
			t.Errorf("redirectAllowed(%s) = %v, want %v", tc.uri, got, tc.want)
		}
	}
}

func TestInternalAddresses(t *testing.T) {
	for _, s := range []string{"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.0.1", "169.254.169.254", "::1", "fe80::1", "fc00::1",
		"100.64.0.1", "0.0.0.0", "0.1.2.3", "224.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254"} {
		if !internal(net.ParseIP(s)) {
			t.Errorf("%s is not treated as internal", s)
		}
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"} {
		if internal(net.ParseIP(s)) {
			t.Errorf("%s is treated as internal", s)
		}
	}
}

// TestSafeClient: the metadata-document client refuses internal addresses
// at dial time (so a public name resolving to 127.0.0.1 is refused too)
// and does not follow redirects.
func TestSafeClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	if _, err := safeClient(false).Do(req); err == nil || !strings.Contains(err.Error(), "internal address") {
		t.Errorf("loopback fetch: %v", err)
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1), nil)
	if _, err := safeClient(false).Do(req); err == nil || !strings.Contains(err.Error(), "internal address") {
		t.Errorf("fetch by a name resolving to loopback: %v", err)
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	res, err := safeClient(true).Do(req)
	if err != nil {
		t.Fatalf("developer mode: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound {
		t.Errorf("a redirect was followed: %d", res.StatusCode)
	}
}

func TestCacheFor(t *testing.T) {
	for cc, want := range map[string]time.Duration{
		"": time.Hour, "max-age=60": 5 * time.Minute, "public, max-age=7200": 2 * time.Hour, "max-age=999999": 24 * time.Hour, "no-store": time.Hour,
	} {
		if got := cacheFor(cc); got != want {
			t.Errorf("cacheFor(%q) = %s, want %s", cc, got, want)
		}
	}
}
