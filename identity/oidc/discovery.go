package oidc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// Discovery is the part of an issuer's OpenID Provider Metadata Gatehouse
// uses: where keys are published, and where people sign in.
type Discovery struct {
	Issuer                string `json:"issuer"`
	JWKSURI               string `json:"jwks_uri"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
}

// Discover fetches issuer's discovery document and checks that it names the
// issuer itself and that its URLs are https (or http when insecure). Any
// failure wraps identity.ErrUnavailable: the issuer is misbehaving or out
// of reach, not the caller's token.
func Discover(ctx context.Context, client *http.Client, issuer string, insecure bool) (*Discovery, error) {
	if client == nil {
		client = identity.DefaultHTTPClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", nil)
	if err != nil {
		return nil, err
	}
	var doc Discovery
	if err := identity.DoJSON(client, req, &doc); err != nil {
		if !errors.Is(err, identity.ErrUnavailable) {
			err = fmt.Errorf("%w: discovery document %s: %w", identity.ErrUnavailable, req.URL, err)
		}
		return nil, err
	}
	if doc.Issuer != issuer {
		return nil, fmt.Errorf("%w: %s", identity.ErrUnavailable, IssuerMismatch(issuer, doc.Issuer))
	}
	for name, u := range map[string]string{"jwks_uri": doc.JWKSURI, "authorization_endpoint": doc.AuthorizationEndpoint, "token_endpoint": doc.TokenEndpoint} {
		if u == "" && name != "jwks_uri" {
			continue // only sign-in needs these; Endpoints checks them
		}
		if err := checkURL(u, insecure); err != nil {
			return nil, fmt.Errorf("%w: discovery %s: %w", identity.ErrUnavailable, name, err)
		}
	}
	return &doc, nil
}

// IssuerMismatch explains why a configured issuer is not the one its
// discovery document names (OpenID Connect Discovery 1.0 §4.3: they must be
// identical). A difference of a trailing slash alone is named as such: it
// is the usual mistake, and tokens carry the discovery document's form.
func IssuerMismatch(configured, discovered string) string {
	if strings.TrimSuffix(configured, "/") == strings.TrimSuffix(discovered, "/") {
		return fmt.Sprintf("the configured issuer %q and the issuer %q its discovery document names differ only by a trailing slash; "+
			"they must be identical (tokens carry the discovery document's): configure %q", configured, discovered, discovered)
	}
	return fmt.Sprintf("the discovery document at %s names issuer %q, not the configured %q; configure the issuer exactly as the provider names it",
		strings.TrimSuffix(configured, "/")+"/.well-known/openid-configuration", discovered, configured)
}

// Check fetches the issuer's discovery document (unless a JWKS URL is
// configured) and its JWKS now, so that a wrong or unreachable issuer is
// reported when the server starts instead of as refused tokens later. Its
// error says what failed (unreachable, an HTTP status, an issuer mismatch,
// no usable keys) and wraps identity.ErrUnavailable. A successful check
// leaves the discovery and keys cached for the first tokens.
func (v *Verifier) Check(ctx context.Context) error {
	if _, err := v.resolveJWKS(ctx); err != nil {
		return err
	}
	_, err := v.keys.refresh(ctx)
	return err
}

// Issuer is the configured issuer (the discovery base URL).
func (v *Verifier) Issuer() string { return v.cfg.Issuer }

// Endpoints returns the issuer's authorization and token endpoints, for
// signing people in (authserver upstreams), discovered on first success
// and kept.
func (v *Verifier) Endpoints(ctx context.Context) (authURL, tokenURL string, err error) {
	v.discoverOnce.Lock()
	defer v.discoverOnce.Unlock()
	if v.authURL != "" {
		return v.authURL, v.tokenURL, nil
	}
	d, err := Discover(ctx, v.cfg.HTTPClient, v.cfg.Issuer, v.cfg.AllowInsecure)
	if err != nil {
		return "", "", err
	}
	if d.AuthorizationEndpoint == "" || d.TokenEndpoint == "" {
		return "", "", fmt.Errorf("%w: issuer %s publishes no authorization_endpoint or token_endpoint", identity.ErrUnavailable, v.cfg.Issuer)
	}
	v.authURL, v.tokenURL = d.AuthorizationEndpoint, d.TokenEndpoint
	return v.authURL, v.tokenURL, nil
}
