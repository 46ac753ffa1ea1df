package store_test

import (
	"context"
	"crypto/sha256"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestAPIKeyRecheck: the API key verifier's bulk recheck (what keeps keys
// in use cached without a statement each per CacheTTL) confirms exactly
// what Verify would accept now, in one read, and records the keys' use in
// one write.
func TestAPIKeyRecheck(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "acme.com")
	other := mustTenant(t, db, "other.com")
	v := apikey.NewVerifier(db, nil)
	type key struct {
		secret string
		k      *apikey.Key
		p      *identity.Principal
	}
	mk := func(tenant, role string, expires time.Time) key {
		t.Helper()
		secret, k := apikey.New(tenant, role, []string{"mcp:read", "mcp:write"}, "k", "test", expires)
		if err := db.CreateAPIKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		p, err := v.Verify(ctx, secret)
		if err != nil {
			t.Fatal(err)
		}
		return key{secret, k, p}
	}
	good, good2 := mk(tn.ID, "developer", time.Time{}), mk(other.ID, "admin", time.Time{})
	revoked, expiring := mk(tn.ID, "admin", time.Time{}), mk(tn.ID, "viewer", time.Now().Add(time.Hour))
	deleted := mk(tn.ID, "viewer", time.Time{})
	// Verify records each key's first use in a goroutine of its own: wait
	// for those writes, or one could land after the reset of last use
	// below and read as a use the recheck recorded.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var untouched int
		if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM gatehouse.api_keys WHERE last_used_at IS NULL").Scan(&untouched); err != nil {
			t.Fatal(err)
		}
		if untouched == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys' first use still not recorded", untouched)
		}
	}
	if _, err := db.RevokeAPIKey(ctx, revoked.k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool().Exec(ctx, "UPDATE gatehouse.api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", expiring.k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool().Exec(ctx, "DELETE FROM gatehouse.api_keys WHERE id = $1", deleted.k.ID); err != nil {
		t.Fatal(err)
	}
	// The last use recorded by Verify's touch is in the past: old enough
	// to be recorded again.
	if _, err := db.Pool().Exec(ctx, "UPDATE gatehouse.api_keys SET last_used_at = now() - interval '1 hour'"); err != nil {
		t.Fatal(err)
	}
	hash := func(k key) [32]byte { return sha256.Sum256([]byte(k.secret)) }
	cs := []identity.Recheck{
		{TokenHash: hash(good), Principal: good.p},
		{TokenHash: hash(revoked), Principal: revoked.p},
		{TokenHash: hash(expiring), Principal: expiring.p},
		{TokenHash: hash(deleted), Principal: deleted.p},
		{TokenHash: hash(good), Principal: good2.p}, // good's secret presented as good2's id
		{TokenHash: hash(good2), Principal: good2.p},
	}
	before := time.Now()
	got, err := v.Recheck(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(cs) {
		t.Fatalf("%d principals for %d credentials", len(got), len(cs))
	}
	for i, want := range []*identity.Principal{good.p, nil, nil, nil, nil, good2.p} {
		switch {
		case want == nil && got[i] != nil:
			t.Errorf("credential %d: confirmed %+v, want dropped", i, got[i])
		case want != nil && got[i] == nil:
			t.Errorf("credential %d: dropped, want confirmed", i)
		case want != nil && (got[i].Subject != want.Subject || got[i].TenantID != want.TenantID || got[i].Role != want.Role || !slices.Equal(got[i].Scopes, want.Scopes)):
			t.Errorf("credential %d: %+v, want %+v", i, got[i], want)
		}
	}
	// The confirmed keys' use is recorded; the others' is not.
	for _, k := range []key{good, good2, revoked} {
		found, err := db.FindAPIKeyByID(ctx, k.k.ID)
		if err != nil {
			t.Fatal(err)
		}
		used := !found.LastUsedAt.Before(before.Add(-time.Second))
		if want := k.k.ID != revoked.k.ID; used != want {
			t.Errorf("key %s: last used %v (recorded: %v, want %v)", k.k.ID, found.LastUsedAt, used, want)
		}
	}
	// A role changed in the database reaches the cache with the recheck.
	if _, err := db.Pool().Exec(ctx, "UPDATE gatehouse.api_keys SET role = 'viewer' WHERE id = $1", good.k.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := v.Recheck(ctx, cs[:1]); err != nil || got[0] == nil || got[0].Role != "viewer" {
		t.Errorf("after a role change: %+v, %v", got, err)
	}
}

func TestFindAndTouchAPIKeysInBulk(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "acme.com")
	var ids []string
	for range 3 {
		_, k := apikey.New(tn.ID, "viewer", []string{"mcp:read"}, "k", "test", time.Time{})
		if err := db.CreateAPIKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
	}
	got, err := db.FindAPIKeysByID(ctx, append([]string{"nosuchkeyaaaaaaa"}, ids[:2]...))
	if err != nil || len(got) != 2 {
		t.Fatalf("FindAPIKeysByID = %d keys, %v; want 2", len(got), err)
	}
	for _, k := range got {
		if !slices.Contains(ids[:2], k.ID) || k.TenantKey != "acme.com" || len(k.SecretHash) != 32 {
			t.Errorf("found %+v", k)
		}
	}
	if got, err := db.FindAPIKeysByID(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("FindAPIKeysByID(none) = %v, %v", got, err)
	}
	at := time.Now().Truncate(time.Microsecond)
	if err := db.TouchAPIKeys(ctx, ids[:2], at); err != nil {
		t.Fatal(err)
	}
	if err := db.TouchAPIKeys(ctx, ids, at.Add(-time.Hour)); err != nil { // never moves backwards
		t.Fatal(err)
	}
	for i, id := range ids {
		k, _ := db.FindAPIKeyByID(ctx, id)
		want := at
		if i == 2 {
			want = at.Add(-time.Hour)
		}
		if !k.LastUsedAt.Equal(want) {
			t.Errorf("key %d: last used %v, want %v", i, k.LastUsedAt, want)
		}
	}
}

// TestTouchAPIKeysNeverWaitsForALock: recording keys' use skips a key
// whose row another transaction holds (as the anomaly detector's grouped
// transaction holds the keys it revoked until it commits) instead of
// waiting for it, so the two can never deadlock; the skipped key is
// touched by the next call once the lock is gone.
func TestTouchAPIKeysNeverWaitsForALock(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	var ids []string
	for _, domain := range []string{"acme.com", "other.com", "third.com"} {
		tn := mustTenant(t, db, domain)
		_, k := apikey.New(tn.ID, "viewer", []string{"mcp:read"}, "k", "test", time.Time{})
		if err := db.CreateAPIKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
	}
	holder, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	if _, err := holder.Exec(ctx, "SELECT 1 FROM gatehouse.api_keys WHERE id = $1 FOR UPDATE", ids[1]); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Truncate(time.Microsecond)
	done := make(chan error, 1)
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	go func() { done <- db.TouchAPIKeys(tctx, ids, at) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("TouchAPIKeys beside a held key: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("TouchAPIKeys waited for a key another transaction holds")
	}
	// The holder now takes a key the touch took (the other half of a
	// cycle): it must not wait either, the touch having committed.
	if _, err := holder.Exec(ctx, "UPDATE gatehouse.api_keys SET revoked_at = now() WHERE id = $1", ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	lastUsed := func() []time.Time {
		var out []time.Time
		for _, id := range ids {
			k, err := db.FindAPIKeyByID(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, k.LastUsedAt)
		}
		return out
	}
	if got := lastUsed(); !got[0].Equal(at) || !got[1].IsZero() || !got[2].Equal(at) {
		t.Errorf("last used while key 1 was held = %v; want %v, none, %v", got, at, at)
	}
	if err := db.TouchAPIKeys(ctx, ids, at); err != nil {
		t.Fatal(err)
	}
	for i, got := range lastUsed() {
		if !got.Equal(at) {
			t.Errorf("key %d last used %v after the lock was gone; want %v", i, got, at)
		}
	}
}
