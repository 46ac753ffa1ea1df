package mcp_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestAPIKeyInUseIsRecheckedNotExpired: with a short validation TTL, a key
// used without pause keeps working across several TTLs (its validation is
// confirmed again in bulk, not dropped and verified on a call's path), its
// use is recorded, and when it is revoked in the database without the
// notification reaching this server (a lost NOTIFY), it is refused within
// the TTL all the same (checked with slack): the recheck never extends what the database no
// longer says.
func TestAPIKeyInUseIsRecheckedNotExpired(t *testing.T) {
	const ttl = 600 * time.Millisecond
	g := newGatehouse(t, func(su *setup) { su.resolver.CacheTTL = ttl })
	secret, k := g.keyWith(t, "acme.com", tenancy.Admin, time.Time{})
	ctx := context.Background()
	call := func() int {
		res := post(t, g.url, "Bearer "+secret, whoamiCall)
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	for end := time.Now().Add(4 * ttl); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if code := call(); code != http.StatusOK {
			t.Fatalf("a key in use: status %d", code)
		}
	}
	var used *time.Time
	if err := g.db.Pool().QueryRow(ctx, "SELECT last_used_at FROM gatehouse.api_keys WHERE id = $1", k.ID).Scan(&used); err != nil || used == nil {
		t.Errorf("last use not recorded: %v, %v", used, err)
	}
	// Revoked behind the server's back: no notification.
	if _, err := g.db.Pool().Exec(ctx, "UPDATE gatehouse.api_keys SET revoked_at = now() WHERE id = $1", k.ID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for call() == http.StatusOK {
		if time.Since(revoked) > 2*ttl { // the TTL, and slack for a busy machine
			t.Fatalf("a key revoked %v ago (without notification) is still accepted; the TTL is %v", time.Since(revoked), ttl)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code := call(); code != http.StatusUnauthorized {
		t.Errorf("revoked key: status %d, want 401", code)
	}
}
