package authserver

import (
	"context"

	"golang.org/x/oauth2"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// Building upstreams. Each learns who signed in with the verifier that
// checks the provider's tokens when they are presented directly, so a
// person is the same principal (and lands in the same tenant) whichever
// way they arrive.

// Endpoints returns a provider's authorization and token endpoints
// (discovery; see oidc.Verifier.Endpoints).
type Endpoints func(context.Context) (authURL, tokenURL string, err error)

// OIDCUpstream signs people in at an OpenID Connect provider and identifies
// them by the ID token of the token response, verified by idTokens (which
// must accept the audience clientID).
func OIDCUpstream(name, label, clientID, secret string, endpoints Endpoints, style oauth2.AuthStyle, idTokens identity.Verifier) *Upstream {
	return &Upstream{
		Name: name, Label: label,
		OAuth:    oauth2.Config{ClientID: clientID, ClientSecret: secret, Scopes: []string{"openid", "email", "profile"}},
		Endpoint: discovered(endpoints, style),
		Identify: func(ctx context.Context, tok *oauth2.Token) (*identity.Principal, error) {
			raw, _ := tok.Extra("id_token").(string)
			if raw == "" {
				return nil, identity.Invalid("%s answered without an ID token", label)
			}
			return idTokens.Verify(ctx, raw)
		},
		HTTPClient: identity.DefaultHTTPClient,
	}
}

// AccessTokenUpstream signs people in at an OAuth provider whose access
// token tells who they are, checked by accessTokens (GitHub's user tokens;
// Auth0's tokens for our API). endpoints may be nil when cfg.Endpoint is
// set.
func AccessTokenUpstream(name, label string, cfg oauth2.Config, endpoints Endpoints, style oauth2.AuthStyle, accessTokens identity.Verifier) *Upstream {
	u := &Upstream{
		Name: name, Label: label, OAuth: cfg,
		Identify: func(ctx context.Context, tok *oauth2.Token) (*identity.Principal, error) {
			return accessTokens.Verify(ctx, tok.AccessToken)
		},
		HTTPClient: identity.DefaultHTTPClient,
	}
	if endpoints != nil {
		u.Endpoint = discovered(endpoints, style)
	}
	return u
}

func discovered(endpoints Endpoints, style oauth2.AuthStyle) func(context.Context) (oauth2.Endpoint, error) {
	return func(ctx context.Context) (oauth2.Endpoint, error) {
		auth, token, err := endpoints(ctx)
		return oauth2.Endpoint{AuthURL: auth, TokenURL: token, AuthStyle: style}, err
	}
}
