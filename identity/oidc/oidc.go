// Package oidc verifies JWTs from OpenID Connect issuers (Keycloak, Okta,
// Entra, Dex, …) and is the protocol layer that the google and auth0
// providers build on.
//
// A [Verifier] trusts exactly one issuer: the token's iss must equal it (or
// one of its configured aliases), its aud must contain one of the configured
// audiences, it must carry exp (and nbf, if present, must have passed), and
// its signature must be one of the asymmetric algorithms allowed, by a key
// the issuer publishes in its JWKS. HS256 and "none" are never accepted, so
// a token "signed" with the issuer's public key as an HMAC secret fails.
// Discovery and JWKS are fetched lazily and cached (see keyset.go); when the
// issuer cannot be reached, Verify returns an error wrapping
// identity.ErrUnavailable, never an invalid-token error.
//
// oidc imports identity, go-oidc and go-jose only.
package oidc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// DefaultAlgorithms are the signature algorithms accepted unless configured:
// asymmetric only.
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Config describes one trusted issuer.
type Config struct {
	// Name is the provider name used in principals and subjects
	// ("keycloak" → subject "keycloak:<sub>").
	Name string
	// Issuer is the exact iss value (and discovery base URL).
	Issuer string
	// IssuerAliases are further iss values accepted for this issuer (Google
	// also issues "accounts.google.com" without the scheme).
	IssuerAliases []string
	// Audiences: a token's aud must contain one of them.
	Audiences []string
	// JWKSURL skips discovery when set.
	JWKSURL string
	// Algorithms accepted (default DefaultAlgorithms); symmetric ones are refused.
	Algorithms []string
	// EmailClaim names the claim holding the email (default "email"); its
	// verified flag is "email_verified", or EmailClaim+"_verified" for a
	// custom (namespaced) claim.
	EmailClaim string
	// AllowInsecure permits plain-http issuer and JWKS URLs (tests, local IdPs).
	AllowInsecure bool
	// MinRefresh is the shortest interval between JWKS fetches (default 10s).
	MinRefresh time.Duration
	// HTTPClient for discovery and JWKS (nil: identity.DefaultHTTPClient).
	HTTPClient *http.Client
}

// Verifier verifies tokens of one issuer.
type Verifier struct {
	cfg      Config
	issuers  []string
	keys     *keySet
	verifier *gooidc.IDTokenVerifier

	discoverOnce      sync.Mutex
	jwksURL           string
	authURL, tokenURL string // sign-in endpoints (Endpoints)
}

var _ identity.Verifier = (*Verifier)(nil)

// Open validates the configuration (reporting every problem) and returns a
// Verifier. It makes no network calls.
func (c Config) Open() (*Verifier, error) {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("a provider name is required"))
	}
	if err := checkURL(c.Issuer, c.AllowInsecure); err != nil {
		errs = append(errs, fmt.Errorf("issuer: %w", err))
	}
	if c.JWKSURL != "" {
		if err := checkURL(c.JWKSURL, c.AllowInsecure); err != nil {
			errs = append(errs, fmt.Errorf("JWKS URL: %w", err))
		}
	}
	if len(c.Audiences) == 0 || slices.Contains(c.Audiences, "") {
		errs = append(errs, errors.New("at least one audience is required (tokens for other applications must be refused)"))
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = DefaultAlgorithms
	}
	var algs []jose.SignatureAlgorithm
	for _, a := range c.Algorithms {
		if !slices.Contains(DefaultAlgorithms, a) {
			errs = append(errs, fmt.Errorf("signature algorithm %q is not accepted (asymmetric algorithms only)", a))
		}
		algs = append(algs, jose.SignatureAlgorithm(a))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("OIDC issuer %q: %w", c.Name, err)
	}
	if c.EmailClaim == "" {
		c.EmailClaim = "email"
	}
	if c.MinRefresh <= 0 {
		c.MinRefresh = 10 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = identity.DefaultHTTPClient
	}
	v := &Verifier{cfg: c, issuers: append([]string{c.Issuer}, c.IssuerAliases...), jwksURL: c.JWKSURL}
	v.keys = &keySet{url: v.resolveJWKS, client: c.HTTPClient, algs: algs, minRefresh: c.MinRefresh, maxAge: time.Hour}
	// go-oidc checks signature (through our key set), exp and nbf; issuer and
	// audience are checked below, against the aliases and the audience set.
	v.verifier = gooidc.NewVerifier(c.Issuer, v.keys, &gooidc.Config{
		SkipClientIDCheck:    true,
		SkipIssuerCheck:      true,
		SupportedSigningAlgs: c.Algorithms,
	})
	return v, nil
}

func checkURL(s string, insecure bool) error {
	u, err := url.Parse(s)
	switch {
	case s == "" || err != nil || u.Host == "":
		return fmt.Errorf("%q is not an absolute URL", s)
	case u.Scheme == "http" && !insecure:
		return fmt.Errorf("%q is plain http; use https (or set GATEHOUSE_ALLOW_INSECURE_ISSUERS=true for local testing)", s)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}

// Name is the provider name.
func (v *Verifier) Name() string { return v.cfg.Name }

// Issuers lists the iss values this verifier accepts, for routing.
func (v *Verifier) Issuers() []string { return v.issuers }

// JWKSFetches counts JWKS requests made so far.
func (v *Verifier) JWKSFetches() int64 { return v.keys.fetches.Load() }

// resolveJWKS returns the JWKS URL, from discovery on first use.
func (v *Verifier) resolveJWKS(ctx context.Context) (string, error) {
	v.discoverOnce.Lock()
	defer v.discoverOnce.Unlock()
	if v.jwksURL != "" {
		return v.jwksURL, nil
	}
	doc, err := Discover(ctx, v.cfg.HTTPClient, v.cfg.Issuer, v.cfg.AllowInsecure)
	if err != nil {
		return "", err
	}
	v.jwksURL = doc.JWKSURI
	return v.jwksURL, nil
}
