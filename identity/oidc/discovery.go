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
			err = fmt.Errorf("%w: discovery: %w", identity.ErrUnavailable, err)
		}
		return nil, err
	}
	if doc.Issuer != issuer {
		return nil, fmt.Errorf("%w: discovery document names issuer %q, not %q", identity.ErrUnavailable, doc.Issuer, issuer)
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
