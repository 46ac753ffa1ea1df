package idptest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
)

// recorder captures the errors a fake records instead of failing the test.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) complaints() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errs, "\n")
}

// do sends a request and returns the status and body.
func do(t *testing.T, method, u, body string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var ghHeaders = map[string]string{
	"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "gatehouse",
}

func withHeader(h map[string]string, k, v string) map[string]string {
	c := map[string]string{k: v}
	for k, v := range h {
		if _, ok := c[k]; !ok {
			c[k] = v
		}
	}
	return c
}

// The fakes record what Gatehouse must not do.
func TestComplaints(t *testing.T) {
	rec := &recorder{TB: t}
	gh := idptest.NewGitHub(rec, "Iv1.app", "secret")
	gh.Issue("gho_x", idptest.GitHubGrant{User: idptest.GitHubUser{ID: 1, Login: "x"}})
	do(t, "GET", gh.URL()+"/user", "", map[string]string{"Authorization": "Bearer gho_x"})
	do(t, "POST", gh.URL()+"/applications/Iv1.app/token", `{"access_token":"gho_x"}`, ghHeaders)
	do(t, "GET", gh.URL()+"/user/emails", "", withHeader(ghHeaders, "Authorization", "token gho_x"))

	iss := idptest.NewIssuer(t, nil)
	g := idptest.NewGoogle(rec, iss, "client")
	do(t, "POST", g.TokenInfoURL()+"?access_token=ya29.x", "", nil)
	do(t, "GET", g.UserInfoURL(), "", nil)

	a0 := idptest.NewAuth0(rec, idptest.NewIssuer(t, &idptest.Options{Suffix: "/"}))
	do(t, "GET", a0.UserInfoURL(), "", map[string]string{"Authorization": "Basic eDp5"})

	got := rec.complaints()
	for _, want := range []string{
		"header Accept", "header X-GitHub-Api-Version", "header User-Agent", "no Basic auth",
		"/user/emails: Authorization is not a Bearer token",
		"tokeninfo: query string", "tokeninfo: Content-Type", "no access_token in the form body",
		"fake Google: userinfo: Authorization is not a Bearer token",
		"fake Auth0: userinfo: Authorization is not a Bearer token",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no complaint mentions %q; complaints:\n%s", want, got)
		}
	}
}

// A fake on an issuer that outlives its test drops complaints made after
// the test ended instead of panicking.
func TestComplaintAfterTheTestEnded(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	var g *idptest.Google
	t.Run("owner", func(t *testing.T) { g = idptest.NewGoogle(t, iss, "client") })
	if status, _ := do(t, "GET", g.UserInfoURL(), "", nil); status != http.StatusUnauthorized {
		t.Errorf("userinfo without a token: %d, want 401", status)
	}
}

func TestGitHubAnswers(t *testing.T) {
	f := idptest.NewGitHubEnterprise(t, "Iv1.app", "secret")
	if !strings.HasSuffix(f.URL(), "/api/v3") {
		t.Fatalf("URL() = %q", f.URL())
	}
	user := idptest.GitHubUser{ID: 7, Login: "mona", Emails: []idptest.GitHubEmail{{Email: "m@example.com", Primary: true, Verified: true}}}
	expiry := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Issue("ghu_mine", idptest.GitHubGrant{User: user, ExpiresAt: expiry})
	f.Issue("gho_noscope", idptest.GitHubGrant{User: user, NoEmailScope: true, NullExpiry: true})
	f.Issue("gho_theirs", idptest.GitHubGrant{User: user, App: "Iv1.other"})
	check := func(token string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", f.URL()+"/applications/Iv1.app/token", strings.NewReader(`{"access_token":"`+token+`"}`))
		for k, v := range withHeader(ghHeaders, "Content-Type", "application/json") {
			req.Header.Set(k, v)
		}
		req.SetBasicAuth("Iv1.app", "secret")
		resp, err := f.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&a)
		return resp.StatusCode, a
	}
	if status, a := check("ghu_mine"); status != 200 || a["expires_at"] != "2031-01-02T03:04:05Z" ||
		a["app"].(map[string]any)["client_id"] != "Iv1.app" || a["token_last_eight"] != "ghu_mine" {
		t.Errorf("check ghu_mine: %d %v", status, a)
	}
	if status, a := check("gho_noscope"); status != 200 || a["expires_at"] != nil {
		t.Errorf("check gho_noscope: %d %v", status, a)
	} else if _, present := a["expires_at"]; !present {
		t.Errorf("check gho_noscope: expires_at absent, want null")
	}
	if status, _ := check("gho_theirs"); status != 404 {
		t.Errorf("check another app's token: %d, want 404", status)
	}
	f.Revoke("ghu_mine")
	if status, _ := check("ghu_mine"); status != 404 {
		t.Errorf("check a revoked token: %d, want 404", status)
	}
	if n := f.CheckToken.Calls(); n != 4 {
		t.Errorf("CheckToken.Calls() = %d, want 4", n)
	}
	status, body := do(t, "GET", f.URL()+"/user/emails", "", withHeader(ghHeaders, "Authorization", "Bearer gho_theirs"))
	if want := `"visibility": null`; status != 200 || !strings.Contains(body, want) {
		t.Errorf("emails: %d %s; want %s", status, body, want)
	}
	if status, _ := do(t, "GET", f.URL()+"/user/emails", "", withHeader(ghHeaders, "Authorization", "Bearer gho_noscope")); status != 404 {
		t.Errorf("emails without the user:email scope: %d, want 404", status)
	}
	f.User.Fail(idptest.GitHubRateLimited)
	status, body = do(t, "GET", f.URL()+"/user", "", withHeader(ghHeaders, "Authorization", "Bearer gho_theirs"))
	if status != 403 || !strings.Contains(body, "rate limit") {
		t.Errorf("user while rate limited: %d %s", status, body)
	}
	f.User.Restore()
	if status, body := do(t, "GET", f.URL()+"/user", "", withHeader(ghHeaders, "Authorization", "Bearer gho_theirs")); status != 200 || !strings.Contains(body, `"login": "mona"`) {
		t.Errorf("user after Restore: %d %s", status, body)
	}
}

// The fakes serve concurrent requests while tokens are issued and revoked
// (run with -race).
func TestConcurrentUse(t *testing.T) {
	gh := idptest.NewGitHub(t, "Iv1.app", "secret")
	g := idptest.NewGoogle(t, idptest.NewIssuer(t, nil), "client")
	var wg sync.WaitGroup
	for n := range 20 {
		wg.Go(func() {
			token := fmt.Sprintf("gho_%d", n)
			gh.Issue(token, idptest.GitHubGrant{User: idptest.GitHubUser{ID: int64(n + 1), Login: "u"}})
			if status, _ := do(t, "GET", gh.URL()+"/user", "", withHeader(ghHeaders, "Authorization", "Bearer "+token)); status != 200 {
				t.Errorf("GitHub user %d: %d", n, status)
			}
			gh.Revoke(token)
			at := g.Issue(idptest.GoogleGrant{Sub: "1", Email: "a@example.com"})
			form := url.Values{"access_token": {at}}.Encode()
			if status, _ := do(t, "POST", g.TokenInfoURL(), form, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); status != 200 {
				t.Errorf("Google tokeninfo %d: %d", n, status)
			}
			if !strings.HasPrefix(at, "ya29.") {
				t.Errorf("Google access token %q does not start with ya29.", at)
			}
		})
	}
	wg.Wait()
	if a, b := gh.User.Calls(), g.TokenInfo.Calls(); a != 20 || b != 20 {
		t.Errorf("calls: GitHub user %d, Google tokeninfo %d; want 20 each", a, b)
	}
}

// A slow endpoint gives up waiting when the request is cancelled.
func TestEndpointDelay(t *testing.T) {
	f := idptest.NewAuth0(t, idptest.NewIssuer(t, &idptest.Options{Suffix: "/"}))
	f.UserInfo.SetDelay(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.UserInfoURL(), nil)
	req.Header.Set("Authorization", "Bearer "+f.Mint(idptest.Auth0User{Sub: "auth0|1"}, "api", nil))
	start := time.Now()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Error("a request to a slow endpoint succeeded before its deadline")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("request took %v", d)
	}
	f.UserInfo.SetDelay(0)
	f.UserInfo.FailStatus(http.StatusTooManyRequests)
	if status, body := do(t, "GET", f.UserInfoURL(), "", map[string]string{"Authorization": "Bearer x"}); status != 429 || !strings.Contains(body, "too_many_requests") {
		t.Errorf("failing userinfo: %d %s", status, body)
	}
}
