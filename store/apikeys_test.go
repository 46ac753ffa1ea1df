package store_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func TestAPIKeys(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "acme.com")
	expires := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	secret, k := apikey.New(tn.ID, "developer", []string{"mcp:read"}, "ci", "test", expires)
	if err := db.CreateAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if k.CreatedAt.IsZero() || k.TenantKey != "acme.com" {
		t.Errorf("created key = %+v", k)
	}
	got, err := db.FindAPIKeyByID(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "ci" || got.Role != "developer" || !got.ExpiresAt.Equal(expires) || len(got.Scopes) != 1 || got.TenantKey != "acme.com" {
		t.Errorf("found key = %+v", got)
	}
	// Only the hash is stored: the secret appears nowhere in the row.
	var leaked bool
	if err := db.Pool().QueryRow(ctx, "SELECT strpos(k::text, $1) > 0 FROM gatehouse.api_keys k", secret).Scan(&leaked); err != nil || leaked {
		t.Errorf("secret stored in the clear: %v %v", leaked, err)
	}
	at := time.Now().Truncate(time.Microsecond)
	if err := db.TouchAPIKey(ctx, k.ID, at); err != nil {
		t.Fatal(err)
	}
	if err := db.TouchAPIKey(ctx, k.ID, at.Add(-time.Hour)); err != nil { // never moves backwards
		t.Fatal(err)
	}
	got, _ = db.FindAPIKeyByID(ctx, k.ID)
	if !got.LastUsedAt.Equal(at) {
		t.Errorf("last used = %v, want %v", got.LastUsedAt, at)
	}
	revoked, err := db.RevokeAPIKey(ctx, k.ID)
	if err != nil || revoked.RevokedAt.IsZero() {
		t.Fatalf("revoke = %+v, %v", revoked, err)
	}
	again, err := db.RevokeAPIKey(ctx, k.ID)
	if err != nil || !again.RevokedAt.Equal(revoked.RevokedAt) {
		t.Errorf("second revoke changed revoked_at: %v → %v (%v)", revoked.RevokedAt, again.RevokedAt, err)
	}
	if _, err := db.RevokeAPIKey(ctx, "nosuchkeyaaaaaaa"); !errors.Is(err, apikey.ErrNotFound) {
		t.Errorf("revoke unknown = %v", err)
	}
	keys, err := db.FindAPIKeys(ctx, tn.ID)
	if err != nil || len(keys) != 1 {
		t.Errorf("FindAPIKeys = %d, %v", len(keys), err)
	}
}

func TestRevocationIsBroadcast(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan store.Invalidation, 10)
	go db.Listen(ctx, func(inv store.Invalidation) { got <- inv })
	if inv := <-got; inv.Kind != "*" {
		t.Fatalf("first delivery = %+v, want the reset marker", inv)
	}
	tn := mustTenant(t, db, "acme.com")
	_, k := apikey.New(tn.ID, "viewer", []string{"mcp:read"}, "", "", time.Time{})
	if err := db.CreateAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RevokeAPIKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case inv := <-got:
		if inv != (store.Invalidation{Kind: store.InvalidateAPIKey, ID: k.ID}) {
			t.Errorf("invalidation = %+v", inv)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no invalidation within 5s")
	}
}

func TestBootstrapOnlyOnEmptyDatabase(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	newKey := func(tenantID string) *apikey.Key {
		_, k := apikey.New(tenantID, "admin", []string{"mcp:read", "mcp:write", "mcp:admin"}, "bootstrap", "bootstrap", time.Time{})
		return k
	}
	did, err := db.Bootstrap(ctx, "dev", newKey)
	if err != nil || !did {
		t.Fatalf("first bootstrap = %v, %v", did, err)
	}
	did, err = db.Bootstrap(ctx, "dev", newKey)
	if err != nil || did {
		t.Fatalf("second bootstrap = %v, %v; want false", did, err)
	}
	dev, err := db.FindTenantByKey(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := db.FindAPIKeys(ctx, dev.ID)
	if len(keys) != 1 || keys[0].Role != "admin" {
		t.Errorf("dev keys = %+v", keys)
	}
	// An undone bootstrap (the server never served) revokes its key and
	// lets the next start issue a fresh one, once.
	if err := db.UndoBootstrap(ctx, keys[0].ID); err != nil {
		t.Fatal(err)
	}
	if did, err := db.Bootstrap(ctx, "dev", newKey); err != nil || !did {
		t.Fatalf("bootstrap after undo = %v, %v; want true", did, err)
	}
	if did, err := db.Bootstrap(ctx, "dev", newKey); err != nil || did {
		t.Fatalf("bootstrap after the redone one = %v, %v; want false", did, err)
	}
	keys, _ = db.FindAPIKeys(ctx, dev.ID)
	live := 0
	for _, k := range keys {
		if k.RevokedAt.IsZero() {
			live++
		}
	}
	if len(keys) != 2 || live != 1 {
		t.Errorf("after undo and redo: %d keys, %d live; want 2 and 1", len(keys), live)
	}
	// A database that already has tenants is never bootstrapped.
	other := storetest.MustOpenDB(t)
	mustTenant(t, other, "acme.com")
	if did, err := other.Bootstrap(ctx, "dev", newKey); err != nil || did {
		t.Errorf("bootstrap of non-empty database = %v, %v", did, err)
	}
}

// TestSecretConcurrentFirstUse: processes asking for a new instance secret
// at once all get the same one.
func TestSecretConcurrentFirstUse(t *testing.T) {
	url := storetest.ConnString(t)
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Go(func() {
			db, err := store.Open(context.Background(), url, nil) // separate processes' caches
			if err != nil {
				t.Error(err)
				return
			}
			defer db.Close()
			s, err := db.Secret(context.Background(), "shared")
			if err != nil {
				t.Error(err)
			}
			got[i] = string(s)
		})
	}
	wg.Wait()
	for _, s := range got {
		if s == "" || s != got[0] {
			t.Fatalf("secrets differ or are missing: %q", got)
		}
	}
}

// TestAPIKeyNetworks: a key's allowed networks are stored and read back
// canonical, replaced by SetAPIKeyNetworks (which tells every process to
// forget the key, as a revocation does) and never set on another tenant's
// key or a revoked one; the database refuses what the application would.
func TestAPIKeyNetworks(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	notices := make(chan store.Invalidation, 10)
	go db.Listen(ctx, func(inv store.Invalidation) { notices <- inv })
	<-notices // the reset marker
	tn, other := mustTenant(t, db, "acme.com"), mustTenant(t, db, "other.com")
	ns, err := identity.ParseNetworks([]string{"2001:db8::/32", "10.0.0.0/8", "203.0.113.7"})
	if err != nil {
		t.Fatal(err)
	}
	_, k := apikey.New(tn.ID, "viewer", []string{"mcp:read"}, "ci", "test", time.Time{})
	k.AllowedNetworks = ns
	if err := db.CreateAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	_, plain := apikey.New(tn.ID, "viewer", []string{"mcp:read"}, "anywhere", "test", time.Time{})
	if err := db.CreateAPIKey(ctx, plain); err != nil {
		t.Fatal(err)
	}
	got, err := db.FindAPIKeyByID(ctx, k.ID)
	if err != nil || got.AllowedNetworks.String() != "10.0.0.0/8, 203.0.113.7/32, 2001:db8::/32" {
		t.Fatalf("stored networks = %v (%v)", got.AllowedNetworks, err)
	}
	if got, _ := db.FindAPIKeyByID(ctx, plain.ID); got.AllowedNetworks.Restricted() {
		t.Errorf("a key made without networks reads back restricted: %v", got.AllowedNetworks)
	}

	set := func(tenant *tenancy.Tenant, id string, ns identity.Networks) (*apikey.Key, error) {
		var k *apikey.Key
		err := pgx.BeginFunc(ctx, db.Pool(), func(tx pgx.Tx) error {
			return db.AsAdmin(ctx, tx, tenant, func(a *store.Admin) (err error) {
				k, err = a.SetAPIKeyNetworks(ctx, id, ns)
				return err
			})
		})
		return k, err
	}
	one, _ := identity.ParseNetworks([]string{"192.0.2.0/24"})
	if _, err := set(other, k.ID, one); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another tenant set the networks: %v", err)
	}
	changed, err := set(tn, k.ID, one)
	if err != nil || changed.AllowedNetworks.String() != "192.0.2.0/24" {
		t.Fatalf("set = %v, %v", changed, err)
	}
	select {
	case inv := <-notices:
		if inv.Kind != store.InvalidateAPIKey || inv.ID != k.ID {
			t.Errorf("notice = %+v", inv)
		}
	case <-time.After(5 * time.Second):
		t.Error("no invalidation after changing a key's networks")
	}
	if cleared, err := set(tn, k.ID, nil); err != nil || cleared.AllowedNetworks.Restricted() {
		t.Errorf("clearing = %v, %v", cleared, err)
	}
	if _, err := db.RevokeAPIKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := set(tn, k.ID, one); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a revoked key's networks changed: %v", err)
	}

	// A tenant's export says where each key may be used from.
	_, k3 := apikey.New(tn.ID, "viewer", []string{"mcp:read"}, "exported", "test", time.Time{})
	k3.AllowedNetworks = one
	if err := db.CreateAPIKey(ctx, k3); err != nil {
		t.Fatal(err)
	}
	var zipped bytes.Buffer
	if err := db.ExportTenant(ctx, tn, &zipped, store.OperatorAction{Operator: "test", Action: "export", Via: "test"}); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(zipped.Bytes()), int64(zipped.Len()))
	if err != nil {
		t.Fatal(err)
	}
	f, err := zr.Open("api_keys.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	exported, _ := io.ReadAll(f)
	if !strings.Contains(string(exported), `"allowed_networks":[]`) || !strings.Contains(string(exported), `"allowed_networks":["192.0.2.0/24"]`) {
		t.Errorf("api_keys.jsonl:\n%s", exported)
	}

	// The column holds canonical networks only, at most 64.
	for _, bad := range []string{"{10.0.0.1/8}", "{" + strings.Repeat("10.0.0.0/8,", 64) + "10.0.0.0/8}"} {
		if _, err := db.Pool().Exec(ctx, "UPDATE gatehouse.api_keys SET allowed_networks = $2::cidr[] WHERE id = $1", plain.ID, bad); err == nil {
			t.Errorf("the database took allowed_networks = %.40s", bad)
		}
	}
}
