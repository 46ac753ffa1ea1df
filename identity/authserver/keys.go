package authserver

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Key rotation: a key signs for activeFor; its successor is published
// prepublish before it starts signing (so every verifier has it in time)
// and a retired key stays published until the last token it signed has
// expired. Every replica runs the same schedule; the store's lock makes
// sure one of them creates each key.
const (
	activeFor  = 30 * 24 * time.Hour
	prepublish = 24 * time.Hour
	// maxTokenLife bounds every token a key signs (developer tokens live up
	// to a day), so a retired key is published that long after.
	maxTokenLife = 24 * time.Hour
)

// Keys signs and verifies Gatehouse's access tokens.
type Keys struct {
	store Store
	// aeads encrypt the private keys: the first encrypts new keys, any
	// decrypts, and a key opened with another than the first is encrypted
	// again with the first (so the secret can be rotated: docs/clients.md).
	aeads []cipher.AEAD

	mu       sync.RWMutex
	keys     []*loadedKey
	reloaded time.Time
}

type loadedKey struct {
	kid                      string
	priv                     *ecdsa.PrivateKey
	jwk                      jose.JSONWebKey
	activate, retire, expire time.Time
}

// NewKeys returns Keys whose private keys are encrypted with the first
// secret and decrypted with any.
func NewKeys(store Store, secrets ...[]byte) (*Keys, error) {
	k := &Keys{store: store}
	if len(secrets) == 0 {
		return nil, errors.New("a signing-key secret is required")
	}
	for _, secret := range secrets {
		if len(secret) < 16 {
			return nil, errors.New("a signing-key secret must be at least 16 bytes")
		}
		sum := sha256.Sum256(append([]byte("gatehouse signing keys "), secret...))
		block, err := aes.NewCipher(sum[:])
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		k.aeads = append(k.aeads, aead)
	}
	return k, nil
}

// Rotate loads the keys and creates those the schedule calls for. Call it
// at start and every few minutes.
func (k *Keys) Rotate(ctx context.Context) error {
	if err := k.load(ctx); err != nil {
		return err
	}
	now := time.Now()
	k.mu.RLock()
	var current, next *loadedKey
	for _, key := range k.keys {
		if !key.activate.After(now) && now.Before(key.retire) {
			current = key
		} else if key.activate.After(now) {
			next = key
		}
	}
	k.mu.RUnlock()
	switch {
	case current == nil && next == nil:
		if err := k.add(ctx, now, func(ks []*SigningKey) bool { return !anyActiveOrNext(ks, now) }); err != nil {
			return err
		}
	case current != nil && next == nil && now.After(current.retire.Add(-prepublish)):
		if err := k.add(ctx, current.retire, func(ks []*SigningKey) bool { return !anyActivatingAfter(ks, now) }); err != nil {
			return err
		}
	default:
		return nil
	}
	return k.load(ctx)
}

func anyActiveOrNext(ks []*SigningKey, now time.Time) bool {
	for _, s := range ks {
		if now.Before(s.RetireAt) {
			return true
		}
	}
	return false
}

func anyActivatingAfter(ks []*SigningKey, now time.Time) bool {
	for _, s := range ks {
		if s.ActivateAt.After(now) {
			return true
		}
	}
	return false
}

// add creates a key that signs from activate.
func (k *Keys) add(ctx context.Context, activate time.Time, need func([]*SigningKey) bool) error {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	kid := hex.EncodeToString(id[:])
	pub, err := json.Marshal(jose.JSONWebKey{Key: &priv.PublicKey, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		return err
	}
	retire := activate.Add(activeFor)
	return k.store.AddSigningKey(ctx, &SigningKey{
		KID: kid, Alg: string(jose.ES256), PublicJWK: pub, PrivateEnc: k.seal(kid, der),
		ActivateAt: activate, RetireAt: retire, ExpireAt: retire.Add(maxTokenLife + 10*time.Minute),
	}, need)
}

// load reads and decrypts the published keys.
func (k *Keys) load(ctx context.Context) error {
	stored, err := k.store.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	now := time.Now()
	var keys []*loadedKey
	for _, s := range stored {
		if !now.Before(s.ExpireAt) {
			continue
		}
		der, primary, err := k.decrypt(s)
		if err != nil {
			return err
		}
		if !primary {
			// Made under an older secret: encrypt it with the current one,
			// so the old secret can be dropped.
			if err := k.store.ReencryptSigningKey(ctx, s.KID, k.seal(s.KID, der)); err != nil {
				return fmt.Errorf("signing key %s: re-encrypting with the new secret: %w", s.KID, err)
			}
		}
		priv, err := x509.ParseECPrivateKey(der)
		if err != nil {
			return fmt.Errorf("signing key %s: %w", s.KID, err)
		}
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(s.PublicJWK); err != nil {
			return fmt.Errorf("signing key %s: %w", s.KID, err)
		}
		keys = append(keys, &loadedKey{kid: s.KID, priv: priv, jwk: jwk, activate: s.ActivateAt, retire: s.RetireAt, expire: s.ExpireAt})
	}
	k.mu.Lock()
	k.keys, k.reloaded = keys, now
	k.mu.Unlock()
	return nil
}

// decrypt opens a key's private part with any of the secrets; primary
// reports whether it was the first (current) one.
func (k *Keys) decrypt(s *SigningKey) (der []byte, primary bool, err error) {
	for i, aead := range k.aeads {
		n := aead.NonceSize()
		if len(s.PrivateEnc) < n {
			return nil, false, fmt.Errorf("signing key %s: malformed", s.KID)
		}
		if der, err := aead.Open(nil, s.PrivateEnc[:n], s.PrivateEnc[n:], []byte(s.KID)); err == nil {
			return der, i == 0, nil
		}
	}
	return nil, false, fmt.Errorf("signing key %s cannot be decrypted: GATEHOUSE_SIGNING_KEY lacks the secret it was made with", s.KID)
}

// seal encrypts a private key with the current secret, bound to its kid.
func (k *Keys) seal(kid string, der []byte) []byte {
	aead := k.aeads[0]
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	return aead.Seal(nonce, nonce, der, []byte(kid))
}

// JWKS is the published key set.
func (k *Keys) JWKS() jose.JSONWebKeySet {
	k.mu.RLock()
	defer k.mu.RUnlock()
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, key := range k.keys {
		set.Keys = append(set.Keys, key.jwk)
	}
	return set
}

// sign signs claims with the key active now.
func (k *Keys) sign(claims any) (string, error) {
	now := time.Now()
	k.mu.RLock()
	var key *loadedKey
	for _, c := range k.keys {
		if !c.activate.After(now) && now.Before(c.retire) {
			key = c
		}
	}
	k.mu.RUnlock()
	if key == nil {
		return "", errors.New("no active signing key: Rotate has not run")
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key.priv},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", key.kid))
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// verify checks a token's signature against the published keys (reloading
// them, at most every 10 seconds, for a kid not seen yet: a key another
// replica just created) and returns its payload.
func (k *Keys) verify(ctx context.Context, token string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(jws.Signatures) != 1 {
		return nil, errMalformed
	}
	kid := jws.Signatures[0].Header.KeyID
	find := func() *loadedKey {
		k.mu.RLock()
		defer k.mu.RUnlock()
		for _, key := range k.keys {
			if key.kid == kid && time.Now().Before(key.expire) {
				return key
			}
		}
		return nil
	}
	key := find()
	if key == nil {
		k.mu.RLock()
		stale := time.Since(k.reloaded) > 10*time.Second
		k.mu.RUnlock()
		if stale {
			if err := k.load(ctx); err != nil {
				return nil, storeError{err}
			}
			key = find()
		}
	}
	if key == nil {
		return nil, errUnknownKey
	}
	return jws.Verify(&key.priv.PublicKey)
}

var (
	errUnknownKey = errors.New("signed with a key this server does not publish")
	errMalformed  = errors.New("malformed")
)
