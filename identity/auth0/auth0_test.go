package auth0_test

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/auth0"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
)

const (
	audience   = "https://api.gatehouse.example.com"
	emailClaim = "https://gatehouse.example.com/email"
	scopes     = "openid profile email mcp:read"
)

var jane = idptest.Auth0User{Sub: "google-oauth2|103547991597142817347", Email: "janedoe@exampleco.com", Name: "Jane Doe"}

// setup starts an issuer playing an Auth0 tenant (its iss ends with "/"),
// its /userinfo fake, and a verifier for it.
func setup(t *testing.T, mod func(*auth0.Config)) (*idptest.Issuer, *idptest.Auth0, *auth0.Verifier) {
	t.Helper()
	iss := idptest.NewIssuer(t, &idptest.Options{Suffix: "/"})
	f := idptest.NewAuth0(t, iss)
	cfg := auth0.Config{Issuer: iss.URL, Audience: audience, EmailClaim: emailClaim, AllowInsecure: true, HTTPClient: iss.Client()}
	if mod != nil {
		mod(&cfg)
	}
	v, err := cfg.Open()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return iss, f, v
}

func checkTokenAbsent(t *testing.T, err error, token string) {
	t.Helper()
	if strings.Contains(err.Error(), token) || strings.Contains(identity.Reason(err), token) {
		t.Errorf("error text carries the token: %q", err)
	}
}

func TestVerify(t *testing.T) {
	userinfoAud := []string{audience, "https://example.us.auth0.com/userinfo"}
	tests := []struct {
		name          string
		aud           any
		extra         map[string]any
		wantEmail     string
		wantVerified  bool
		wantName      string
		wantUserInfo  int
		wantAllScopes []string
	}{
		{"aud as a string, email from /userinfo", audience, nil, jane.Email, true, "Jane Doe", 1, nil},
		{"aud as an array, email from /userinfo", userinfoAud, nil, jane.Email, true, "Jane Doe", 1, nil},
		{"email from the namespaced claim", userinfoAud,
			map[string]any{emailClaim: "jane@acme.com", emailClaim + "_verified": true}, "jane@acme.com", true, "", 0, nil},
		{"unverified namespaced email", audience,
			map[string]any{emailClaim: "jane@acme.com"}, "jane@acme.com", false, "", 0, nil},
		{"permissions become scopes", audience,
			map[string]any{"permissions": []string{"mcp:write", "mcp:admin"}}, jane.Email, true, "Jane Doe", 1,
			[]string{"openid", "profile", "email", "mcp:read", "mcp:write", "mcp:admin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, f, v := setup(t, nil)
			extra := map[string]any{"scope": scopes}
			for k, val := range tt.extra {
				extra[k] = val
			}
			p, err := v.Verify(context.Background(), f.Mint(jane, tt.aud, extra))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if p.Expiry.IsZero() || time.Until(p.Expiry) > time.Hour {
				t.Errorf("Expiry = %v", p.Expiry)
			}
			got := *p
			got.Expiry = time.Time{}
			want := identity.Principal{
				Provider: "auth0", Subject: "auth0:google-oauth2|103547991597142817347",
				Email: tt.wantEmail, EmailVerified: tt.wantVerified, Name: tt.wantName,
				Scopes: cmpOr(tt.wantAllScopes, []string{"openid", "profile", "email", "mcp:read"}),
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("principal =\n%+v\nwant\n%+v", got, want)
			}
			if n := f.UserInfo.Calls(); n != tt.wantUserInfo {
				t.Errorf("/userinfo called %d times, want %d", n, tt.wantUserInfo)
			}
		})
	}
}

func cmpOr(a, b []string) []string {
	if a != nil {
		return a
	}
	return b
}

// TestWithoutOpenIDScope: /userinfo answers only tokens granted openid, so
// it is not asked about others, which are accepted without an email.
func TestWithoutOpenIDScope(t *testing.T) {
	_, f, v := setup(t, nil)
	p, err := v.Verify(context.Background(), f.Mint(jane, audience, map[string]any{"scope": "mcp:read"}))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if p.Email != "" || p.EmailVerified || f.UserInfo.Calls() != 0 {
		t.Errorf("principal %+v after %d /userinfo calls, want no email and no call", p, f.UserInfo.Calls())
	}
}

func TestUserInfoIsCachedPerSubject(t *testing.T) {
	_, f, v := setup(t, nil)
	john := idptest.Auth0User{Sub: "auth0|5f7c8ec7c33c6c004bbafe82", Email: "john@exampleco.com", Name: "John Doe"}
	for n, u := range []idptest.Auth0User{jane, jane, john, jane, john} {
		tok := f.Mint(u, audience, map[string]any{"scope": scopes, "jti": n}) // a new token each time
		p, err := v.Verify(context.Background(), tok)
		if err != nil {
			t.Fatalf("token %d: %v", n, err)
		}
		if p.Email != u.Email {
			t.Errorf("token %d: email %q, want %q", n, p.Email, u.Email)
		}
	}
	if n := f.UserInfo.Calls(); n != 2 {
		t.Errorf("/userinfo called %d times for two subjects, want 2", n)
	}
}

func TestUserInfoConcurrentFirstUse(t *testing.T) {
	_, f, v := setup(t, nil)
	// Fetch the signing keys first: the burst below is about /userinfo.
	if _, err := v.Verify(context.Background(), f.Mint(jane, audience, map[string]any{"scope": "mcp:read"})); err != nil {
		t.Fatal(err)
	}
	f.UserInfo.SetDelay(100 * time.Millisecond)
	var tokens []string
	for n := range 20 {
		tokens = append(tokens, f.Mint(jane, audience, map[string]any{"scope": scopes, "jti": n}))
	}
	var wg sync.WaitGroup
	for _, tok := range tokens {
		wg.Go(func() {
			if p, err := v.Verify(context.Background(), tok); err != nil || p.Email != jane.Email {
				t.Errorf("Verify = %+v, %v", p, err)
			}
		})
	}
	wg.Wait()
	if n := f.UserInfo.Calls(); n != 1 {
		t.Errorf("20 concurrent first uses of one subject made %d /userinfo calls, want 1", n)
	}
}

func TestUserInfoTTL(t *testing.T) {
	_, f, v := setup(t, func(c *auth0.Config) { c.UserInfoTTL = 50 * time.Millisecond })
	for range 2 {
		if _, err := v.Verify(context.Background(), f.Mint(jane, audience, map[string]any{"scope": scopes})); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Millisecond)
	}
	if n := f.UserInfo.Calls(); n != 2 {
		t.Errorf("/userinfo called %d times across an expired TTL, want 2", n)
	}
}
