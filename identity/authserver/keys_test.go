package authserver_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

var (
	secretA = []byte("first signing secret, 32 bytes..")
	secretB = []byte("second signing secret, 32 bytes.")
)

const issuer = "https://mcp.example.com"

func open(t *testing.T, db *store.DB, secrets ...[]byte) (*authserver.Keys, *authserver.Server) {
	t.Helper()
	keys, err := newKeys(db, secrets...)
	if err != nil {
		t.Fatal(err)
	}
	return keys, newServer(t, db, keys)
}

func newKeys(db *store.DB, secrets ...[]byte) (*authserver.Keys, error) {
	if len(secrets) == 0 {
		secrets = [][]byte{secretA}
	}
	keys, err := authserver.NewKeys(db, secrets...)
	if err != nil {
		return nil, err
	}
	return keys, keys.Rotate(context.Background())
}

func newServer(tb testing.TB, db *store.DB, keys *authserver.Keys) *authserver.Server {
	tb.Helper()
	as, err := authserver.New(authserver.Config{Issuer: issuer, Store: db, Keys: keys})
	if err != nil {
		tb.Fatal(err)
	}
	return as
}

func kidOf(t *testing.T, token string) string {
	h, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	var hdr struct {
		Kid string `json:"kid"`
		Typ string `json:"typ"`
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(h, &hdr); err != nil || hdr.Typ != "at+jwt" || hdr.Alg != "ES256" {
		t.Fatalf("token header %s", h)
	}
	return hdr.Kid
}

func mint(t *testing.T, as *authserver.Server) string {
	t.Helper()
	tok, err := as.MintDeveloperToken("ci", "00000000-0000-0000-0000-000000000001", "developer", "mcp:read", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func exec(t *testing.T, db *store.DB, sql string, args ...any) {
	t.Helper()
	if _, err := db.Pool().Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

// TestKeyRotation walks a signing key through its life: a successor is
// published a day before it starts signing, the retired key stays
// published until the last token it signed has expired, and no valid token
// breaks on the way, on this replica or another.
func TestKeyRotation(t *testing.T) {
	ctx := context.Background()
	db := storetest.MustOpenDB(t)
	keys, as := open(t, db, secretA)
	if n := len(keys.JWKS().Keys); n != 1 {
		t.Fatalf("first start publishes %d keys, want 1", n)
	}
	old := mint(t, as)
	oldKid := kidOf(t, old)

	// 12 hours before the key retires, Rotate publishes its successor but
	// keeps signing with the current key.
	exec(t, db, "UPDATE gatehouse.signing_keys SET activate_at = now() - interval '29 days 12 hours', retire_at = now() + interval '12 hours'")
	if err := keys.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(keys.JWKS().Keys); n != 2 {
		t.Fatalf("before retirement %d keys are published, want 2", n)
	}
	if kid := kidOf(t, mint(t, as)); kid != oldKid {
		t.Error("the successor signs before its time")
	}
	// Another replica, started now, publishes both as well (and makes no
	// third key).
	replica, replicaAS := open(t, db, secretA)
	if n := len(replica.JWKS().Keys); n != 2 {
		t.Errorf("a second replica publishes %d keys, want 2", n)
	}

	// The switch: the old key retires, the new one signs.
	exec(t, db, "UPDATE gatehouse.signing_keys SET retire_at = now() - interval '1 minute' WHERE kid = $1", oldKid)
	exec(t, db, "UPDATE gatehouse.signing_keys SET activate_at = now() - interval '1 minute' WHERE kid <> $1", oldKid)
	if err := keys.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := mint(t, as)
	if kidOf(t, fresh) == oldKid {
		t.Fatal("the retired key still signs")
	}
	// Tokens of both keys verify, here and on the replica (which learns
	// of the switch on its own schedule).
	for _, v := range []authserver.Verifier{as.Verifier(), replicaAS.Verifier()} {
		for _, tok := range []string{old, fresh} {
			if _, err := v.Verify(ctx, tok); err != nil {
				t.Errorf("a valid token fails: %v", err)
			}
		}
	}

	// Once the retired key's tokens have all expired, it is dropped.
	exec(t, db, "UPDATE gatehouse.signing_keys SET expire_at = now() - interval '1 second' WHERE kid = $1", oldKid)
	if err := as.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(keys.JWKS().Keys); n != 1 {
		t.Errorf("%d keys published after the old one expired, want 1", n)
	}
	// The replica still holds it in memory until it reloads; verification
	// on this replica refuses it now.
	if _, err := as.Verifier().Verify(ctx, old); err == nil || !strings.Contains(err.Error(), "does not publish") {
		t.Errorf("a token of a dropped key: %v", err)
	}
	_ = replica
}

// TestSigningSecretRotation: keys are encrypted with the first secret and
// read with any; without the secret they were made with, start-up says so.
func TestSigningSecretRotation(t *testing.T) {
	ctx := context.Background()
	db := storetest.MustOpenDB(t)
	_, asA := open(t, db, secretA)
	tokA := mint(t, asA)

	// Rotating: the new secret first, the old one still listed.
	keysBA, asBA := open(t, db, secretB, secretA)
	if _, err := asBA.Verifier().Verify(ctx, tokA); err != nil {
		t.Fatalf("a token from before the secret rotation: %v", err)
	}
	_ = keysBA
	// Opening them with both secrets encrypted the keys again with the
	// new one: the old secret can go.
	_, asB := open(t, db, secretB)
	if _, err := asB.Verifier().Verify(ctx, tokA); err != nil {
		t.Fatalf("with the new secret alone: %v", err)
	}
	// Now the old secret alone cannot read them.
	keysA, err := authserver.NewKeys(db, secretA)
	if err != nil {
		t.Fatal(err)
	}
	if err := keysA.Rotate(ctx); err == nil || !strings.Contains(err.Error(), "GATEHOUSE_SIGNING_KEY lacks the secret") {
		t.Errorf("rotate without the secret the keys are under: %v", err)
	}
	// The private key is stored encrypted: its bytes are not a DER key in
	// the clear, and the public JWK has no private part.
	var pub string
	var enc []byte
	if err := db.Pool().QueryRow(ctx, "SELECT public_jwk::text, private_enc FROM gatehouse.signing_keys LIMIT 1").Scan(&pub, &enc); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(pub, `"d"`) || len(enc) < 100 || enc[0] == 0x30 && enc[1] == 0x77 {
		t.Errorf("stored key: public %s, private %d bytes starting %x", pub, len(enc), enc[:2])
	}
	if _, err := authserver.NewKeys(db, []byte("too short")); err == nil {
		t.Error("a short secret was accepted")
	}
}

// TestConcurrentFirstStart: replicas starting together on an empty
// database make one key between them.
func TestConcurrentFirstStart(t *testing.T) {
	db := storetest.MustOpenDB(t)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			k, err := authserver.NewKeys(db, secretA)
			if err == nil {
				err = k.Rotate(context.Background())
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var n int
	if err := db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM gatehouse.signing_keys").Scan(&n); err != nil || n != 1 {
		t.Errorf("%d keys after a concurrent first start (%v), want 1", n, err)
	}
}
