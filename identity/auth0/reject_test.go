package auth0_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/auth0"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
)

// TestRejects: every token here must be refused as invalid (401), never
// mistaken for an outage (503).
func TestRejects(t *testing.T) {
	iss, f, v := setup(t, nil)
	good := iss.Claims(jane.Sub, audience, map[string]any{"scope": scopes})
	with := func(claim string, value any) map[string]any {
		return iss.Claims(jane.Sub, audience, map[string]any{"scope": scopes, claim: value})
	}
	stranger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	impostor := jane
	impostor.UserInfoSub = "auth0|someone-else"
	unknownToUserInfo := iss.Sign(iss.Claims(jane.Sub, audience, map[string]any{"scope": scopes, "jti": "unknown"}))

	tests := []struct {
		name, token, reason string
	}{
		{"HS256 keyed with the RSA public key", idptest.SignWith(jose.HS256, iss.PublicKeyPEM(), iss.KeyID(), good), "algorithm"},
		{"alg none", idptest.Unsigned(good), "algorithm"},
		{"RS384 (Auth0 signs with RS256 only)", idptest.SignWith(jose.RS384, stranger, iss.KeyID(), good), "algorithm"},
		{"wrong audience", f.Mint(jane, "https://api.other.example.com", map[string]any{"scope": scopes}), "audience"},
		{"expired", iss.Sign(with("exp", time.Now().Add(-time.Minute).Unix())), "expired"},
		{"issuer without the trailing slash", iss.Sign(with("iss", strings.TrimSuffix(iss.URL, "/"))), "issued by"},
		{"/userinfo rejects the token (401)", unknownToUserInfo, "did not accept"},
		{"/userinfo names another user", f.Mint(impostor, audience, map[string]any{"scope": scopes}), "could not be confirmed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := v.Verify(context.Background(), tt.token)
			if !errors.Is(err, identity.ErrInvalidToken) || errors.Is(err, identity.ErrUnavailable) {
				t.Fatalf("Verify = %+v, %v; want an invalid-token error", p, err)
			}
			if !strings.Contains(identity.Reason(err), tt.reason) {
				t.Errorf("reason %q, want it to mention %q", identity.Reason(err), tt.reason)
			}
			checkTokenAbsent(t, err, tt.token)
		})
	}
}

func TestUnavailable(t *testing.T) {
	tests := []struct {
		name   string
		status int
		down   bool
	}{
		{name: "/userinfo rate limited (429)", status: http.StatusTooManyRequests},
		{name: "/userinfo failing (503)", status: http.StatusServiceUnavailable},
		{name: "/userinfo unexpected answer (404)", status: http.StatusNotFound},
		{name: "Auth0 down after its keys were fetched", down: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, f, v := setup(t, nil)
			// Warm the key set with a token that needs no /userinfo.
			if _, err := v.Verify(context.Background(), f.Mint(jane, audience, map[string]any{emailClaim: jane.Email})); err != nil {
				t.Fatal(err)
			}
			if tt.status != 0 {
				f.UserInfo.FailStatus(tt.status)
			}
			iss.SetDown(tt.down)
			tok := f.Mint(jane, audience, map[string]any{"scope": scopes})
			_, err := v.Verify(context.Background(), tok)
			if !errors.Is(err, identity.ErrUnavailable) || errors.Is(err, identity.ErrInvalidToken) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			checkTokenAbsent(t, err, tok)
		})
	}
	t.Run("Auth0 down before its keys were fetched", func(t *testing.T) {
		iss, f, v := setup(t, nil)
		iss.SetDown(true)
		tok := f.Mint(jane, audience, map[string]any{"scope": scopes})
		if _, err := v.Verify(context.Background(), tok); !errors.Is(err, identity.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	})
}

// TestFailuresAreNotCached: an outage is not remembered as the subject's
// profile.
func TestFailuresAreNotCached(t *testing.T) {
	_, f, v := setup(t, nil)
	f.UserInfo.FailStatus(http.StatusTooManyRequests)
	tok := f.Mint(jane, audience, map[string]any{"scope": scopes})
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, identity.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	f.UserInfo.Restore()
	if p, err := v.Verify(context.Background(), tok); err != nil || p.Email != jane.Email {
		t.Errorf("after recovery: %+v, %v", p, err)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  auth0.Config
		want []string
	}{
		{"empty", auth0.Config{}, []string{"domain (or the issuer) is required", "audience"}},
		{"domain given as a URL", auth0.Config{Domain: "https://example.us.auth0.com", Audience: audience},
			[]string{"must be a host name"}},
		{"plain-http issuer, bad TTL", auth0.Config{Issuer: "http://example.us.auth0.com/", UserInfoTTL: -time.Second},
			[]string{"audience", "plain http", "TTL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg.Open()
			if err == nil {
				t.Fatal("bad config accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	v, err := auth0.Config{Domain: "example.us.auth0.com", Audience: audience}.Open()
	if err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	if got, want := v.Issuers(), []string{"https://example.us.auth0.com/"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Issuers() = %q, want %q", got, want)
	}
}
