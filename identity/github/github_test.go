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
)

const (
	oauthToken = "gho_16C7e42F292c6912E7710c838347Ae178B4a"
	appToken   = "ghu_16C7e42F292c6912E7710c838347Ae178B4a"
)

const (
	reasonNotOurs = "the GitHub token is not valid for this server"
	reasonPAT     = "GitHub personal access tokens are not accepted; sign in through an MCP client instead"
)

var octocat = ghUser{ID: 583231, Login: "octocat", Name: "The Octocat", PublicEmail: "octocat-public@example.com"}

func openVerifier(t *testing.T, f *fakeGitHub, apiURL, secret string) identity.Verifier {
	t.Helper()
	v, err := github.Config{
		ClientID: clientID, ClientSecret: secret, APIURL: apiURL, HTTPClient: f.srv.Client(),
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
		grant       grant
		emails      *canned // forced /user/emails answer
		wantEmail   string
		wantName    string
		wantExpires time.Time
	}{
		{"verified primary among decoys", oauthToken,
			grant{User: octocat, Emails: emailsMixed, ExpiresAt: `"2031-01-02T03:04:05Z"`},
			nil, "Octocat@GitHub.com", "The Octocat", expiry},
		{"documented email example", oauthToken,
			grant{User: octocat, Emails: emailsOnlyPrimary},
			nil, "octocat@github.com", "The Octocat", time.Time{}},
		{"GitHub App user token", appToken,
			grant{User: octocat, Emails: emailsOnlyPrimary, ExpiresAt: `"2031-01-02T03:04:05Z"`},
			nil, "octocat@github.com", "The Octocat", expiry},
		{"null name falls back to login", oauthToken,
			grant{User: noName, Emails: emailsOnlyPrimary},
			nil, "octocat@github.com", "octocat", time.Time{}},
		{"no verified primary email", oauthToken,
			grant{User: octocat, Emails: emailsNoVerifiedPrimary},
			nil, "", "The Octocat", time.Time{}},
		{"empty email list", oauthToken,
			grant{User: octocat, Emails: `[]`},
			nil, "", "The Octocat", time.Time{}},
		{"no user:email scope (404)", oauthToken,
			grant{User: octocat},
			nil, "", "The Octocat", time.Time{}},
		{"GitHub App without email permission (403)", appToken,
			grant{User: octocat, Emails: emailsOnlyPrimary},
			&notAccessible, "", "The Octocat", time.Time{}},
		{"expires_at null", oauthToken,
			grant{User: octocat, Emails: emailsOnlyPrimary, ExpiresAt: "null"},
			nil, "octocat@github.com", "The Octocat", time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, "")
			f.issue(tt.token, tt.grant)
			if tt.emails != nil {
				f.fail(epEmails, *tt.emails)
			}
			p, err := openVerifier(t, f, f.srv.URL, clientSecret).Verify(context.Background(), tt.token)
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
				if n := f.count(ep); n != 1 {
					t.Errorf("%s called %d times, want 1", ep, n)
				}
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	otherApp := grant{App: "Iv1.0ther0app0000000", User: octocat, Emails: emailsOnlyPrimary}
	ours := grant{User: octocat, Emails: emailsOnlyPrimary}
	tests := []struct {
		name       string
		token      string
		grant      *grant
		fail       map[string]canned
		wantReason string
	}{
		{"another app's token", oauthToken, &otherApp, nil, reasonNotOurs},
		{"another GitHub App's token", appToken, &otherApp, nil, reasonNotOurs},
		{"unknown token", oauthToken, nil, nil, reasonNotOurs},
		{"classic personal access token", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", nil, nil, reasonPAT},
		{"fine-grained personal access token",
			"github_pat_11ABCDEFG0123456789abc_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRST", nil, nil, reasonPAT},
		{"validation failed (422)", oauthToken, &ours, map[string]canned{epCheck: validationFailed}, reasonNotOurs},
		{"forbidden, not rate limited (403)", oauthToken, &ours, map[string]canned{epCheck: forbiddenRaw}, reasonNotOurs},
		{"answer names another app", oauthToken,
			&grant{ReportedApp: "Iv1.0ther0app0000000", User: octocat, Emails: emailsOnlyPrimary}, nil, reasonNotOurs},
		{"revoked before /user (401)", oauthToken, &ours, map[string]canned{epUser: badCredentials}, reasonNotOurs},
		{"revoked before /user/emails (401)", oauthToken, &ours, map[string]canned{epEmails: badCredentials}, reasonNotOurs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, "")
			if tt.grant != nil {
				f.issue(tt.token, *tt.grant)
			}
			for ep, c := range tt.fail {
				f.fail(ep, c)
			}
			p, err := openVerifier(t, f, f.srv.URL, clientSecret).Verify(context.Background(), tt.token)
			checkInvalid(t, p, err, tt.token, tt.wantReason)
			if f.count(epCheck) != 1 {
				t.Errorf("check a token called %d times, want 1", f.count(epCheck))
			}
			_, failsUser := tt.fail[epUser]
			_, failsEmails := tt.fail[epEmails]
			if !failsUser && !failsEmails && f.total() != 1 {
				t.Errorf("GitHub called %d times, want only the token check", f.total())
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
	f := newFake(t, "")
	f.issue(oauthToken, grant{User: octocat, Emails: emailsOnlyPrimary})
	v := openVerifier(t, f, f.srv.URL, clientSecret)
	if _, err := v.Verify(context.Background(), oauthToken); err != nil {
		t.Fatalf("Verify before revocation: %v", err)
	}
	f.revoke(oauthToken)
	p, err := v.Verify(context.Background(), oauthToken)
	checkInvalid(t, p, err, oauthToken, reasonNotOurs)
}

func TestVerifyUnavailable(t *testing.T) {
	tests := []struct {
		name    string
		ep      string
		answer  canned
		secret  string // "": the right one
		wantMsg string
	}{
		{name: "check: server error", ep: epCheck, answer: serverError},
		{name: "check: bad gateway", ep: epCheck, answer: badGateway},
		{name: "check: 429", ep: epCheck, answer: tooManyRequests},
		{name: "check: primary rate limit (403)", ep: epCheck, answer: primaryRateLimit},
		{name: "check: secondary rate limit (403)", ep: epCheck, answer: secondaryRateLimit},
		{name: "check: garbled answer", ep: epCheck, answer: garbled200},
		{name: "our client credentials rejected", secret: "wrong-secret", wantMsg: "client id/secret"},
		{name: "user: server error", ep: epUser, answer: serverError},
		{name: "user: 429", ep: epUser, answer: tooManyRequests},
		{name: "user: primary rate limit (403)", ep: epUser, answer: primaryRateLimit},
		{name: "user: garbled answer", ep: epUser, answer: garbled200},
		{name: "emails: server error", ep: epEmails, answer: serverError},
		{name: "emails: 429", ep: epEmails, answer: tooManyRequests},
		{name: "emails: secondary rate limit (403)", ep: epEmails, answer: secondaryRateLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, "")
			f.issue(oauthToken, grant{User: octocat, Emails: emailsOnlyPrimary})
			if tt.ep != "" {
				f.fail(tt.ep, tt.answer)
			}
			secret := clientSecret
			if tt.secret != "" {
				secret = tt.secret
			}
			p, err := openVerifier(t, f, f.srv.URL, secret).Verify(context.Background(), oauthToken)
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
	f := newFake(t, "")
	v := openVerifier(t, f, f.srv.URL, clientSecret)
	f.srv.Close()
	p, err := v.Verify(context.Background(), oauthToken)
	checkUnavailable(t, p, err, oauthToken)
}

func TestVerifyMalformed(t *testing.T) {
	f := newFake(t, "")
	v := openVerifier(t, f, f.srv.URL, clientSecret)
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
	if n := f.total(); n != 0 {
		t.Errorf("malformed tokens caused %d calls to GitHub, want 0", n)
	}
}
