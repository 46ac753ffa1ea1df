package oidc_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
	"github.com/gatehouse-mcp/gatehouse/identity/oidc"
)

func open(t *testing.T, iss *idptest.Issuer, mod func(*oidc.Config)) *oidc.Verifier {
	t.Helper()
	cfg := oidc.Config{Name: "corp", Issuer: iss.URL, Audiences: []string{"gatehouse"}, AllowInsecure: true, HTTPClient: iss.Client()}
	if mod != nil {
		mod(&cfg)
	}
	v, err := cfg.Open()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyHappyPath(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	v := open(t, iss, nil)
	tok := iss.Sign(iss.Claims("u-1", []string{"other", "gatehouse"}, map[string]any{
		"email": "alice@acme.com", "email_verified": "true", "name": "Alice",
		"scope": "openid mcp:read", "scp": []string{"mcp:write"}, "permissions": []string{"mcp:read"},
	}))
	p, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "corp:u-1" || p.Provider != "corp" || p.Email != "alice@acme.com" || !p.EmailVerified || p.Name != "Alice" {
		t.Errorf("principal = %+v", p)
	}
	if got := strings.Join(p.Scopes, " "); got != "openid mcp:read mcp:write" {
		t.Errorf("scopes = %q", got)
	}
	if p.Expiry.IsZero() || time.Until(p.Expiry) > time.Hour {
		t.Errorf("expiry = %v", p.Expiry)
	}
}

// TestAttacks: every token here must be refused as invalid (401), and none
// may be mistaken for an outage (503).
func TestAttacks(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	other := idptest.NewIssuer(t, nil)
	v := open(t, iss, nil)
	good := iss.Claims("u-1", "gatehouse", nil)
	stranger, _ := rsa.GenerateKey(rand.Reader, 2048)
	tampered := iss.Sign(good)
	parts := strings.Split(tampered, ".")
	parts[1] = strings.TrimRight(parts[1], "A") + "B" // flip the payload, keep the signature
	tampered = strings.Join(parts, ".")

	tests := []struct {
		name, token, reason string
	}{
		{"alg none", idptest.Unsigned(good), "algorithm"},
		{"HS256 keyed with the RSA public key", idptest.SignWith(jose.HS256, iss.PublicKeyPEM(), iss.KeyID(), good), "algorithm"},
		{"wrong issuer", iss.Sign(iss.Claims("u-1", "gatehouse", map[string]any{"iss": other.URL})), "issued by"},
		{"another issuer's key under our kid", idptest.SignWith(jose.RS256, stranger, iss.KeyID(), good), "signature"},
		{"wrong audience", iss.Sign(iss.Claims("u-1", "someone-else", nil)), "audience"},
		{"no audience", iss.Sign(iss.Claims("u-1", nil, map[string]any{"aud": nil})), "audience"},
		{"expired", iss.Sign(iss.Claims("u-1", "gatehouse", map[string]any{"exp": time.Now().Add(-time.Minute).Unix()})), "expired"},
		{"no exp", iss.Sign(iss.Claims("u-1", "gatehouse", map[string]any{"exp": nil})), "expired"},
		{"nbf in the future", iss.Sign(iss.Claims("u-1", "gatehouse", map[string]any{"nbf": time.Now().Add(time.Hour).Unix()})), "not valid yet"},
		{"unknown kid", idptest.SignWith(jose.RS256, stranger, "kid-nobody-knows", good), "key the issuer does not publish"},
		{"tampered payload", tampered, ""},
		{"no subject", iss.Sign(iss.Claims("", "gatehouse", nil)), "subject"},
		{"garbage", "a.b.c", ""},
	}
	for _, tt := range tests {
		_, err := v.Verify(context.Background(), tt.token)
		if !errors.Is(err, identity.ErrInvalidToken) || errors.Is(err, identity.ErrUnavailable) {
			t.Errorf("%s: err = %v, want an invalid-token error", tt.name, err)
			continue
		}
		if !strings.Contains(identity.Reason(err), tt.reason) {
			t.Errorf("%s: reason %q, want it to mention %q", tt.name, identity.Reason(err), tt.reason)
		}
	}
}

// TestUnknownKidFloodIsRateLimited: random kids cause at most one JWKS
// fetch per MinRefresh, however many tokens arrive.
func TestUnknownKidFloodIsRateLimited(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	v := open(t, iss, nil) // default MinRefresh: 10s
	stranger, _ := rsa.GenerateKey(rand.Reader, 2048)
	for n := range 200 {
		tok := idptest.SignWith(jose.RS256, stranger, fmt.Sprintf("random-%d", n), iss.Claims("u", "gatehouse", nil))
		if _, err := v.Verify(context.Background(), tok); !errors.Is(err, identity.ErrInvalidToken) {
			t.Fatalf("token %d: %v", n, err)
		}
	}
	if n := iss.JWKSRequests.Load(); n != 1 {
		t.Errorf("200 unknown kids caused %d JWKS fetches, want 1", n)
	}
	// A good token still verifies with the cached keys.
	if _, err := v.Verify(context.Background(), iss.Sign(iss.Claims("u", "gatehouse", nil))); err != nil {
		t.Errorf("good token during flood: %v", err)
	}
}

func TestKeyRotation(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	v := open(t, iss, func(c *oidc.Config) { c.MinRefresh = 20 * time.Millisecond })
	if _, err := v.Verify(context.Background(), iss.Sign(iss.Claims("u", "gatehouse", nil))); err != nil {
		t.Fatal(err)
	}
	iss.Rotate()
	time.Sleep(30 * time.Millisecond)
	if _, err := v.Verify(context.Background(), iss.Sign(iss.Claims("u", "gatehouse", nil))); err != nil {
		t.Errorf("token signed with the rotated-in key: %v", err)
	}
	if n := iss.JWKSRequests.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times, want 2", n)
	}
}

// TestIssuerOutage: an issuer that is down makes new verifications
// unavailable (503), never invalid (401); keys already fetched keep working.
func TestIssuerOutage(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	cold := open(t, iss, nil)
	warm := open(t, iss, nil)
	tok := iss.Sign(iss.Claims("u", "gatehouse", nil))
	if _, err := warm.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	iss.SetDown(true)
	if _, err := cold.Verify(context.Background(), tok); !errors.Is(err, identity.ErrUnavailable) || errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("cold verifier, issuer down: %v, want ErrUnavailable", err)
	}
	if _, err := warm.Verify(context.Background(), iss.Sign(iss.Claims("u2", "gatehouse", nil))); err != nil {
		t.Errorf("warm verifier, issuer down, known key: %v", err)
	}
	// An unknown kid during the outage is not blamed on the token.
	stranger, _ := rsa.GenerateKey(rand.Reader, 2048)
	other := open(t, iss, nil)
	_, err := other.Verify(context.Background(), idptest.SignWith(jose.RS256, stranger, "new-kid", iss.Claims("u", "gatehouse", nil)))
	if !errors.Is(err, identity.ErrUnavailable) {
		t.Errorf("unknown kid while the issuer is down: %v, want ErrUnavailable", err)
	}
}

func TestConfigValidation(t *testing.T) {
	_, err := oidc.Config{Issuer: "http://idp.example.com", Algorithms: []string{"HS256"}}.Open()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"name is required", "plain http", "audience is required", `"HS256" is not accepted`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := (oidc.Config{Name: "x", Issuer: "https://idp.example.com", Audiences: []string{"a"}}).Open(); err != nil {
		t.Errorf("good config refused: %v", err)
	}
}

func TestDiscoveryIssuerMismatchIsRefused(t *testing.T) {
	iss := idptest.NewIssuer(t, &idptest.Options{Suffix: "/realms/corp"}) // discovery lives elsewhere
	v := open(t, iss, func(c *oidc.Config) { c.Issuer = iss.ServerURL() })
	_, err := v.Verify(context.Background(), iss.Sign(iss.Claims("u", "gatehouse", map[string]any{"iss": iss.ServerURL()})))
	if !errors.Is(err, identity.ErrUnavailable) || !strings.Contains(err.Error(), "discovery") {
		t.Errorf("err = %v, want a discovery error", err)
	}
}

// TestColdStartConcurrentTokens: many valid tokens arriving together at a
// verifier that has not fetched the JWKS yet all verify, with one fetch.
func TestColdStartConcurrentTokens(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	v := open(t, iss, nil)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for n := range 20 {
		wg.Go(func() {
			<-start
			if _, err := v.Verify(context.Background(), iss.Sign(iss.Claims(fmt.Sprint("u", n), "gatehouse", nil))); err != nil {
				t.Errorf("token %d: %v", n, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := iss.JWKSRequests.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times, want 1", n)
	}
}

// TestCheck: the start-up check says which issuer failed and why, naming a
// trailing-slash mismatch between the configuration and discovery.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	iss := idptest.NewIssuer(t, nil)
	slashed := idptest.NewIssuer(t, &idptest.Options{Suffix: "/"})
	gone := idptest.NewIssuer(t, nil)
	down := idptest.NewIssuer(t, nil)
	down.SetDown(true)
	tests := []struct {
		name   string
		issuer string
		want   []string // in the error; none: the check passes
	}{
		{"reachable", iss.URL, nil},
		{"configured with a slash the issuer lacks", iss.URL + "/", []string{"differ only by a trailing slash", `configure "` + iss.URL + `"`}},
		{"configured without the issuer's slash", strings.TrimSuffix(slashed.URL, "/"), []string{"differ only by a trailing slash", `configure "` + slashed.URL + `"`}},
		{"another issuer's discovery", iss.URL + "/realms/x", []string{"404"}},
		{"down", down.URL, []string{"503"}},
		{"unreachable", gone.URL, []string{gone.ServerURL()}},
	}
	gone.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := open(t, iss, func(c *oidc.Config) { c.Issuer, c.HTTPClient = tt.issuer, nil })
			err := v.Check(ctx)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("check failed: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, identity.ErrUnavailable) {
				t.Fatalf("check = %v, want an unavailable error", err)
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
