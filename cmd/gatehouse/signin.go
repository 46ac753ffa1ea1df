package main

import (
	"fmt"

	"golang.org/x/oauth2"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/auth0"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/identity/google"
	"github.com/gatehouse-mcp/gatehouse/identity/oidc"
)

// The providers people sign in with from MCP clients (see authserver).

// googleSignIn: Google's ID token is for our client id, which the ID-token
// verifier requires; its hd claim decides Workspace tenants.
func googleSignIn(p *google.Provider, clientID, secret string) *authserver.Upstream {
	return authserver.OIDCUpstream("google", "Google", clientID, secret, p.IDTokens().Endpoints, oauth2.AuthStyleInParams, p.IDTokens())
}

// auth0SignIn asks for our API's audience, so Auth0 issues a JWT access
// token for it: the token the Auth0 verifier checks (email from its claim
// or /userinfo).
func auth0SignIn(v *auth0.Verifier, clientID, secret, audience string) *authserver.Upstream {
	u := authserver.AccessTokenUpstream("auth0", "Auth0",
		oauth2.Config{ClientID: clientID, ClientSecret: secret, Scopes: []string{"openid", "email", "profile"}},
		v.Endpoints, oauth2.AuthStyleInParams, v)
	u.AuthParams = map[string]string{"audience": audience}
	return u
}

// gitHubSignIn: the user token proves itself to GitHub's "check a token"
// with our app's credentials, as a token sent directly would.
func gitHubSignIn(v identity.Verifier, clientID, secret, webURL string) *authserver.Upstream {
	return authserver.AccessTokenUpstream("github", "GitHub", gitHubOAuth(clientID, secret, webURL), nil, 0, v)
}

// gitHubOAuth is GitHub's OAuth web flow for an app.
func gitHubOAuth(clientID, secret, webURL string) oauth2.Config {
	return oauth2.Config{ClientID: clientID, ClientSecret: secret, Scopes: []string{"read:user", "user:email"},
		Endpoint: oauth2.Endpoint{AuthURL: webURL + "/login/oauth/authorize", TokenURL: webURL + "/login/oauth/access_token",
			AuthStyle: oauth2.AuthStyleInParams}}
}

// oidcSignIn: the issuer's ID tokens are for our client id, not for the
// audiences direct tokens are checked against, so they get a verifier of
// their own with the same name (same subjects).
func oidcSignIn(cfg oidc.Config, clientID, secret, label string) (*authserver.Upstream, error) {
	cfg.Audiences = []string{clientID}
	v, err := cfg.Open()
	if err != nil {
		return nil, fmt.Errorf("sign-in: %w", err)
	}
	return authserver.OIDCUpstream(cfg.Name, label, clientID, secret, v.Endpoints, oauth2.AuthStyleAutoDetect, v), nil
}
