package identity

import (
	"context"
	"slices"
	"time"
)

// Rechecker is a [Verifier] whose credentials a [Resolver] can confirm
// again in bulk: the API keys, whose state is a row in Gatehouse's own
// database. A Resolver rechecks, every CacheTTL/3 and in one call per
// [RecheckBatch] credentials, the cached validations used since the last
// recheck, so that a credential in use never expires from its cache on a
// request's path and costs a row of a shared statement instead of a
// statement of its own each CacheTTL.
type Rechecker interface {
	Verifier
	// Recheck confirms credentials that Verify accepted earlier, in one
	// round trip. It returns one principal per credential, in order: the
	// principal to cache from now on (as Verify would return it now), or
	// nil when the credential no longer stands as it did (revoked,
	// expired, changed, unknown: its next use is verified afresh and gets
	// the reason). An error leaves every cached validation to expire as
	// if there were no recheck.
	Recheck(ctx context.Context, cs []Recheck) ([]*Principal, error)
}

// Recheck is one credential to confirm again.
type Recheck struct {
	// TokenHash is SHA-256 of the whole credential (the Resolver keeps
	// only that, never the credential).
	TokenHash [32]byte
	// Principal is what Verify returned for it.
	Principal *Principal
}

// RecheckBatch bounds the credentials of one [Rechecker.Recheck] call.
const RecheckBatch = 1000

// recheckEvery runs recheck every d until Close.
func (r *Resolver) recheckEvery(d time.Duration) {
	defer close(r.done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), d)
			r.recheck(ctx)
			cancel()
		}
	}
}

type recheckEntry struct {
	key string // the cache key: SHA-256 of the credential
	p   *Principal
}

// recheck confirms again every validation by a [Rechecker] that was read
// from the cache since the last recheck and is still cached, and caches
// each anew for CacheTTL from now (an entry is never reused longer after
// its verifier last confirmed it than without recheck); one that no longer
// stands is dropped. A validation that changed meanwhile (dropped by
// Forget, verified again) is left as it is, and none is cached again when
// Forget ran since the recheck read it: a revocation is never undone by
// a recheck that read the credential before it.
func (r *Resolver) recheck(ctx context.Context) {
	byVerifier := map[Rechecker][]recheckEntry{}
	r.used.Range(func(k, _ any) bool {
		r.used.Delete(k)
		key := k.(string)
		item := r.cache.Get(key)
		if item == nil {
			return true
		}
		o := item.Value()
		if rc, ok := o.v.(Rechecker); ok && o.p != nil && o.err == nil {
			byVerifier[rc] = append(byVerifier[rc], recheckEntry{key, o.p})
		}
		return true
	})
	for rc, es := range byVerifier {
		for chunk := range slices.Chunk(es, RecheckBatch) {
			r.mu.Lock()
			gen := r.gen
			r.mu.Unlock()
			cs := make([]Recheck, len(chunk))
			for i, e := range chunk {
				copy(cs[i].TokenHash[:], e.key)
				cs[i].Principal = e.p
			}
			fresh, err := rc.Recheck(ctx, cs)
			if err != nil || len(fresh) != len(chunk) {
				continue
			}
			r.recached(gen, rc, chunk, fresh)
		}
	}
}

// recached caches fresh[i] in place of chunk[i] (drops it when nil),
// unless the entry changed or a Forget since generation gen concerns it
// (see forgottenSince).
func (r *Resolver) recached(gen uint64, rc Rechecker, chunk []recheckEntry, fresh []*Principal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, e := range chunk {
		if cur := r.cache.Get(e.key); cur == nil || cur.Value().p != e.p {
			continue
		}
		p := fresh[i]
		if p == nil {
			r.cache.Delete(e.key)
			continue
		}
		if r.forgottenSince(gen, e.p) || r.forgottenSince(gen, p) {
			continue
		}
		p.Scopes = r.gatehouseScopes(p.Scopes)
		o := outcome{p: p, v: rc}
		if ttl := r.ttl(o); ttl > 0 {
			r.cache.Set(e.key, o, ttl)
		} else {
			r.cache.Delete(e.key)
		}
	}
}
