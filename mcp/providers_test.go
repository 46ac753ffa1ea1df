package mcp_test

import (
	"net/http"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/auth0"
	"github.com/gatehouse-mcp/gatehouse/identity/github"
	"github.com/gatehouse-mcp/gatehouse/identity/google"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
)

// Each provider through the real MCP handler, with the official client, as
// `gatehouse serve` routes it: Google ID tokens by iss and access tokens by
// prefix, Auth0 by iss, GitHub by prefix.

const googleClient = "1234-gatehouse.apps.googleusercontent.com"

func withGoogle(t *testing.T) (func(*setup), *idptest.Issuer, *idptest.Google) {
	iss := idptest.NewIssuer(t, nil)
	fake := idptest.NewGoogle(t, iss, googleClient)
	p, err := google.Config{ClientID: googleClient, Issuer: iss.URL, TokenInfoURL: fake.TokenInfoURL(), UserInfoURL: fake.UserInfoURL(),
		AllowInsecure: true, HTTPClient: iss.Client()}.Open()
	if err != nil {
		t.Fatal(err)
	}
	return func(s *setup) {
		if s.resolver.Issuers == nil {
			s.resolver.Issuers = map[string]identity.Verifier{}
		}
		for _, i := range p.IDTokens().Issuers() {
			s.resolver.Issuers[i] = p.IDTokens()
		}
		s.resolver.Prefixes = append(s.resolver.Prefixes, identity.PrefixRoute{Prefix: google.AccessTokenPrefix, Verifier: p.AccessTokens()})
	}, iss, fake
}

func TestGoogleThroughMCP(t *testing.T) {
	withG, iss, fake := withGoogle(t)
	g := newGatehouse(t, withG)
	idToken := func(sub, email, hd string) string {
		claims := map[string]any{"email": email, "email_verified": true}
		if hd != "" {
			claims["hd"] = hd
		}
		return iss.Sign(iss.Claims(sub, googleClient, claims))
	}
	schemeless := iss.Sign(iss.Claims("5", googleClient, map[string]any{
		"iss": strings.TrimPrefix(iss.URL, "http://"), "email": "eve@acme.com", "email_verified": true, "hd": "acme.com"}))
	tests := []struct {
		name, tok, tenant string
	}{
		{"workspace user", idToken("1", "alice@acme.com", "acme.com"), "acme.com"},
		{"iss without scheme", schemeless, "acme.com"},
		{"corporate email, not workspace", idToken("2", "bob@acme.com", ""), "personal:google:2"},
		{"gmail user", idToken("3", "carol@gmail.com", ""), "personal:google:3"},
		{"another gmail user", idToken("4", "dave@gmail.com", ""), "personal:google:4"},
		{"access token, workspace", fake.Issue(idptest.GoogleGrant{Sub: "6", Email: "fay@acme.com", HD: "acme.com", Scope: "openid email"}), "acme.com"},
	}
	for _, tt := range tests {
		if m := whoami(t, g, tt.tok); m.Tenant != tt.tenant {
			t.Errorf("%s: tenant %s, want %s", tt.name, m.Tenant, tt.tenant)
		}
	}
	otherApp := fake.Issue(idptest.GoogleGrant{Sub: "7", Email: "gus@acme.com", HD: "acme.com", Aud: "someone-else.apps.googleusercontent.com"})
	otherClientID := iss.Sign(iss.Claims("8", "someone-else.apps.googleusercontent.com", map[string]any{"email": "h@acme.com", "email_verified": true, "hd": "acme.com"}))
	for _, tok := range []string{otherApp, otherClientID} {
		if res := post(t, g.url, "Bearer "+tok, addTodoCall); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("token for another Google client: %d", res.StatusCode)
		}
	}
}

func TestAuth0ThroughMCP(t *testing.T) {
	iss := idptest.NewIssuer(t, &idptest.Options{Suffix: "/"})
	fake := idptest.NewAuth0(t, iss)
	v, err := auth0.Config{Issuer: iss.URL, Audience: "https://mcp.example.com", AllowInsecure: true, HTTPClient: iss.Client()}.Open()
	if err != nil {
		t.Fatal(err)
	}
	g := newGatehouse(t, func(s *setup) {
		s.resolver.Issuers = map[string]identity.Verifier{}
		for _, i := range v.Issuers() {
			s.resolver.Issuers[i] = v
		}
	})
	tok := fake.Mint(idptest.Auth0User{Sub: "google-oauth2|42", Email: "alice@acme.com"}, []string{"https://mcp.example.com", iss.URL + "userinfo"},
		map[string]any{"scope": "openid email mcp:read mcp:write"})
	if m := whoami(t, g, tok); m.Tenant != "acme.com" || m.Subject != "auth0:google-oauth2|42" || m.Role != "admin" {
		t.Errorf("auth0 user: %+v", m)
	}
	hs256 := idptest.SignWith(jose.HS256, iss.PublicKeyPEM(), iss.KeyID(), iss.Claims("auth0|evil", "https://mcp.example.com", map[string]any{"scope": "openid"}))
	if res := post(t, g.url, "Bearer "+hs256, addTodoCall); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("HS256 token keyed with the public key: %d", res.StatusCode)
	}
}

func TestGitHubThroughMCP(t *testing.T) {
	fake := idptest.NewGitHub(t, "Ov23gatehouse", "s3cret")
	v, err := github.Config{ClientID: "Ov23gatehouse", ClientSecret: "s3cret", APIURL: fake.URL(), HTTPClient: fake.Client()}.Open()
	if err != nil {
		t.Fatal(err)
	}
	withIss, corp := func() (func(*setup), *idptest.Issuer) {
		i := idptest.NewIssuer(t, nil)
		return withIssuer(t, "corp", i), i
	}()
	g := newGatehouse(t, withIss, func(s *setup) {
		for _, p := range github.Prefixes {
			s.resolver.Prefixes = append(s.resolver.Prefixes, identity.PrefixRoute{Prefix: p, Verifier: v})
		}
	})
	fake.Issue("gho_alice", idptest.GitHubGrant{User: idptest.GitHubUser{ID: 5678, Login: "alice-gh", Emails: []idptest.GitHubEmail{
		{Email: "alice@acme.com", Primary: true, Verified: true},
	}}})
	fake.Issue("gho_other_app", idptest.GitHubGrant{App: "Iv1.someone-else", User: idptest.GitHubUser{ID: 1, Login: "x"}})
	fake.Issue("gho_noreply", idptest.GitHubGrant{User: idptest.GitHubUser{ID: 99, Login: "nr", Emails: []idptest.GitHubEmail{
		{Email: "99+nr@users.noreply.github.com", Primary: true, Verified: true},
	}}})

	if m := whoami(t, g, "gho_alice"); m.Tenant != "acme.com" || m.Subject != "github:5678" || m.Role != "admin" {
		t.Errorf("github user: %+v", m)
	}
	// The same person through the corporate IdP is the same member: still admin.
	if m := whoami(t, g, token(corp, "alice-sso", "alice@acme.com", true, nil)); m.Role != "admin" {
		t.Errorf("linked identity: %+v", m)
	}
	if m := whoami(t, g, "gho_noreply"); m.Tenant != "personal:github:99" {
		t.Errorf("noreply user: %+v", m)
	}
	for tok, reason := range map[string]string{"gho_other_app": "not valid for this server", "ghp_personal_token": "personal access tokens"} {
		res := post(t, g.url, "Bearer "+tok, addTodoCall)
		if h := res.Header.Get("WWW-Authenticate"); res.StatusCode != http.StatusUnauthorized || !strings.Contains(h, reason) {
			t.Errorf("%s: %d %q", tok, res.StatusCode, h)
		}
	}
	// Four distinct tokens, each used in several HTTP requests (a session
	// is initialize, tools/list, tools/call): one check each, cached after.
	if n := fake.CheckToken.Calls(); n != 4 {
		t.Errorf("GitHub token checks = %d, want 4", n)
	}
}
