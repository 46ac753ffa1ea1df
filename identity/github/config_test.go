package github_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/github"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
)

func TestOpenReportsEveryProblem(t *testing.T) {
	_, err := github.Config{APIURL: "ftp://api.github.com"}.Open()
	if err == nil {
		t.Fatal("Open accepted a config without credentials and with an ftp URL")
	}
	for _, want := range []string{"client id", "client secret", `"ftp://api.github.com"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 3 {
		t.Errorf("error %q does not join the 3 problems", err)
	}
}

func TestOpenAPIURL(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"", true}, // https://api.github.com
		{"https://api.github.com", true},
		{"https://ghe.example.com/api/v3", true},
		{"http://127.0.0.1:8080", true},
		{"api.github.com", false},
		{"ftp://api.github.com", false},
		{"https://", false},
		{"/api/v3", false},
		{"://api.github.com", false},
		{"https://api.github.com/%zz", false},
	}
	for _, tt := range tests {
		v, err := github.Config{ClientID: clientID, ClientSecret: clientSecret, APIURL: tt.url}.Open()
		switch {
		case tt.ok && (err != nil || v == nil):
			t.Errorf("Open(APIURL %q) = %v, %v; want a verifier", tt.url, v, err)
		case !tt.ok && (err == nil || !strings.Contains(err.Error(), "API URL")):
			t.Errorf("Open(APIURL %q) = %v, %v; want an API URL error", tt.url, v, err)
		}
		if err != nil && strings.Contains(err.Error(), clientSecret) {
			t.Errorf("Open(APIURL %q): error carries the client secret: %q", tt.url, err)
		}
	}
}

// GitHub Enterprise Server serves the REST API under /api/v3.
func TestVerifyEnterpriseServer(t *testing.T) {
	f := idptest.NewGitHubEnterprise(t, clientID, clientSecret)
	if !strings.HasSuffix(f.URL(), "/api/v3") {
		t.Fatalf("fake GitHub Enterprise Server API URL %q does not end with /api/v3", f.URL())
	}
	f.Issue(oauthToken, idptest.GitHubGrant{User: octocat})
	for _, base := range []string{f.URL(), f.URL() + "/"} {
		p, err := openVerifier(t, f, base, clientSecret).Verify(context.Background(), oauthToken)
		if err != nil {
			t.Fatalf("Verify against %s: %v", base, err)
		}
		if p.Subject != "github:583231" {
			t.Errorf("Subject = %q", p.Subject)
		}
	}
}

// The resolver routes every GitHub token shape to this provider and caches
// the outcome.
func TestResolverRoutesPrefixes(t *testing.T) {
	f := idptest.NewGitHub(t, clientID, clientSecret)
	f.Issue(oauthToken, idptest.GitHubGrant{User: octocat})
	v := openVerifier(t, f, f.URL(), clientSecret)
	var routes []identity.PrefixRoute
	for _, p := range github.Prefixes {
		routes = append(routes, identity.PrefixRoute{Prefix: p, Verifier: v})
	}
	r := identity.NewResolver(identity.ResolverOptions{Prefixes: routes})
	defer r.Close()
	ctx := context.Background()
	for range 2 {
		p, err := r.Resolve(ctx, oauthToken)
		if err != nil {
			t.Fatalf("Resolve: %v", err)
		}
		if p.Subject != "github:583231" || p.Email != "octocat@github.com" {
			t.Errorf("principal = %+v", p)
		}
	}
	if n := f.CheckToken.Calls(); n != 1 {
		t.Errorf("check a token called %d times for two resolutions, want 1", n)
	}
	for _, pat := range []string{"ghp_16C7e42F292c6912E7710c838347Ae178B4a", "github_pat_11ABCDEFG0_abc"} {
		_, err := r.Resolve(ctx, pat)
		if got := identity.Reason(err); !errors.Is(err, identity.ErrInvalidToken) || got != reasonPAT {
			t.Errorf("Resolve(PAT) = %v (reason %q); want the PAT reason", err, got)
		}
	}
}
