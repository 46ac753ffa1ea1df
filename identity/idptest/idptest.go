// Package idptest runs in-process identity providers for tests, so that
// verifiers are tested through the real protocols rather than mocks:
//
//   - [Issuer], an OpenID Connect issuer: a real HTTP server publishing
//     discovery and a JWKS, signing tokens with RSA keys, counting requests,
//     and able to go down or rotate its key;
//   - [GitHub], GitHub's REST API (checking a token, the user, their emails);
//   - [Google], Google's tokeninfo and userinfo endpoints on an Issuer;
//   - [Auth0], Auth0's /userinfo on an Issuer;
//   - [Login], an Issuer's sign-in (authorization code + PKCE, auto-login),
//     and GitHub's OAuth web flow on [GitHub] (see [GitHub.EnableLogin]).
//
// The fakes answer in the providers' documented shapes, record a test error
// when Gatehouse does not send what the provider requires, count calls per
// [Endpoint], and can be made to fail or slow down.
package idptest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Issuer is an in-process OIDC issuer.
type Issuer struct {
	URL string // the issuer identifier (iss), the server URL plus Options.Suffix
	Mux *http.ServeMux
	srv *httptest.Server

	mu    sync.Mutex
	keys  []*rsa.PrivateKey // keys[0] signs; all are published
	kids  []string
	login *Login // sign-in, when enabled

	JWKSRequests      atomic.Int64
	DiscoveryRequests atomic.Int64
	down              atomic.Bool
}

// Options shape an Issuer.
type Options struct {
	// Suffix is appended to the server URL to form the issuer (Auth0's
	// issuers end in "/").
	Suffix string
}

// NewIssuer starts an issuer, stopped when the test ends.
func NewIssuer(tb testing.TB, opts *Options) *Issuer {
	tb.Helper()
	if opts == nil {
		opts = &Options{}
	}
	i := &Issuer{Mux: http.NewServeMux()}
	i.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i.down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		i.Mux.ServeHTTP(w, r)
	}))
	tb.Cleanup(i.srv.Close)
	i.URL = i.srv.URL + opts.Suffix
	i.Mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		i.DiscoveryRequests.Add(1)
		doc := map[string]any{
			"issuer": i.URL, "jwks_uri": i.srv.URL + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		}
		i.mu.Lock()
		if i.login != nil {
			doc["authorization_endpoint"], doc["token_endpoint"] = i.srv.URL+"/authorize", i.srv.URL+"/token"
			doc["code_challenge_methods_supported"] = []string{"S256"}
		}
		i.mu.Unlock()
		writeJSON(w, doc)
	})
	i.Mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		i.JWKSRequests.Add(1)
		i.mu.Lock()
		defer i.mu.Unlock()
		var set jose.JSONWebKeySet
		for n, k := range i.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: i.kids[n], Algorithm: "RS256", Use: "sig"})
		}
		writeJSON(w, set)
	})
	i.Rotate()
	return i
}

// ServerURL is the base URL of the issuer's HTTP server.
func (i *Issuer) ServerURL() string { return i.srv.URL }

// Client is an HTTP client for the server (plain http).
func (i *Issuer) Client() *http.Client { return i.srv.Client() }

// Close stops the issuer's server: it is then unreachable.
func (i *Issuer) Close() { i.srv.Close() }

// SetDown makes every endpoint answer 503 (or work again).
func (i *Issuer) SetDown(down bool) { i.down.Store(down) }

// Rotate adds a new signing key; older keys stay published.
func (i *Issuer) Rotate() {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.keys = append([]*rsa.PrivateKey{k}, i.keys...)
	i.kids = append([]string{fmt.Sprintf("key-%d", len(i.kids)+1)}, i.kids...)
}

// Claims returns standard claims for sub and aud, valid for an hour, plus extra.
func (i *Issuer) Claims(sub string, aud any, extra map[string]any) map[string]any {
	now := time.Now()
	c := map[string]any{"iss": i.URL, "sub": sub, "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// Sign signs claims with the current key (RS256, with its kid).
func (i *Issuer) Sign(claims map[string]any) string {
	i.mu.Lock()
	key, kid := i.keys[0], i.kids[0]
	i.mu.Unlock()
	return SignWith(jose.RS256, key, kid, claims)
}

// SignWith signs claims with any algorithm, key and kid ("" for none).
func SignWith(alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		panic(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		panic(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		panic(err)
	}
	return s
}

// Unsigned returns a token with alg "none" and an empty signature.
func Unsigned(claims map[string]any) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	p, _ := json.Marshal(claims)
	return h + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}

// PublicKeyPEM is the current public key in PEM, as an attacker would
// fetch it, for the HS256 key-confusion attack.
func (i *Issuer) PublicKeyPEM() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	der, _ := x509.MarshalPKIXPublicKey(&i.keys[0].PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// KeyID is the current signing key's kid.
func (i *Issuer) KeyID() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.kids[0]
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
