package google_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/google"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
)

// Gatehouse's OAuth client, and another application's.
const (
	clientID      = "407408718192.apps.googleusercontent.com"
	otherClientID = "1234987819200-other.apps.googleusercontent.com"
)

// unknownToken is an access token Google never issued.
const unknownToken = "ya29.a0AfB_byC3xq9Zk1Lw2mN4oP5qR6sT7uV8wX9yZ0aB1cD2eF3gH4iJ5kL6"

// setup starts an issuer playing Google, its tokeninfo and userinfo fakes,
// and a provider pointed at them.
func setup(t *testing.T) (*idptest.Issuer, *idptest.Google, *google.Provider) {
	t.Helper()
	iss := idptest.NewIssuer(t, nil)
	f := idptest.NewGoogle(t, iss, clientID)
	p, err := google.Config{
		ClientID:      clientID,
		Issuer:        iss.URL,
		TokenInfoURL:  f.TokenInfoURL(),
		UserInfoURL:   f.UserInfoURL(),
		AllowInsecure: true,
		HTTPClient:    iss.Client(),
	}.Open()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return iss, f, p
}

// checkInvalid fails unless err is an invalid-token error (never an
// outage) whose reason mentions want and whose text carries no token.
func checkInvalid(t *testing.T, p *identity.Principal, err error, token, want string) {
	t.Helper()
	if !errors.Is(err, identity.ErrInvalidToken) || errors.Is(err, identity.ErrUnavailable) {
		t.Fatalf("Verify = %+v, %v; want an invalid-token error", p, err)
	}
	if !strings.Contains(identity.Reason(err), want) {
		t.Errorf("reason %q, want it to mention %q", identity.Reason(err), want)
	}
	checkTokenAbsent(t, err, token)
}

func checkTokenAbsent(t *testing.T, err error, token string) {
	t.Helper()
	if strings.Contains(err.Error(), token) || strings.Contains(identity.Reason(err), token) {
		t.Errorf("error text carries the token: %q", err)
	}
}

func TestIDTokens(t *testing.T) {
	iss, f, p := setup(t)
	schemeless := strings.TrimPrefix(iss.URL, "http://")
	profile := map[string]any{"email": "alice@acme.com", "email_verified": true, "name": "Alice Liddell", "azp": clientID}
	with := func(extra map[string]any) map[string]any {
		c := map[string]any{}
		for k, v := range profile {
			c[k] = v
		}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	tests := []struct {
		name       string
		claims     map[string]any
		wantClaims map[string]any
	}{
		{"Workspace account", with(map[string]any{"hd": "acme.com"}), map[string]any{"hd": "acme.com"}},
		{"consumer account (no hd)", with(nil), nil},
		{"legacy iss without scheme", with(map[string]any{"iss": schemeless, "hd": "acme.com"}), map[string]any{"hd": "acme.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := iss.Sign(iss.Claims("110169484474386276334", clientID, tt.claims))
			got, err := p.IDTokens().Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Expiry.IsZero() || time.Until(got.Expiry) > time.Hour {
				t.Errorf("Expiry = %v", got.Expiry)
			}
			got.Expiry = time.Time{}
			want := identity.Principal{
				Provider: "google", Subject: "google:110169484474386276334",
				Email: "alice@acme.com", EmailVerified: true, Name: "Alice Liddell", Claims: tt.wantClaims,
			}
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("principal =\n%+v\nwant\n%+v", *got, want)
			}
		})
	}
	if n := f.TokenInfo.Calls() + f.UserInfo.Calls(); n != 0 {
		t.Errorf("ID tokens caused %d tokeninfo/userinfo calls, want 0", n)
	}
	if got := p.IDTokens().Issuers(); !slices.Contains(got, iss.URL) || !slices.Contains(got, schemeless) {
		t.Errorf("Issuers() = %q, want %q and %q", got, iss.URL, schemeless)
	}
}

func TestIDTokenIssuersDefault(t *testing.T) {
	p, err := google.Config{ClientID: clientID}.Open()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"https://accounts.google.com", "accounts.google.com"}
	if got := p.IDTokens().Issuers(); !reflect.DeepEqual(got, want) {
		t.Errorf("Issuers() = %q, want %q", got, want)
	}
}

func TestIDTokenRejects(t *testing.T) {
	iss, _, p := setup(t)
	tests := []struct {
		name, token, reason string
	}{
		{"issued to another client", iss.Sign(iss.Claims("1101", otherClientID, nil)), "audience"},
		{"expired", iss.Sign(iss.Claims("1101", clientID, map[string]any{"exp": time.Now().Add(-time.Minute).Unix()})), "expired"},
		{"another issuer", iss.Sign(iss.Claims("1101", clientID, map[string]any{"iss": "https://evil.example.com"})), "issued by"},
		{"unsigned", idptest.Unsigned(iss.Claims("1101", clientID, nil)), "algorithm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.IDTokens().Verify(context.Background(), tt.token)
			checkInvalid(t, got, err, tt.token, tt.reason)
		})
	}
}

func TestAccessToken(t *testing.T) {
	_, f, p := setup(t)
	expiry := time.Now().Add(50 * time.Minute).Truncate(time.Second)
	accessToken := f.Issue(idptest.GoogleGrant{
		Sub: "110169484474386276334", Scope: "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile",
		Expiry: expiry, Email: "alice@acme.com", Name: "Alice Liddell", HD: "acme.com",
	})
	got, err := p.AccessTokens().Verify(context.Background(), accessToken)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := &identity.Principal{
		Provider: "google", Subject: "google:110169484474386276334",
		Email: "alice@acme.com", EmailVerified: true, Name: "Alice Liddell",
		Scopes: []string{"openid", "https://www.googleapis.com/auth/userinfo.email", "https://www.googleapis.com/auth/userinfo.profile"},
		Expiry: expiry, Claims: map[string]any{"hd": "acme.com"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("principal =\n%+v\nwant\n%+v", got, want)
	}
	for ep, e := range map[string]*idptest.Endpoint{"tokeninfo": f.TokenInfo, "userinfo": f.UserInfo} {
		if n := e.Calls(); n != 1 {
			t.Errorf("%s called %d times, want 1", ep, n)
		}
	}
}

// TestAccessTokenWithoutProfile: a token that may not read the profile
// still identifies its user, without an email.
func TestAccessTokenWithoutProfile(t *testing.T) {
	for _, status := range []int{http.StatusForbidden, http.StatusUnauthorized} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			_, f, p := setup(t)
			accessToken := f.Issue(idptest.GoogleGrant{Sub: "1101", Scope: "openid", Email: "alice@acme.com", HD: "acme.com"})
			f.UserInfo.FailStatus(status)
			got, err := p.AccessTokens().Verify(context.Background(), accessToken)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Subject != "google:1101" || got.Email != "" || got.EmailVerified || got.Claims != nil {
				t.Errorf("principal = %+v, want google:1101 without email or hd", got)
			}
		})
	}
}

func TestAccessTokenRejects(t *testing.T) {
	const sub = "110169484474386276334"
	tests := []struct {
		name   string
		grant  *idptest.GoogleGrant // nil: Google does not know the token
		reason string
	}{
		{"unknown or revoked (400)", nil, "not valid"},
		{"expired (400)", &idptest.GoogleGrant{Sub: sub, Expiry: time.Now().Add(-time.Second)}, "not valid"},
		{"aud is another app", &idptest.GoogleGrant{Sub: sub, Aud: otherClientID}, "another application"},
		{"aud is another app, no azp", &idptest.GoogleGrant{Sub: sub, Aud: otherClientID, NoAzp: true}, "another application"},
		{"azp is another app", &idptest.GoogleGrant{Sub: sub, Azp: otherClientID}, "another application"},
		{"no user (no sub)", &idptest.GoogleGrant{Scope: "https://www.googleapis.com/auth/drive"}, "does not identify a user"},
		{"userinfo names another user", &idptest.GoogleGrant{Sub: sub, UserInfoSub: "999"}, "could not be confirmed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, f, p := setup(t)
			accessToken := unknownToken
			if tt.grant != nil {
				accessToken = f.Issue(*tt.grant)
			}
			got, err := p.AccessTokens().Verify(context.Background(), accessToken)
			checkInvalid(t, got, err, accessToken, tt.reason)
		})
	}
	t.Run("malformed", func(t *testing.T) {
		_, f, p := setup(t)
		got, err := p.AccessTokens().Verify(context.Background(), "ya29.with space")
		checkInvalid(t, got, err, "ya29.with space", "malformed")
		if n := f.TokenInfo.Calls(); n != 0 {
			t.Errorf("a malformed token was sent to Google (%d calls)", n)
		}
	})
}

func TestUnavailable(t *testing.T) {
	tests := []struct {
		name   string
		ep     func(*idptest.Google) *idptest.Endpoint
		status int
		down   bool
	}{
		{name: "tokeninfo 503", ep: tokenInfo, status: http.StatusServiceUnavailable},
		{name: "tokeninfo 429", ep: tokenInfo, status: http.StatusTooManyRequests},
		{name: "tokeninfo 404 (misconfigured URL)", ep: tokenInfo, status: http.StatusNotFound},
		{name: "userinfo 500", ep: userInfo, status: http.StatusInternalServerError},
		{name: "Google down", down: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, f, p := setup(t)
			accessToken := f.Issue(idptest.GoogleGrant{Sub: "1101", Email: "alice@acme.com"})
			if tt.ep != nil {
				tt.ep(f).FailStatus(tt.status)
			}
			iss.SetDown(tt.down)
			_, err := p.AccessTokens().Verify(context.Background(), accessToken)
			if !errors.Is(err, identity.ErrUnavailable) || errors.Is(err, identity.ErrInvalidToken) {
				t.Fatalf("access token: err = %v, want ErrUnavailable", err)
			}
			checkTokenAbsent(t, err, accessToken)
			if !tt.down {
				return
			}
			idToken := iss.Sign(iss.Claims("1101", clientID, nil))
			_, err = p.IDTokens().Verify(context.Background(), idToken)
			if !errors.Is(err, identity.ErrUnavailable) || errors.Is(err, identity.ErrInvalidToken) {
				t.Fatalf("ID token: err = %v, want ErrUnavailable", err)
			}
			checkTokenAbsent(t, err, idToken)
		})
	}
}

func tokenInfo(f *idptest.Google) *idptest.Endpoint { return f.TokenInfo }
func userInfo(f *idptest.Google) *idptest.Endpoint  { return f.UserInfo }

func TestConfig(t *testing.T) {
	_, err := google.Config{Issuer: "http://accounts.example.com", UserInfoURL: "ftp://x"}.Open()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"client id is required", `issuer: "http://accounts.example.com" is plain http`, "userinfo URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	iss := idptest.NewIssuer(t, nil)
	if _, err := (google.Config{ClientID: clientID, Issuer: iss.URL, AllowInsecure: true}).Open(); err != nil {
		t.Errorf("good config refused: %v", err)
	}
	if n := iss.DiscoveryRequests.Load() + iss.JWKSRequests.Load(); n != 0 {
		t.Errorf("Open made %d network calls, want 0", n)
	}
}
