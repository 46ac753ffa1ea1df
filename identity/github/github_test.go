package github_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/github"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
)

const (
	oauthToken = "gho_16C7e42F292c6912E7710c838347Ae178B4a"
	appToken   = "ghu_16C7e42F292c6912E7710c838347Ae178B4a"
)

const (
	reasonNotOurs = "the GitHub token is not valid for this server"
	reasonPAT     = "GitHub personal access tokens are not accepted; sign in through an MCP client instead"
)

var octocat = octocatWith(emailsOnlyPrimary)

func openVerifier(t *testing.T, f *idptest.GitHub, apiURL, secret string) identity.Verifier {
	t.Helper()
	v, err := github.Config{
		ClientID: clientID, ClientSecret: secret, APIURL: apiURL, HTTPClient: f.Client(),
	}.Open()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return v
}

// checkSecretsAbsent fails if err's text carries the token or our secret.
func checkSecretsAbsent(t *testing.T, err error, token string) {
	t.Helper()
	if msg := err.Error(); strings.Contains(msg, token) || strings.Contains(msg, clientSecret) {
		t.Errorf("error text carries a secret: %q", msg)
	}
}

func TestVerify(t *testing.T) {
	expiry := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	noName := octocat
	noName.Name = ""
	tests := []struct {
		name        string
		token       string
		grant       idptest.GitHubGrant
		emails      *idptest.Response // forced /user/emails answer
		wantEmail   string
		wantName    string
		wantExpires time.Time
	}{
		{"verified primary among decoys", oauthToken,
			idptest.GitHubGrant{User: octocatWith(emailsMixed), ExpiresAt: expiry},
			nil, "Octocat@GitHub.com", "The Octocat", expiry},
		{"documented email example", oauthToken,
			idptest.GitHubGrant{User: octocat},
			nil, "octocat@github.com", "The Octocat", time.Time{}},
		{"GitHub App user token", appToken,
			idptest.GitHubGrant{User: octocat, ExpiresAt: expiry},
			nil, "octocat@github.com", "The Octocat", expiry},
		{"null name falls back to login", oauthToken,
			idptest.GitHubGrant{User: noName},
			nil, "octocat@github.com", "octocat", time.Time{}},
		{"no verified primary email", oauthToken,
			idptest.GitHubGrant{User: octocatWith(emailsNoVerifiedPrimary)},
			nil, "", "The Octocat", time.Time{}},
		{"empty email list", oauthToken,
			idptest.GitHubGrant{User: octocatWith([]idptest.GitHubEmail{})},
			nil, "", "The Octocat", time.Time{}},
		{"no user:email scope (404)", oauthToken,
			idptest.GitHubGrant{User: octocat, NoEmailScope: true},
			nil, "", "The Octocat", time.Time{}},
		{"GitHub App without email permission (403)", appToken,
			idptest.GitHubGrant{User: octocat},
			&idptest.GitHubNotAccessible, "", "The Octocat", time.Time{}},
		{"expires_at null", oauthToken,
			idptest.GitHubGrant{User: octocat, NullExpiry: true},
			nil, "octocat@github.com", "The Octocat", time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := idptest.NewGitHub(t, clientID, clientSecret)
			f.Issue(tt.token, tt.grant)
			if tt.emails != nil {
				f.Emails.Fail(*tt.emails)
			}
			p, err := openVerifier(t, f, f.URL(), clientSecret).Verify(context.Background(), tt.token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !p.Expiry.Equal(tt.wantExpires) {
				t.Errorf("Expiry = %v, want %v", p.Expiry, tt.wantExpires)
			}
			got := *p
			got.Expiry = time.Time{}
			want := identity.Principal{
				Provider:      "github",
				Subject:       "github:583231",
				Email:         tt.wantEmail,
				EmailVerified: tt.wantEmail != "",
				Name:          tt.wantName,
				Claims:        map[string]any{"login": "octocat"},
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("principal =\n%+v\nwant\n%+v", got, want)
			}
			for _, ep := range []string{epCheck, epUser, epEmails} {
				if n := endpoint(f, ep).Calls(); n != 1 {
					t.Errorf("%s called %d times, want 1", ep, n)
				}
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	otherApp := idptest.GitHubGrant{App: "Iv1.0ther0app0000000", User: octocat}
	ours := idptest.GitHubGrant{User: octocat}
	tests := []struct {
		name       string
		token      string
		grant      *idptest.GitHubGrant
		fail       map[string]idptest.Response
		wantReason string
	}{
		{"another app's token", oauthToken, &otherApp, nil, reasonNotOurs},
		{"another GitHub App's token", appToken, &otherApp, nil, reasonNotOurs},
		{"unknown token", oauthToken, nil, nil, reasonNotOurs},
		{"classic personal access token", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", nil, nil, reasonPAT},
		{"fine-grained personal access token",
			"github_pat_11ABCDEFG0123456789abc_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRST", nil, nil, reasonPAT},
		{"validation failed (422)", oauthToken, &ours, map[string]idptest.Response{epCheck: idptest.GitHubValidationFailed}, reasonNotOurs},
		{"forbidden, not rate limited (403)", oauthToken, &ours, map[string]idptest.Response{epCheck: forbiddenRaw}, reasonNotOurs},
		{"answer names another app", oauthToken,
			&idptest.GitHubGrant{ReportedApp: "Iv1.0ther0app0000000", User: octocat}, nil, reasonNotOurs},
		{"revoked before /user (401)", oauthToken, &ours, map[string]idptest.Response{epUser: idptest.GitHubBadCredentials}, reasonNotOurs},
		{"revoked before /user/emails (401)", oauthToken, &ours, map[string]idptest.Response{epEmails: idptest.GitHubBadCredentials}, reasonNotOurs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := idptest.NewGitHub(t, clientID, clientSecret)
			if tt.grant != nil {
				f.Issue(tt.token, *tt.grant)
			}
			for ep, c := range tt.fail {
				endpoint(f, ep).Fail(c)
			}
			p, err := openVerifier(t, f, f.URL(), clientSecret).Verify(context.Background(), tt.token)
			checkInvalid(t, p, err, tt.token, tt.wantReason)
			if f.CheckToken.Calls() != 1 {
				t.Errorf("check a token called %d times, want 1", f.CheckToken.Calls())
			}
			_, failsUser := tt.fail[epUser]
			_, failsEmails := tt.fail[epEmails]
			if !failsUser && !failsEmails && total(f) != 1 {
				t.Errorf("GitHub called %d times, want only the token check", total(f))
			}
		})
	}
}

func checkInvalid(t *testing.T, p *identity.Principal, err error, token, wantReason string) {
	t.Helper()
	if !errors.Is(err, identity.ErrInvalidToken) || errors.Is(err, identity.ErrUnavailable) {
		t.Fatalf("Verify = %v, %v; want an invalid-token error", p, err)
	}
	if p != nil {
		t.Errorf("principal %+v returned with an error", p)
	}
	if got := identity.Reason(err); got != wantReason {
		t.Errorf("Reason = %q, want %q", got, wantReason)
	}
	checkSecretsAbsent(t, err, token)
}

func TestVerifyRevoked(t *testing.T) {
	f := idptest.NewGitHub(t, clientID, clientSecret)
	f.Issue(oauthToken, idptest.GitHubGrant{User: octocat})
	v := openVerifier(t, f, f.URL(), clientSecret)
	if _, err := v.Verify(context.Background(), oauthToken); err != nil {
		t.Fatalf("Verify before revocation: %v", err)
	}
	f.Revoke(oauthToken)
	p, err := v.Verify(context.Background(), oauthToken)
	checkInvalid(t, p, err, oauthToken, reasonNotOurs)
}

func TestVerifyUnavailable(t *testing.T) {
	tests := []struct {
		name    string
		ep      string
		answer  idptest.Response
		secret  string // "": the right one
		wantMsg string
	}{
		{name: "check: server error", ep: epCheck, answer: idptest.GitHubServerError},
		{name: "check: bad gateway", ep: epCheck, answer: badGateway},
		{name: "check: 429", ep: epCheck, answer: idptest.GitHubTooManyRequests},
		{name: "check: primary rate limit (403)", ep: epCheck, answer: idptest.GitHubRateLimited},
		{name: "check: secondary rate limit (403)", ep: epCheck, answer: idptest.GitHubSecondaryRateLimited},
		{name: "check: garbled answer", ep: epCheck, answer: garbled200},
		{name: "our client credentials rejected", secret: "wrong-secret", wantMsg: "client id/secret"},
		{name: "user: server error", ep: epUser, answer: idptest.GitHubServerError},
		{name: "user: 429", ep: epUser, answer: idptest.GitHubTooManyRequests},
		{name: "user: primary rate limit (403)", ep: epUser, answer: idptest.GitHubRateLimited},
		{name: "user: garbled answer", ep: epUser, answer: garbled200},
		{name: "emails: server error", ep: epEmails, answer: idptest.GitHubServerError},
		{name: "emails: 429", ep: epEmails, answer: idptest.GitHubTooManyRequests},
		{name: "emails: secondary rate limit (403)", ep: epEmails, answer: idptest.GitHubSecondaryRateLimited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := idptest.NewGitHub(t, clientID, clientSecret)
			f.Issue(oauthToken, idptest.GitHubGrant{User: octocat})
			if tt.ep != "" {
				endpoint(f, tt.ep).Fail(tt.answer)
			}
			secret := clientSecret
			if tt.secret != "" {
				secret = tt.secret
			}
			p, err := openVerifier(t, f, f.URL(), secret).Verify(context.Background(), oauthToken)
			checkUnavailable(t, p, err, oauthToken)
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error text carries the configured secret: %q", err)
			}
		})
	}
}

func checkUnavailable(t *testing.T, p *identity.Principal, err error, token string) {
	t.Helper()
	if !errors.Is(err, identity.ErrUnavailable) || errors.Is(err, identity.ErrInvalidToken) {
		t.Fatalf("Verify = %v, %v; want an unavailable error", p, err)
	}
	if p != nil {
		t.Errorf("principal %+v returned with an error", p)
	}
	checkSecretsAbsent(t, err, token)
}

func TestVerifyConnectionRefused(t *testing.T) {
	f := idptest.NewGitHub(t, clientID, clientSecret)
	v := openVerifier(t, f, f.URL(), clientSecret)
	f.Close()
	p, err := v.Verify(context.Background(), oauthToken)
	checkUnavailable(t, p, err, oauthToken)
}

func TestVerifyMalformed(t *testing.T) {
	f := idptest.NewGitHub(t, clientID, clientSecret)
	v := openVerifier(t, f, f.URL(), clientSecret)
	for _, token := range []string{
		"",
		" ",
		"gho_16C7e42F292c6912E7710c838347Ae178B4a ",
		" gho_16C7e42F292c6912E7710c838347Ae178B4a",
		"gho_16C7e42F292c6912\tE7710c838347Ae178B4a",
		"gho_16C7e42F292c6912E7710c838347Ae178B4a\n",
		"gho_16C7e42F292c6912\x00E7710c838347Ae178B4a",
		"gho_16C7e42F292c6912\x7fE7710c838347Ae178B4a",
		"gho_16C7e42F292c6912\u00e9E7710c838347Ae178B4a",
		"gho_" + strings.Repeat("a", identity.MaxTokenBytes),
	} {
		p, err := v.Verify(context.Background(), token)
		if !errors.Is(err, identity.ErrInvalidToken) || p != nil {
			t.Errorf("Verify(%q) = %v, %v; want an invalid-token error", token, p, err)
			continue
		}
		if got := identity.Reason(err); got != "the GitHub token is malformed" {
			t.Errorf("Verify(%q): Reason = %q", token, got)
		}
		if token != "" && token != " " {
			checkSecretsAbsent(t, err, token)
		}
	}
	if n := total(f); n != 0 {
		t.Errorf("malformed tokens caused %d calls to GitHub, want 0", n)
	}
}
