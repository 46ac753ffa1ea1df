package identity_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
	"github.com/gatehouse-mcp/gatehouse/identity/oidc"
)

// counting is a Verifier that counts its calls and answers what it is told.
type counting struct {
	calls atomic.Int64
	delay time.Duration
	fn    func(token string) (*identity.Principal, error)
}

func (c *counting) Verify(ctx context.Context, token string) (*identity.Principal, error) {
	c.calls.Add(1)
	time.Sleep(c.delay)
	return c.fn(token)
}

func principal(exp time.Time, scopes ...string) func(string) (*identity.Principal, error) {
	return func(string) (*identity.Principal, error) {
		return &identity.Principal{Provider: "test", Subject: "test:1", Expiry: exp, Scopes: scopes}, nil
	}
}

func TestRoutingByPrefixAndExactIssuer(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	v, err := oidc.Config{Name: "corp", Issuer: iss.URL, Audiences: []string{"gh"}, AllowInsecure: true}.Open()
	if err != nil {
		t.Fatal(err)
	}
	keys := &counting{fn: principal(time.Time{}, "mcp:read")}
	r := identity.NewResolver(identity.ResolverOptions{
		Prefixes: []identity.PrefixRoute{{Prefix: "gk_", Verifier: keys}},
		Issuers:  map[string]identity.Verifier{iss.URL: v},
	})
	defer r.Close()
	ctx := context.Background()

	if p, err := r.Resolve(ctx, iss.Sign(iss.Claims("u1", "gh", nil))); err != nil || p.Subject != "corp:u1" {
		t.Errorf("JWT of a configured issuer: %+v, %v", p, err)
	}
	if _, err := r.Resolve(ctx, "gk_anything"); err != nil || keys.calls.Load() != 1 {
		t.Errorf("prefix route: %v (calls %d)", err, keys.calls.Load())
	}
	// A JWT naming an issuer we do not trust never reaches any verifier or network.
	other := idptest.NewIssuer(t, nil)
	before := iss.JWKSRequests.Load() + other.JWKSRequests.Load() + other.DiscoveryRequests.Load()
	_, err = r.Resolve(ctx, other.Sign(other.Claims("u1", "gh", nil)))
	if !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("foreign issuer: %v", err)
	}
	if after := iss.JWKSRequests.Load() + other.JWKSRequests.Load() + other.DiscoveryRequests.Load(); after != before {
		t.Errorf("a foreign token caused %d requests to identity providers", after-before)
	}
	for _, tok := range []string{"", "opaque-token", "x.y", string(make([]byte, identity.MaxTokenBytes+1))} {
		if _, err := r.Resolve(ctx, tok); !errors.Is(err, identity.ErrInvalidToken) {
			t.Errorf("Resolve(%.10q) = %v", tok, err)
		}
	}
}

func TestDefaultScopes(t *testing.T) {
	for _, tt := range []struct {
		given, want []string
	}{
		{nil, []string{"mcp:read", "mcp:write"}},
		{[]string{"openid", "email"}, []string{"mcp:read", "mcp:write"}},
		{[]string{"openid", "mcp:read"}, []string{"mcp:read"}},
		{[]string{"mcp:admin", "mcp:read", "mcp:read"}, []string{"mcp:admin", "mcp:read"}},
	} {
		r := identity.NewResolver(identity.ResolverOptions{Prefixes: []identity.PrefixRoute{{Prefix: "t_", Verifier: &counting{fn: principal(time.Time{}, tt.given...)}}}})
		p, err := r.Resolve(context.Background(), "t_x")
		r.Close()
		if err != nil || len(p.Scopes) != len(tt.want) {
			t.Errorf("scopes %v → %v (%v), want %v", tt.given, p.Scopes, err, tt.want)
			continue
		}
		for i := range tt.want {
			if p.Scopes[i] != tt.want[i] {
				t.Errorf("scopes %v → %v, want %v", tt.given, p.Scopes, tt.want)
			}
		}
	}
}

// TestCacheNeverOutlivesTheToken: a principal expiring in 150ms is
// re-verified (and refused) after that, though the cache TTL is an hour.
func TestCacheNeverOutlivesTheToken(t *testing.T) {
	v := &counting{fn: principal(time.Now().Add(150 * time.Millisecond))}
	r := identity.NewResolver(identity.ResolverOptions{Prefixes: []identity.PrefixRoute{{Prefix: "t_", Verifier: v}}, CacheTTL: time.Hour})
	defer r.Close()
	for range 5 {
		if _, err := r.Resolve(context.Background(), "t_x"); err != nil {
			t.Fatal(err)
		}
	}
	if v.calls.Load() != 1 {
		t.Errorf("%d verifications for 5 calls within the TTL, want 1", v.calls.Load())
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := r.Resolve(context.Background(), "t_x"); !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("after expiry: %v, want invalid", err)
	}
}

func TestNegativeCachingAndOutages(t *testing.T) {
	var fail atomic.Pointer[error]
	set := func(err error) { fail.Store(&err) }
	set(identity.Invalid("nope"))
	v := &counting{fn: func(string) (*identity.Principal, error) { return nil, *fail.Load() }}
	r := identity.NewResolver(identity.ResolverOptions{Prefixes: []identity.PrefixRoute{{Prefix: "t_", Verifier: v}}, NegativeTTL: time.Minute})
	defer r.Close()
	for range 3 {
		_, _ = r.Resolve(context.Background(), "t_bad")
	}
	if v.calls.Load() != 1 {
		t.Errorf("a rejected token was verified %d times, want 1 (negative cache)", v.calls.Load())
	}
	set(identity.ErrUnavailable)
	for range 3 {
		if _, err := r.Resolve(context.Background(), "t_other"); !errors.Is(err, identity.ErrUnavailable) {
			t.Errorf("outage: %v", err)
		}
	}
	if v.calls.Load() != 4 {
		t.Errorf("outage answers were cached: %d calls, want 4", v.calls.Load())
	}
}

// TestConcurrentMissesCollapse: 1,000 simultaneous first uses of one token
// cause exactly one upstream verification.
func TestConcurrentMissesCollapse(t *testing.T) {
	v := &counting{delay: 50 * time.Millisecond, fn: principal(time.Time{})}
	r := identity.NewResolver(identity.ResolverOptions{Prefixes: []identity.PrefixRoute{{Prefix: "t_", Verifier: v}}})
	defer r.Close()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 1000 {
		wg.Go(func() {
			<-start
			if _, err := r.Resolve(context.Background(), "t_same"); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := v.calls.Load(); n != 1 {
		t.Errorf("1000 concurrent misses caused %d verifications, want 1", n)
	}
}

func TestOneCallerGoingAwayDoesNotFailTheOthers(t *testing.T) {
	v := &counting{delay: 100 * time.Millisecond, fn: principal(time.Time{})}
	r := identity.NewResolver(identity.ResolverOptions{Prefixes: []identity.PrefixRoute{{Prefix: "t_", Verifier: v}}})
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, _ = r.Resolve(ctx, "t_same") }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if _, err := r.Resolve(context.Background(), "t_same"); err != nil {
		t.Errorf("second caller failed with the first caller's cancellation: %v", err)
	}
}

func TestForget(t *testing.T) {
	v := &counting{fn: func(tok string) (*identity.Principal, error) {
		return &identity.Principal{Subject: tok, APIKeyID: tok}, nil
	}}
	r := identity.NewResolver(identity.ResolverOptions{Prefixes: []identity.PrefixRoute{{Prefix: "t_", Verifier: v}}})
	defer r.Close()
	for _, tok := range []string{"t_a", "t_b"} {
		_, _ = r.Resolve(context.Background(), tok)
	}
	if n := r.Forget(func(p *identity.Principal) bool { return p.APIKeyID == "t_a" }); n != 1 {
		t.Errorf("forgot %d entries, want 1", n)
	}
	_, _ = r.Resolve(context.Background(), "t_a")
	_, _ = r.Resolve(context.Background(), "t_b")
	if v.calls.Load() != 3 {
		t.Errorf("calls = %d, want 3 (t_a re-verified, t_b cached)", v.calls.Load())
	}
}
