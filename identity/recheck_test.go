package identity_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// rechecking is a Rechecker over a table of valid tokens: Verify accepts a
// token in the table, Recheck confirms those still in it (as the API key
// verifier does against its database). Recheck blocks while gate is set
// and reports each call on rechecked.
type rechecking struct {
	mu        sync.Mutex
	valid     map[string]bool // token → valid
	verifies  atomic.Int64
	rechecks  atomic.Int64
	fail      atomic.Bool
	gate      chan struct{} // when set, Recheck waits for it after reading
	read      chan struct{} // when set, Recheck signals it has read
	verifyAt  chan struct{} // when set, Verify waits for it after reading
	rechecked chan []identity.Recheck
}

func newRechecking(tokens ...string) *rechecking {
	r := &rechecking{valid: map[string]bool{}}
	for _, t := range tokens {
		r.valid[t] = true
	}
	return r
}

func (r *rechecking) setValid(token string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.valid[token] = ok
}

func (r *rechecking) principalOf(token string) *identity.Principal {
	return &identity.Principal{Provider: "test", Subject: "test:" + token, APIKeyID: token, Scopes: []string{"mcp:read"}}
}

func (r *rechecking) Verify(ctx context.Context, token string) (*identity.Principal, error) {
	r.verifies.Add(1)
	r.mu.Lock()
	ok := r.valid[token]
	r.mu.Unlock()
	if r.verifyAt != nil {
		<-r.verifyAt
	}
	if !ok {
		return nil, identity.Invalid("unknown token")
	}
	return r.principalOf(token), nil
}

func (r *rechecking) Recheck(ctx context.Context, cs []identity.Recheck) ([]*identity.Principal, error) {
	r.rechecks.Add(1)
	if r.fail.Load() {
		return nil, errors.New("database unreachable")
	}
	out := make([]*identity.Principal, len(cs))
	r.mu.Lock()
	for i, c := range cs {
		tok := c.Principal.APIKeyID
		// The Resolver hands the credential's hash, never the credential.
		if r.valid[tok] && c.TokenHash == sha256.Sum256([]byte(tok)) {
			out[i] = r.principalOf(tok)
		}
	}
	r.mu.Unlock()
	if r.read != nil {
		r.read <- struct{}{}
	}
	if r.gate != nil {
		<-r.gate
	}
	if r.rechecked != nil {
		r.rechecked <- cs
	}
	return out, nil
}

func newRecheckResolver(t *testing.T, v identity.Verifier, ttl time.Duration) *identity.Resolver {
	t.Helper()
	r := identity.NewResolver(identity.ResolverOptions{
		Prefixes: []identity.PrefixRoute{{Prefix: "gk_", Verifier: v}},
		CacheTTL: ttl,
	})
	t.Cleanup(r.Close)
	return r
}

// TestRecheckKeepsCredentialsInUse: a credential used more often than the
// cache TTL is verified once and then confirmed in bulk, never again on a
// request's path, while one no longer used expires as before.
func TestRecheckKeepsCredentialsInUse(t *testing.T) {
	v := newRechecking("gk_busy", "gk_idle")
	r := newRecheckResolver(t, v, 600*time.Millisecond)
	ctx := context.Background()
	if _, err := r.Resolve(ctx, "gk_idle"); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if _, err := r.Resolve(ctx, "gk_busy"); err != nil {
			t.Fatal(err)
		}
	}
	// gk_busy: verified once; gk_idle: once too (not used again).
	if n := v.verifies.Load(); n != 2 {
		t.Errorf("Verify ran %d times over 4 TTLs of use, want 2 (once per token)", n)
	}
	if v.rechecks.Load() < 2 {
		t.Errorf("Recheck ran %d times, want at least 2", v.rechecks.Load())
	}
	// The idle token was never rechecked and has expired: verified again.
	if _, err := r.Resolve(ctx, "gk_idle"); err != nil || v.verifies.Load() != 3 {
		t.Errorf("idle token after its TTL: %v, %d verifications (want 3)", err, v.verifies.Load())
	}
}

// TestRecheckDropsWhatNoLongerStands: a credential revoked in the database
// (its notification lost, say) stops working at the next recheck, not
// only at the end of the TTL, and its next use gets Verify's reason.
func TestRecheckDropsWhatNoLongerStands(t *testing.T) {
	v := newRechecking("gk_a")
	v.rechecked = make(chan []identity.Recheck, 16)
	r := newRecheckResolver(t, v, 3*time.Second) // rechecks every second
	ctx := context.Background()
	start := time.Now()
	if _, err := r.Resolve(ctx, "gk_a"); err != nil {
		t.Fatal(err)
	}
	v.setValid("gk_a", false)                         // revoked; no Forget (a lost notification)
	if _, err := r.Resolve(ctx, "gk_a"); err != nil { // a hit: marked in use
		t.Fatalf("cached validation: %v", err)
	}
	select {
	case <-v.rechecked:
	case <-time.After(2 * time.Second):
		t.Fatal("no recheck within 2s")
	}
	time.Sleep(10 * time.Millisecond) // the recheck's outcome is applied after it returns
	if time.Since(start) > 2500*time.Millisecond {
		t.Skip("too slow a machine to tell a recheck from the TTL's end")
	}
	if _, err := r.Resolve(ctx, "gk_a"); !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("revoked token after a recheck: %v, want invalid", err)
	}
}

// TestRecheckNeverUndoesForget: a recheck that read a credential before a
// revocation, and finishes after the revocation's Forget, does not cache
// it again.
func TestRecheckNeverUndoesForget(t *testing.T) {
	v := newRechecking("gk_a")
	v.read = make(chan struct{})
	v.gate = make(chan struct{})
	r := newRecheckResolver(t, v, 300*time.Millisecond)
	ctx := context.Background()
	for range 2 {
		if _, err := r.Resolve(ctx, "gk_a"); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-v.read: // the recheck has read gk_a as valid
	case <-time.After(2 * time.Second):
		t.Fatal("no recheck within 2s")
	}
	v.setValid("gk_a", false)
	if n := r.Forget(func(p *identity.Principal) bool { return p.APIKeyID == "gk_a" }); n != 1 {
		t.Fatalf("Forget dropped %d entries, want 1", n)
	}
	close(v.gate)
	time.Sleep(50 * time.Millisecond)
	if _, err := r.Resolve(ctx, "gk_a"); !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("forgotten (revoked) token after a recheck that read it before: %v, want invalid", err)
	}
}

// TestVerifyBeforeForgetIsNotCached: a verification that read a credential
// before a revocation and returns after its Forget serves its waiting
// callers but is not cached: the next use verifies again.
func TestVerifyBeforeForgetIsNotCached(t *testing.T) {
	v := newRechecking("gk_a")
	v.verifyAt = make(chan struct{})
	r := newRecheckResolver(t, v, time.Minute)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { _, err := r.Resolve(ctx, "gk_a"); done <- err }()
	for v.verifies.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// Verify has read gk_a as valid; the revocation lands now.
	v.setValid("gk_a", false)
	r.Forget(func(p *identity.Principal) bool { return p.APIKeyID == "gk_a" })
	close(v.verifyAt)
	if err := <-done; err != nil {
		t.Fatalf("the call in flight: %v", err) // it was valid when it was read
	}
	if _, err := r.Resolve(ctx, "gk_a"); !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("after Forget: %v, want invalid (verified again)", err)
	}
	if n := v.verifies.Load(); n != 2 {
		t.Errorf("%d verifications, want 2", n)
	}
}

// TestRecheckFailureLetsEntriesExpire: when Recheck fails (the database is
// down), validations are not extended: they expire after CacheTTL as they
// would without rechecks.
func TestRecheckFailureLetsEntriesExpire(t *testing.T) {
	v := newRechecking("gk_a")
	v.fail.Store(true)
	r := newRecheckResolver(t, v, 150*time.Millisecond)
	ctx := context.Background()
	start := time.Now()
	for time.Since(start) < 500*time.Millisecond {
		if _, err := r.Resolve(ctx, "gk_a"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// 500ms of use at a 150ms TTL: at least 3 verifications.
	if n := v.verifies.Load(); n < 3 {
		t.Errorf("%d verifications in 500ms at a 150ms TTL with failing rechecks, want ≥ 3", n)
	}
	if v.rechecks.Load() == 0 {
		t.Error("no recheck was tried")
	}
}

// TestForgetOfOthersKeepsCaching: a Forget that concerns other principals
// (another key revoked, a tenant's members changed) while a verification
// is in flight does not keep its outcome out of the cache:
// the next use is served from it, not verified again; a Forget that
// concerns it still does (TestVerifyBeforeForgetIsNotCached,
// TestRecheckNeverUndoesForget), as do more Forgets than are remembered.
func TestForgetOfOthersKeepsCaching(t *testing.T) {
	ctx := context.Background()
	other := func(p *identity.Principal) bool { return p.APIKeyID == "gk_other" }
	for _, c := range []struct {
		name    string
		forgets int   // Forgets of gk_other while gk_a's verification is in flight
		want    int64 // verifications of gk_a after a second use
	}{
		{"verification", 1, 1},                  // cached despite another key's Forget
		{"more forgets than remembered", 65, 2}, // not cached: too many Forgets to judge
	} {
		t.Run(c.name, func(t *testing.T) {
			v := newRechecking("gk_a", "gk_other")
			v.verifyAt = make(chan struct{})
			r := newRecheckResolver(t, v, time.Minute)
			done := make(chan error, 1)
			go func() { _, err := r.Resolve(ctx, "gk_a"); done <- err }()
			for v.verifies.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			for range c.forgets {
				r.Forget(other)
			}
			close(v.verifyAt)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if _, err := r.Resolve(ctx, "gk_a"); err != nil {
				t.Fatal(err)
			}
			if n := v.verifies.Load(); n != c.want {
				t.Errorf("%d verifications after %d Forgets of another key, want %d", n, c.forgets, c.want)
			}
		})
	}
}
