package identity_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
	"github.com/gatehouse-mcp/gatehouse/identity/oidc"
)

// BenchmarkResolveCacheHit: a credential validated before (the common case).
func BenchmarkResolveCacheHit(b *testing.B) {
	v := &counting{fn: principal(time.Time{}, "mcp:read")}
	r := identity.NewResolver(identity.ResolverOptions{Prefixes: []identity.PrefixRoute{{Prefix: "gk_", Verifier: v}}})
	defer r.Close()
	tok := "gk_aaaaaaaaaaaaaaaa_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
	if _, err := r.Resolve(context.Background(), tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Resolve(context.Background(), tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(v.calls.Load()), "upstream-calls")
}

// BenchmarkVerifyJWTWarmJWKS: a JWT never seen before, from an issuer whose
// keys are cached: routing, signature (RS256), claims. No cache in front.
func BenchmarkVerifyJWTWarmJWKS(b *testing.B) {
	iss := idptest.NewIssuer(b, nil)
	v, err := oidc.Config{Name: "corp", Issuer: iss.URL, Audiences: []string{"gh"}, AllowInsecure: true}.Open()
	if err != nil {
		b.Fatal(err)
	}
	r := identity.NewResolver(identity.ResolverOptions{Issuers: map[string]identity.Verifier{iss.URL: v}})
	defer r.Close()
	const n = 2000
	toks := make([]string, n)
	for i := range toks {
		toks[i] = iss.Sign(iss.Claims(fmt.Sprint("user-", i), "gh", map[string]any{"email": "a@acme.com", "email_verified": true}))
	}
	if _, err := v.Verify(context.Background(), toks[0]); err != nil { // warm the JWKS
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := v.Verify(context.Background(), toks[i%n]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(iss.JWKSRequests.Load()), "jwks-fetches")
}

// BenchmarkConcurrentMisses: 1,000 simultaneous first uses of one JWT, the
// JWKS not fetched yet. Reports the verifications and JWKS fetches the
// whole burst caused (want 1 and 1).
func BenchmarkConcurrentMisses(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		iss := idptest.NewIssuer(b, nil)
		ov, err := oidc.Config{Name: "corp", Issuer: iss.URL, Audiences: []string{"gh"}, AllowInsecure: true}.Open()
		if err != nil {
			b.Fatal(err)
		}
		v := &countingVerifier{next: ov}
		r := identity.NewResolver(identity.ResolverOptions{Issuers: map[string]identity.Verifier{iss.URL: v}})
		tok := iss.Sign(iss.Claims("burst", "gh", nil))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 1000 {
			wg.Go(func() {
				<-start
				if _, err := r.Resolve(context.Background(), tok); err != nil {
					b.Error(err)
				}
			})
		}
		b.StartTimer()
		close(start)
		wg.Wait()
		b.StopTimer()
		b.ReportMetric(float64(v.calls), "verifications/burst")
		b.ReportMetric(float64(iss.JWKSRequests.Load()), "jwks-fetches/burst")
		r.Close()
		b.StartTimer()
	}
}

type countingVerifier struct {
	mu    sync.Mutex
	calls int
	next  identity.Verifier
}

func (c *countingVerifier) Verify(ctx context.Context, tok string) (*identity.Principal, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	return c.next.Verify(ctx, tok)
}
