package identity

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jellydator/ttlcache/v3"
	"golang.org/x/sync/singleflight"
)

// MaxTokenBytes bounds a credential's length; longer ones are rejected unread.
const MaxTokenBytes = 8 << 10

// PrefixRoute sends credentials starting with Prefix to Verifier.
type PrefixRoute struct {
	Prefix   string
	Verifier Verifier
}

// ResolverOptions configure a [Resolver]. Zero values mean the defaults.
type ResolverOptions struct {
	// Prefixes route opaque credentials by their prefix ("gk_" → API keys).
	Prefixes []PrefixRoute
	// Issuers route JWTs by their exact (unverified) iss claim. A JWT whose
	// iss is not a key here is refused without any network call.
	Issuers map[string]Verifier
	// DefaultScopes are given to principals whose credential carries no
	// Gatehouse scope (default mcp:read mcp:write).
	DefaultScopes []string
	// CacheTTL bounds how long a successful validation is reused after
	// its verifier last confirmed it (default 60s); an entry never
	// outlives the credential's own expiry. Validations by a [Rechecker]
	// that are in use are confirmed again in bulk every CacheTTL/3.
	CacheTTL time.Duration
	// NegativeTTL is how long a rejection is remembered (default 5s).
	NegativeTTL time.Duration
	// Capacity bounds the number of cached credentials (default 100,000).
	Capacity uint64
	// VerifyTimeout bounds one upstream verification (default 10s).
	VerifyTimeout time.Duration
}

// Resolver maps credentials to principals through exactly one verifier
// each, with a validation cache in front.
type Resolver struct {
	opts  ResolverOptions
	cache *ttlcache.Cache[string, outcome]
	group singleflight.Group
	// used holds the cache keys of validations by a Rechecker read from
	// the cache since the last recheck (key → struct{}).
	used sync.Map
	// mu orders caching a validation against Forget: gen counts Forget
	// calls, forgets holds the matches of the last maxForgets of them, and
	// a validation made before a Forget that concerns its principal is
	// not cached after it (see forgottenSince).
	mu      sync.Mutex
	gen     uint64
	forgets []func(*Principal) bool
	stop    chan struct{}
	done    chan struct{}
	stopped sync.Once
}

type outcome struct {
	p   *Principal
	err error
	v   Verifier // the verifier that made it
}

// NewResolver returns a Resolver; call Close to stop its cache janitor.
func NewResolver(opts ResolverOptions) *Resolver {
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = time.Minute
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = 5 * time.Second
	}
	if opts.Capacity == 0 {
		opts.Capacity = 100_000
	}
	if len(opts.DefaultScopes) == 0 {
		opts.DefaultScopes = []string{ScopeRead, ScopeWrite}
	}
	if opts.VerifyTimeout <= 0 {
		opts.VerifyTimeout = 10 * time.Second
	}
	r := &Resolver{opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	r.cache = ttlcache.New(
		ttlcache.WithDisableTouchOnHit[string, outcome](),
		ttlcache.WithCapacity[string, outcome](opts.Capacity),
	)
	go r.cache.Start()
	go r.recheckEvery(max(opts.CacheTTL/3, 10*time.Millisecond))
	return r
}

// Close stops the cache's background expiry and rechecks; calling it
// again does nothing.
func (r *Resolver) Close() {
	r.stopped.Do(func() {
		r.cache.Stop()
		close(r.stop)
		<-r.done
	})
}

// Resolve returns the principal a credential stands for. The returned
// Principal is shared with other callers and must not be modified.
func (r *Resolver) Resolve(ctx context.Context, token string) (*Principal, error) {
	v, err := r.route(token)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(token))
	key := string(sum[:])
	item := r.cache.Get(key)
	if item == nil {
		item = r.load(ctx, key, token, v)
	} else if _, ok := v.(Rechecker); ok {
		if _, seen := r.used.Load(key); !seen {
			r.used.Store(key, struct{}{})
		}
	}
	o := item.Value()
	if o.err != nil {
		return nil, o.err
	}
	if o.p == nil {
		return nil, errors.New("identity: verifier returned no principal")
	}
	if !o.p.Expiry.IsZero() && !time.Now().Before(o.p.Expiry) {
		return nil, Invalid("the token has expired")
	}
	return o.p, nil
}

// load verifies a credential on a cache miss; concurrent misses for one
// credential share one verification.
func (r *Resolver) load(ctx context.Context, key, token string, v Verifier) *ttlcache.Item[string, outcome] {
	load := ttlcache.LoaderFunc[string, outcome](func(c *ttlcache.Cache[string, outcome], key string) *ttlcache.Item[string, outcome] {
		// A caller that missed the cache just before another's verification
		// stored its outcome reaches here after that verification's
		// singleflight has ended: look again before verifying again.
		if item := c.Get(key); item != nil {
			return item
		}
		// One verification serves every caller waiting on this credential:
		// one caller going away must not fail the others.
		vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.VerifyTimeout)
		defer cancel()
		r.mu.Lock()
		gen := r.gen
		r.mu.Unlock()
		p, err := v.Verify(vctx, token)
		if err == nil && p != nil {
			p.Scopes = r.gatehouseScopes(p.Scopes)
		}
		o := outcome{p: p, err: err, v: v}
		r.mu.Lock()
		defer r.mu.Unlock()
		// A Forget meanwhile (a revocation) of this principal may concern
		// what Verify read before it: hand the outcome to the waiters, but
		// do not keep it.
		if ttl := r.ttl(o); ttl > 0 && !r.forgottenSince(gen, o.p) {
			return c.Set(key, o, ttl)
		}
		return ttlcache.NewItemWithOpts(key, o, 0) // handed to the waiters, not cached
	})
	return r.cache.Get(key, ttlcache.WithLoader[string, outcome](ttlcache.NewSuppressedLoader(load, &r.group)))
}

// ttl is how long an outcome may be reused: rejections briefly, upstream
// failures not at all, principals until the cache TTL or their expiry.
func (r *Resolver) ttl(o outcome) time.Duration {
	switch {
	case errors.Is(o.err, ErrInvalidToken):
		return r.opts.NegativeTTL
	case o.err != nil || o.p == nil:
		return 0
	case o.p.Expiry.IsZero():
		return r.opts.CacheTTL
	default:
		return min(r.opts.CacheTTL, time.Until(o.p.Expiry))
	}
}

func (r *Resolver) route(token string) (Verifier, error) {
	if token == "" || len(token) > MaxTokenBytes {
		return nil, Invalid("the token is malformed")
	}
	for _, pr := range r.opts.Prefixes {
		if strings.HasPrefix(token, pr.Prefix) {
			return pr.Verifier, nil
		}
	}
	if _, iss, ok := PeekJWT(token); ok {
		if v, ok := r.opts.Issuers[iss]; ok && iss != "" {
			return v, nil
		}
		return nil, Invalid("the token's issuer %s is not one this server accepts%s", QuoteIssuer(iss), r.slashHint(iss))
	}
	return nil, Invalid("the token is not issued by an identity provider this server accepts")
}

// slashHint names a configured issuer that differs from iss only by a
// trailing slash: the usual configuration mistake (OpenID Connect
// Discovery 1.0 §4.3 wants them identical).
func (r *Resolver) slashHint(iss string) string {
	for configured := range r.opts.Issuers {
		if configured != iss && strings.TrimSuffix(configured, "/") == strings.TrimSuffix(iss, "/") {
			return fmt.Sprintf(" (the configured issuer %q differs from it only by a trailing slash)", configured)
		}
	}
	return ""
}

// ShortIssuer is a token's (unverified) iss for a log line: it is not
// secret, but it is the sender's text, so it is cut to 200 bytes.
func ShortIssuer(iss string) string {
	if len(iss) > 200 {
		return iss[:200] + "…"
	}
	return iss
}

// QuoteIssuer is ShortIssuer quoted (escaped) for an error message.
func QuoteIssuer(iss string) string { return fmt.Sprintf("%q", ShortIssuer(iss)) }

// gatehouseScopes keeps the Gatehouse scopes a credential carries, or
// gives it the default ones when it carries none.
func (r *Resolver) gatehouseScopes(scopes []string) []string {
	var out []string
	for _, s := range scopes {
		if slices.Contains(AllScopes, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return slices.Clone(r.opts.DefaultScopes)
	}
	return out
}

// Forget drops every cached principal for which match is true (for example
// all principals of a revoked API key) and returns how many it dropped.
func (r *Resolver) Forget(match func(*Principal) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	r.forgets = append(r.forgets, match)
	if len(r.forgets) > maxForgets {
		r.forgets = slices.Delete(r.forgets, 0, len(r.forgets)-maxForgets)
	}
	var keys []string
	r.cache.Range(func(item *ttlcache.Item[string, outcome]) bool {
		if p := item.Value().p; p != nil && match(p) {
			keys = append(keys, item.Key())
		}
		return true
	})
	for _, k := range keys {
		r.cache.Delete(k)
	}
	return len(keys)
}

// maxForgets bounds the Forget matches a Resolver keeps to judge the
// validations in flight (forgottenSince); a validation that began more
// Forgets ago than that is not cached.
const maxForgets = 64

// forgottenSince reports whether a Forget since generation gen concerns p
// (its match is true for p), or may (more Forgets than maxForgets since),
// so that a validation of p read before it must not be cached. A Forget of
// other principals (another key revoked, a member's role changed
// elsewhere) never keeps an unrelated validation out of the cache. The
// caller holds r.mu.
func (r *Resolver) forgottenSince(gen uint64, p *Principal) bool {
	n := r.gen - gen
	if n == 0 || p == nil {
		return false
	}
	if n > uint64(len(r.forgets)) {
		return true
	}
	for _, match := range r.forgets[len(r.forgets)-int(n):] {
		if match(p) {
			return true
		}
	}
	return false
}
